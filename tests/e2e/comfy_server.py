"""Drive a real ComfyUI (a checkout outside the repo) with the pack installed, over HTTP and its websocket.

Standard library only, so it runs from the pack's own test environment; the server itself runs with ComfyUI's
Python (``COMFYUI_PYTHON``), which must have the pack's requirements installed.

- :class:`ComfyServer` writes a throw-away base folder (``custom_nodes/`` holding a symlink to the pack and any
  extra test packs, ``extra_model_paths.yaml`` mapping every folder of a ``models/`` tree), starts
  ``main.py --cpu`` on a free loopback port and stops it.
- :func:`ui_to_api` converts a UI-format workflow (as ``example_workflows/*.json`` are saved) to the API format
  ``POST /prompt`` takes, using ``/object_info`` for the order of each node's widgets.
- :meth:`ComfyServer.run` queues a prompt and follows the websocket until the prompt ends.

As a script it starts a server for a look in a browser::

    python tests/e2e/comfy_server.py --comfyui /work/comfyui --python /work/comfyui-venv/bin/python
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

PACK_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK_LINK_NAME = "ComfyUI-FuseDream"
PROBE_PACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_pack")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MAX_STEPS = int(os.environ.get("FUSEDREAM_E2E_MAX_STEPS", "6"))
# Work-size inputs of the example workflows and the most each may be in an e2e run (a smoke test, not a result).
CAPS = {"steps": MAX_STEPS, "iterations": MAX_STEPS, "num_steps": MAX_STEPS, "candidates": 32, "copies": 4,
        "views": 4, "patches": 4, "draws": 4, "score_draws": 2}


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the test process dies, even if it is killed."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fixture_models(models_dir: str, python: str = sys.executable) -> list[str]:
    """The pack's tiny random checkpoints (``python -m fusedream_ops.fixtures``) in ``models_dir``."""
    out = subprocess.run([python, "-m", "fusedream_ops.fixtures", models_dir], cwd=PACK_DIR, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"fixture command failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return [line for line in out.stdout.splitlines() if line.strip()]


# ---------------------------------------------------------------- a minimal websocket client (RFC 6455, client side)
class WebSocket:
    """Just what following ComfyUI's ``/ws`` needs: the handshake, reading text/binary messages, closing."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def recv(self, timeout: float):
        """The next message as ``str`` (text) or ``bytes`` (binary); raises ``socket.timeout``."""
        self.sock.settimeout(timeout)
        parts, first_opcode = [], None
        while True:
            b0, b1 = self._exact(2)
            opcode, fin = b0 & 0x0F, b0 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the server")
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode != 0x0:
                first_opcode = opcode
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return data.decode() if first_opcode == 0x1 else data

    def close(self) -> None:
        try:
            self._send(0x8)
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------- UI workflow -> API prompt
def _widget_inputs(info: dict) -> list[tuple[str, int]]:
    """``(name, number of saved values)`` for each widget input of a node, in the order the UI saves them.

    A widget input takes a second saved value when the UI adds a control widget after it: INT/COMBO inputs
    with ``control_after_generate`` (or INTs named seed/noise_seed without that option), and upload buttons.
    """
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    inputs = {**info.get("input", {}).get("required", {}), **info.get("input", {}).get("optional", {})}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = inputs[name]
            kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
            is_widget = isinstance(kind, list) or kind in WIDGET_TYPES
            if not is_widget or opts.get("forceInput"):
                continue
            control = opts.get("control_after_generate")
            if control is None:
                control = kind == "INT" and name in ("seed", "noise_seed")
            extra = int(bool(control)) + int(bool(opts.get("image_upload") or opts.get("video_upload")))
            out.append((name, 1 + extra))
    return out


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a saved UI workflow to an API prompt: widget values by name, links as ``[node id, slot]``.

    Muted (mode 2) and bypassed (mode 4) nodes are left out; links through Reroute nodes are followed; a
    Primitive node's value is already saved in the widget it drives. Unknown node types raise KeyError.
    """
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (str(link["origin_id"]), link["origin_slot"])
        else:
            links[link[0]] = (str(link[1]), link[2])

    def source(link_id):
        origin, slot = links[link_id]
        while nodes[origin]["type"] == "Reroute":
            origin, slot = links[nodes[origin]["inputs"][0]["link"]]
        return origin, slot

    prompt = {}
    for nid, node in nodes.items():
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) in (2, 4):
            continue
        info = object_info[node["type"]]
        values = node.get("widgets_values") or []
        api_inputs = {}
        if isinstance(values, dict):
            api_inputs.update(values)
        else:
            pos = 0
            for name, count in _widget_inputs(info):
                if pos < len(values):
                    api_inputs[name] = values[pos]
                pos += count
        for inp in node.get("inputs", []):
            if inp.get("link") is None:
                continue
            origin, slot = source(inp["link"])
            if nodes[origin]["type"] == "PrimitiveNode":
                continue
            api_inputs[inp["name"]] = [origin, slot]
        prompt[nid] = {"class_type": node["type"], "inputs": api_inputs,
                       "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}
    return prompt


# ---------------------------------------------------------------- the server
@dataclass
class RunResult:
    prompt_id: str
    messages: list = field(default_factory=list)  # every text message as a dict, in order
    binary_frames: int = 0
    history: dict = field(default_factory=dict)
    seconds: float = 0.0

    def of_type(self, kind: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == kind]

    @property
    def status(self) -> str:
        return self.history.get("status", {}).get("status_str", "")

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})


TOYWORLD_FIXTURES = os.path.join(PACK_DIR, "tests", "fixtures", "toyworld")


def toyworld_model_roots() -> str:
    """The two ``extra_model_paths.yaml`` sections the docs give users for the toy-world templates
    (docs/toyworld.md, docs/toyworld_composition.md)."""
    return (f"toyworld:\n    base_path: {TOYWORLD_FIXTURES}\n    kandinsky22: kandinsky22\n"
            f"    ovi_reference: ovi_reference\n"
            f"toyworld_composition:\n    base_path: {os.path.join(TOYWORLD_FIXTURES, 'composition')}\n"
            f"    biggan: biggan\n    open_clip: open_clip\n    lpips: lpips\n")


class ComfyServer:
    def __init__(self, comfyui: str, python: str, base: Optional[str] = None, models_dir: Optional[str] = None,
                 extra_packs: tuple[str, ...] = (), port: Optional[int] = None, extra_config: str = ""):
        self.comfyui = os.path.abspath(comfyui)
        self.python = python
        self.base = base or tempfile.mkdtemp(prefix="fusedream-e2e-")
        self.models_dir = models_dir or os.path.join(self.base, "models")
        self.extra_packs = extra_packs
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = uuid.uuid4().hex
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = os.path.join(self.base, "server.log")
        self.extra_config = extra_config

    # -- setup
    def write_config(self) -> str:
        custom = os.path.join(self.base, "custom_nodes")
        os.makedirs(custom, exist_ok=True)
        for target, name in [(PACK_DIR, PACK_LINK_NAME)] + [(p, os.path.basename(p)) for p in self.extra_packs]:
            link = os.path.join(custom, name)
            if not os.path.islink(link):
                os.symlink(target, link)
        for sub in ("output", "input", "temp", "user"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        lines = ["fusedream_e2e:", f"    base_path: {self.base}", "    custom_nodes: custom_nodes"]
        if os.path.isdir(self.models_dir):
            for name in sorted(os.listdir(self.models_dir)):
                if os.path.isdir(os.path.join(self.models_dir, name)):
                    lines.append(f"    {name}: {os.path.relpath(os.path.join(self.models_dir, name), self.base)}")
        path = os.path.join(self.base, "extra_model_paths.yaml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n" + self.extra_config)
        return path

    def command(self) -> list[str]:
        b = self.base
        return [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--extra-model-paths-config", os.path.join(b, "extra_model_paths.yaml"),
                "--output-directory", os.path.join(b, "output"), "--input-directory", os.path.join(b, "input"),
                "--temp-directory", os.path.join(b, "temp"), "--user-directory", os.path.join(b, "user"),
                "--database-url", "sqlite:///:memory:", "--disable-api-nodes"]

    def start(self, timeout: float = 1800.0) -> "ComfyServer":
        self.write_config()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command(), cwd=self.comfyui, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "log", None):
            self.log.close()

    def log_text(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- HTTP
    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, data: Optional[dict] = None, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(data or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')[:4000]}") from None
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def object_info(self) -> dict:
        return self.get("/object_info")

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=30) as r:
            return r.read()

    # -- running prompts
    def run(self, prompt: dict, timeout: float = 1800.0,
            on_message: Optional[Callable[["ComfyServer", dict], None]] = None) -> RunResult:
        """Queue ``prompt`` and follow the websocket until it succeeds, fails or is interrupted."""
        ws = WebSocket("127.0.0.1", self.port, f"/ws?clientId={self.client_id}")
        start = time.monotonic()
        try:
            queued = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
            result = RunResult(queued["prompt_id"])
            deadline = start + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"prompt {result.prompt_id} still running after {timeout:.0f} s")
                msg = ws.recv(timeout=left)
                if isinstance(msg, bytes):
                    result.binary_frames += 1
                    continue
                msg = json.loads(msg)
                data = msg.get("data") or {}
                if data.get("prompt_id") not in (None, result.prompt_id):
                    continue
                result.messages.append(msg)
                if on_message is not None:
                    on_message(self, msg)
                kind = msg.get("type")
                if kind in ("execution_success", "execution_error", "execution_interrupted"):
                    break
                if kind == "executing" and data.get("node") is None and data.get("prompt_id") == result.prompt_id:
                    break
        finally:
            ws.close()
        result.seconds = time.monotonic() - start
        for _ in range(50):  # the history entry is written right after the last message
            hist = self.get(f"/history/{result.prompt_id}")
            if result.prompt_id in hist:
                result.history = hist[result.prompt_id]
                break
            time.sleep(0.1)
        return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Start ComfyUI with the pack (and the probe pack) and fixture models.")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), required="COMFYUI_PATH" not in os.environ)
    parser.add_argument("--python", default=os.environ.get("COMFYUI_PYTHON", sys.executable))
    parser.add_argument("--base", help="folder for models/, custom_nodes/, output/ (default: a new temp folder)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--no-probe", action="store_true", help="do not load the test-only probe pack")
    args = parser.parse_args(argv)
    server = ComfyServer(args.comfyui, args.python, base=args.base, port=args.port,
                         extra_packs=() if args.no_probe else (PROBE_PACK_DIR,))
    if not os.path.isdir(server.models_dir):
        print("writing fixture models ...", flush=True)
        write_fixture_models(server.models_dir)
    server.start()
    print(f"ComfyUI at {server.url} (base {server.base}, log {server.log_path}); Ctrl-C stops it", flush=True)
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if args.base is None:
            shutil.rmtree(server.base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
