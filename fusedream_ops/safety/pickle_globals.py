"""The Python globals a pickle would import, read from its opcodes without running it.

Unpickling calls whatever globals the file names (``posix.system``, ``builtins.exec`` …), so a pickle is judged
before it is loaded: :func:`pickle_globals` walks the opcode stream with :mod:`pickletools` (nothing is imported or
called) and :class:`PickleGlobals` sorts the names into plain data containers, dangerous modules and the rest. The
loaders suggest converting a file only when every global is a known container.
"""
from __future__ import annotations

import io
import os
import pickletools
import zipfile
from dataclasses import dataclass

from ..core.errors import FuseDreamError

MAX_PICKLES = 5
"""A legacy torch file is five pickles in a row (magic number, protocol, sys info, data, storage keys), then raw
tensor bytes that torch never unpickles; parsing stops there instead of reading the tensors as opcodes."""

DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "importlib", "runpy", "pty",
    "socket", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop", "pdb", "webbrowser", "multiprocessing",
    "asyncio", "signal", "io", "_io", "pathlib", "tempfile", "urllib", "http", "ftplib", "smtplib", "telnetlib",
    "commands", "platform", "types", "operator", "functools", "inspect", "threading", "_thread", "glob", "zipimport",
    "imp", "site", "timeit", "sqlite3", "requests", "numpy.testing", "torch.hub", "torch.serialization",
})
"""Modules whose callables run commands, touch files or the network, or reach arbitrary other objects."""

HARMLESS_GLOBALS = frozenset({
    "collections.OrderedDict", "collections.defaultdict", "collections.Counter", "argparse.Namespace",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter", "torch.Size", "torch.device",
    "torch.storage.UntypedStorage", "torch.storage.TypedStorage",
    "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
})
"""Globals that only rebuild tensors, numbers and plain containers."""


def _harmless(name: str) -> bool:
    module, _, attr = name.rpartition(".")
    if name in HARMLESS_GLOBALS:
        return True
    if module == "torch" and (attr.endswith("Storage") or attr in _TORCH_DTYPES):
        return True
    return module == "numpy.dtypes" and attr.endswith("DType")


_TORCH_DTYPES = frozenset({
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool", "complex64",
    "complex128", "float8_e4m3fn", "float8_e5m2", "contiguous_format", "channels_last", "strided", "sparse_coo",
})


def _dangerous(name: str) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in DANGEROUS_MODULES for i in range(1, len(parts)))


@dataclass(frozen=True)
class PickleGlobals:
    """The globals of a pickle file sorted by how far they can be trusted."""

    names: tuple[str, ...]

    @property
    def dangerous(self) -> list[str]:
        return [n for n in self.names if _dangerous(n)]

    @property
    def unknown(self) -> list[str]:
        return [n for n in self.names if not _dangerous(n) and not _harmless(n)]

    @property
    def only_containers(self) -> bool:
        """Every global is a known tensor/number/container type: converting the file runs no foreign code."""
        return all(_harmless(n) for n in self.names)


class _Strings:
    """Just enough of the unpickler's stack and memo to name the module and attribute of STACK_GLOBAL."""

    def __init__(self):
        self.stack: list = []
        self.memo: dict = {}

    def push(self, value) -> None:
        self.stack = (self.stack + [value])[-2:]

    def pair(self) -> str:
        if len(self.stack) == 2 and all(isinstance(s, str) for s in self.stack):
            return ".".join(self.stack)
        return "<a global named by computed strings>"


def _globals_of_stream(stream) -> list[str]:
    """Globals of the pickles at the start of the binary ``stream`` (opcodes only; the stream is read lazily, so
    the raw tensor bytes after a legacy file's pickles are never loaded)."""
    found: list[str] = []
    count = 0
    while count < MAX_PICKLES:
        start = stream.tell()
        if not stream.read(1):
            break
        stream.seek(start)
        strings = _Strings()
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                    strings.push(None)
                elif op.name == "STACK_GLOBAL":
                    found.append(strings.pair())
                    strings.push(None)
                elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                                 "BINSTRING", "STRING"):
                    strings.push(arg)
                elif op.name == "MEMOIZE":
                    strings.memo[len(strings.memo)] = strings.stack[-1] if strings.stack else None
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    strings.memo[arg] = strings.stack[-1] if strings.stack else None
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    strings.push(strings.memo.get(arg))
                else:
                    strings.push(None)
        except Exception:  # past the last pickle: raw storage bytes of a legacy file, or a broken file
            if count == 0:
                raise
            break
        count += 1
    return found


def pickle_globals(path: str) -> PickleGlobals:
    """The globals ``path`` (a torch zip checkpoint or a plain/legacy pickle) would import, without loading it."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [n for n in archive.namelist() if n.endswith(".pkl")]
                if not members:
                    raise ValueError("a zip archive without a pickle inside")
                names = [g for m in members for g in _globals_of_stream(io.BytesIO(archive.read(m)))]
        else:
            with open(path, "rb") as f:
                names = _globals_of_stream(f)
            if not names and os.path.getsize(path) == 0:
                raise ValueError("the file is empty")
    except Exception as exc:  # pickletools and zipfile raise several types for a broken file
        raise FuseDreamError(f"'{path}' is not a readable pickle: {exc}") from None
    return PickleGlobals(tuple(dict.fromkeys(names)))


def describe(found: PickleGlobals) -> str:
    """One sentence naming what the pickle imports, dangerous modules first."""
    parts = []
    if found.dangerous:
        parts.append(f"DANGEROUS callables that can run commands or touch files: {', '.join(found.dangerous)}")
    if found.unknown:
        parts.append(f"objects the pack does not know as plain data: {', '.join(found.unknown)}")
    harmless = [n for n in found.names if _harmless(n)]
    if harmless:
        parts.append(f"plain containers: {', '.join(harmless)}")
    return "; ".join(parts) or "no globals"
