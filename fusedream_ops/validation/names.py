"""Text inputs and names: bounded, free of control characters, and names that are plain file names.

A workflow may carry any string. Control characters (NUL, escape sequences, a carriage return that rewrites a log
line, a newline in a file name) are refused in every single-line input (names, folders, lists, colours); multi-line
text (prompts) may hold them, since tokenizers drop them and messages quote text with ``repr``. Every text input has a
length bound, and errors quote only a short prefix. All of it runs before the node does any work.
"""
from __future__ import annotations

import unicodedata

from ..core.errors import FuseDreamError, require

MAX_TEXT_CHARS = 65_536
"""Longest text input of any node (prompts have their own, tighter bound in :mod:`.prompts`)."""
MAX_NAME_CHARS = 128
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
FORBIDDEN_IN_NAMES = '/\\:*?"<>|'
"""Folder separators and the characters Windows refuses in file names: a saved file must open everywhere."""


def quoted(text: str, limit: int = 40) -> str:
    """``text`` for an error message: its repr, cut to a prefix of ``limit`` characters (the length said)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


def first_control_character(text: str) -> int | None:
    """The index of the first control character (Unicode category Cc: C0, DEL, C1), or None."""
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cc":
            return i
    return None


def require_text(value, name: str, multiline: bool = False, max_chars: int = MAX_TEXT_CHARS) -> str:
    """``value`` if it is text of at most ``max_chars`` characters, without control characters unless
    ``multiline``."""
    require(isinstance(value, str), f"{name} must be text, got {type(value).__name__}.")
    require(len(value) <= max_chars, f"{name} is {len(value):,} characters long; at most {max_chars:,} are accepted "
                                     f"(it starts {quoted(value)}).")
    bad = None if multiline else first_control_character(value)
    if bad is not None:
        raise FuseDreamError(f"{name} holds the control character {value[bad]!r} at position {bad} (in "
                             f"{quoted(value)}); a single-line input may hold none.")
    return value


def require_file_name(value, name: str) -> str:
    """``value`` stripped, if it is a plain file name (no folders, control characters, leading dot, characters
    Windows refuses, or reserved device names), at most ``MAX_NAME_CHARS`` long."""
    text = require_text(value, name, max_chars=MAX_NAME_CHARS).strip()
    require(text != "" and not text.startswith(".") and not text.endswith((".", " ")),
            f"{name} must be a plain file name (not empty, not starting with '.' or ending in '.' or a space), got "
            f"{quoted(text)}.")
    bad = [c for c in FORBIDDEN_IN_NAMES if c in text]
    require(not bad, f"{name} must be a plain file name without folders, got {quoted(text)} (it holds "
                     f"{' '.join(bad)}).")
    require(text.split(".")[0].upper() not in WINDOWS_RESERVED,
            f"{name} {quoted(text)} is a reserved device name on Windows; choose another name.")
    return text
