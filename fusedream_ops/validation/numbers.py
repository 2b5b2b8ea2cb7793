"""Finite, in-range numbers: every numeric setting is checked here before any work starts.

NaN passes every ``<``/``>`` comparison as False, so a plain ``if lr > 0`` lets it through and a plain
``if latent_noise > 0`` silently turns it "off"; :func:`require_number` refuses it by name instead.
"""
from __future__ import annotations

import math
import numbers

from ..core.errors import FuseDreamError


def _fmt(value) -> str:
    if isinstance(value, numbers.Integral) and abs(value) >= 10 ** 15:
        return f"an integer of {len(str(abs(int(value))))} digits"
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_range(low=None, high=None, integer: bool = False, low_open: bool = False) -> str:
    """``'an integer from 1 to 512'``, ``'a finite number above 0'``, … for error messages and docs."""
    kind = "an integer" if integer else "a finite number"
    if low is not None and high is not None and not low_open:
        return f"{kind} from {_fmt(low)} to {_fmt(high)}"
    parts = []
    if low is not None:
        parts.append(f"above {_fmt(low)}" if low_open else f"at least {_fmt(low)}")
    if high is not None:
        parts.append(f"at most {_fmt(high)}")
    return " ".join([kind] + [" and ".join(parts)] if parts else [kind])


def require_number(name: str, value, low=None, high=None, integer: bool = False, low_open: bool = False):
    """``value`` if it is a finite number (an integer when ``integer``) within ``[low, high]`` (``(low, high]`` with
    ``low_open``); otherwise a :class:`FuseDreamError` naming ``name``, the valid range and the value."""
    valid = describe_range(low, high, integer, low_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FuseDreamError(f"{name} must be {valid}, got {type(value).__name__} {value!r}.")
    if integer and not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise FuseDreamError(f"{name} must be {valid}, got {value!r}.")
        value = int(value)
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise FuseDreamError(f"{name} must be {valid}, got {value!r}.")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and value > high
    if below or above:
        raise FuseDreamError(f"{name} must be {valid}, got {_fmt(value)}.")
    return value
