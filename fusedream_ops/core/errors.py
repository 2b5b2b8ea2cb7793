"""The one exception type of the pack: every message names the input and what would be valid."""


class FuseDreamError(ValueError):
    """A bad input or checkpoint. The message starts with ``[FuseDream]`` so users can tell where it came from."""

    def __init__(self, message: str):
        super().__init__(message if message.startswith("[FuseDream]") else f"[FuseDream] {message}")


def require(condition: bool, message: str) -> None:
    """Raise :class:`FuseDreamError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise FuseDreamError(message)


def require_positive(name: str, value: int | float) -> None:
    require(value > 0, f"{name} must be at least 1, got {value}.")


def require_finite(name: str, value) -> None:
    """Stop an optimisation whose objective became NaN/inf instead of saving a broken image."""
    import math

    v = float(value)
    require(math.isfinite(v), f"{name} became {v} (non-finite); lower the learning rate or check the model weights.")
