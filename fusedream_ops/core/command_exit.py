"""How the pack's commands end when stopped early: the reason on stderr, never a traceback, and a conventional exit
code."""
from __future__ import annotations

import sys

from .errors import FuseDreamError


def exit_code(stopped_by: FuseDreamError | KeyboardInterrupt, interrupted: str = "") -> int:
    """Print why the command stopped and return its exit code: 2 for a bad input (the error's message), 130 for
    Ctrl-C (128 + SIGINT; the command's ``interrupted`` note says what became of its work)."""
    if isinstance(stopped_by, KeyboardInterrupt):
        print(interrupted, file=sys.stderr)
        return 130
    print(stopped_by, file=sys.stderr)
    return 2
