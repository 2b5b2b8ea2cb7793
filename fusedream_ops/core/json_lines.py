"""Reading a JSON Lines file (one JSON value per line) line by line, each line's number kept for error messages."""
from __future__ import annotations

import json
from typing import Iterable, Iterator


def json_lines(lines: Iterable[str]) -> Iterator[tuple[int, object, json.JSONDecodeError | None]]:
    """``(line number, value, None)`` for every non-blank line that parses, ``(line number, None, the error)`` for one
    that does not; numbers count from 1 and include blank lines. The caller decides what a bad line means."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, exc
        else:
            yield number, value, None
