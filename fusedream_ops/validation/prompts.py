"""The prompt syntax, the same in every node and on the command line, and the CLIP token limit.

One prompt per line. A line may end in ``:weight``, a finite number from -100 to 100 (``blurry:-0.5``; a negative
weight makes a negative prompt; no weight = 1). Only a number after the line's *last* colon is a weight; a colon
followed by words is part of the text (``poster: a blue dog``). Refused with an error instead of guessed:

- a weight that is not a finite number in range: ``dog:nan``, ``dog:inf``, ``dog:1e400``, ``dog:1,5``, ``dog:500``;
- a weight right after a digit, as in ``time 10:30`` or ``a:1:2``: text or weight? Put a space before the weight's
  colon (``time 10 :30`` weights "time 10" by 30; ``time 10:30 :1`` keeps "time 10:30" as the text);
- a weight without text (``:2``), no prompt at all, or only zero weights.

CLIP reads at most 77 tokens per prompt (start and end included); longer lines are cut by the tokenizer, which
:func:`truncation_warnings` reports (the run goes on with the cut prompt).

Every prompt is bounded before it reaches a tokenizer (:func:`require_prompt`): CLIP's byte-pair encoding takes time
growing with the square of a word's length (a 64 KB one-word prompt took 52 s), and 77 tokens are a few hundred
characters, so a prompt is at most ``MAX_PROMPT_CHARS`` characters and a prompt field at most ``MAX_PROMPT_LINES``
lines. Every encoder of the pack (open_clip scorers, the Kandinsky text tower) calls it, so no path skips it; errors
quote only a short prefix.
"""
from __future__ import annotations

import math
import re

from ..core.errors import FuseDreamError, require
from .names import quoted, require_text

MAX_PROMPT_CHARS = 2_000
"""One prompt (one line): 77 CLIP tokens are rarely more than 400 characters."""
MAX_PROMPT_LINES = 256
MAX_PROMPT_FIELD_CHARS = 16_384
"""A whole prompt field, checked before it is split into lines."""

WEIGHT_LIMIT = 100.0
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_NUMBER_LIKE = re.compile(r"[-+]?(?:[\d.][\d.,eE+-]*|nan|inf|infinity)", re.IGNORECASE)
"""A tail made of number characters only (or nan/inf): meant as a weight, so a bad one is an error, not text."""

SYNTAX = ("One prompt per line, optionally ending in ':weight' (a number from -100 to 100; negative = avoid, e.g. "
          "'blurry:-0.5'). A colon followed by words is text. Write 'time 10 :30' or 'time 10:30 :1' when the text "
          "ends in a number.")
"""The rule in one sentence, for tooltips."""


def require_prompt(text, name: str = "prompt") -> str:
    """``text`` if it is one prompt a tokenizer may read: text of at most ``MAX_PROMPT_CHARS`` characters."""
    return require_text(text, name, multiline=True, max_chars=MAX_PROMPT_CHARS)


def _split(line: str) -> tuple[str, float]:
    colon = line.rfind(":")
    if colon < 0:
        return line, 1.0
    head, tail = line[:colon], line[colon + 1:].strip()
    if not _NUMBER.fullmatch(tail):
        if _NUMBER_LIKE.fullmatch(tail):
            raise FuseDreamError(f"prompt line {quoted(line)}: the weight {quoted(tail)} is not a finite number; "
                                 f"write a number from {-WEIGHT_LIMIT:g} to {WEIGHT_LIMIT:g} like 'dog:1.5' (decimal "
                                 f"point, not comma).")
        return line, 1.0
    weight = float(tail)
    if not (math.isfinite(weight) and abs(weight) <= WEIGHT_LIMIT):
        raise FuseDreamError(f"prompt line {quoted(line)}: the weight {tail} is out of range; a weight is a number "
                             f"from {-WEIGHT_LIMIT:g} to {WEIGHT_LIMIT:g}.")
    if head[-1:].isdigit():
        text = head.rstrip()
        raise FuseDreamError(f"prompt line {quoted(line)} is ambiguous: ':{tail}' follows a digit, so it may be text "
                             f"(like '10:30') or a weight. Put a space before the weight's colon: "
                             f"{quoted(f'{text} :{tail}')} weights {quoted(text)} by {tail}, {quoted(f'{line} :1')} "
                             f"keeps {quoted(line)} as the text.")
    text = head.strip()
    require(bool(text), f"prompt line {quoted(line)} has a weight but no text.")
    return text, weight


def parse_prompts(text: str) -> list[tuple[str, float]]:
    """``[(prompt, weight), ...]`` from one prompt per line with optional ``:weight`` (see the module docstring)."""
    require_text(text, "prompt", multiline=True, max_chars=MAX_PROMPT_FIELD_CHARS)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    require(len(lines) <= MAX_PROMPT_LINES, f"prompt has {len(lines)} lines; at most {MAX_PROMPT_LINES} prompts (one "
                                            f"per line) are accepted.")
    prompts = [_split(require_prompt(line, f"prompt line {i}")) for i, line in enumerate(lines, start=1)]
    require(bool(prompts), "prompt is empty: type at least one line of text, e.g. 'a photo of a blue dog'.")
    require(any(w != 0 for _, w in prompts), "prompt weights are all 0: give at least one prompt a non-zero weight.")
    return prompts


def token_count(tokenizer, text: str) -> tuple[int, int] | None:
    """``(tokens with start and end, limit)`` for an open_clip or Hugging Face CLIP tokenizer; None if unknown."""
    limit = getattr(tokenizer, "context_length", None)
    if isinstance(limit, int) and hasattr(tokenizer, "encode"):  # open_clip SimpleTokenizer: encode() adds none
        return len(tokenizer.encode(text)) + 2, limit
    inner = getattr(tokenizer, "tokenizer", tokenizer)  # open_clip's HFTokenizer wraps a transformers one
    limit = getattr(tokenizer, "context_length", None) or getattr(inner, "model_max_length", None)
    if isinstance(limit, int) and callable(inner) and limit < 100_000:
        try:
            return len(inner(text, truncation=False)["input_ids"]), limit
        except (TypeError, KeyError):
            return None
    return None


def truncation_warnings(texts: list[str], tokenizer) -> list[str]:
    """One message per prompt longer than the tokenizer's limit (CLIP then reads only its beginning)."""
    messages = []
    for i, text in enumerate(texts, start=1):
        counted = token_count(tokenizer, require_prompt(text, f"prompt {i}"))
        if counted is not None and counted[0] > counted[1]:
            n, limit = counted
            short = text if len(text) <= 60 else text[:57] + "..."
            messages.append(f"[FuseDream] prompt {i} ('{short}') is {n} tokens long; CLIP reads only the first "
                            f"{limit} (start and end tokens included), the last {n - limit} are ignored. Shorten it "
                            f"or split it into several lines (each line is a prompt).")
    return messages
