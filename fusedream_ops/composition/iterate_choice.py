"""Which iterate of a bi-level run (FuseDream eq. 5) is returned, from its per-step s_Fuse draws and ℓ_Fuse values.

Eq. 5 asks for the lowest ℓ_Fuse among the maximisers of s_Fuse, but each step measures s_Fuse with one noisy draw
of augmented views, so no iterate is known to be a maximiser. The rules (``keep``):

- ``augclip``: the iterate with the highest s_Fuse draw (earliest on ties); ignores ℓ_Fuse. The single-image
  optimizer's rule.
- ``last``: the iterate of the final step (the official single-image code returns the one after one more Adam
  update, never scored: one step of lr 5e-3 away).
- ``eq5``: among the iterates whose s_Fuse draw is within ``tolerance`` (an absolute AugCLIP margin) of the run's
  highest draw, the one with the lowest ℓ_Fuse (earliest on ties). ``tolerance`` = 0 is ``augclip``.

:class:`KeptIterates` applies a rule online and stores only the iterates the rule may still return, so a run never
holds every step's latent.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..core.errors import require

KEEP_MODES = ("augclip", "last", "eq5")
DEFAULT_KEEP = "last"
"""The rule the optimizer and the nodes use unless told otherwise."""
DEFAULT_KEEP_TOLERANCE = 0.005
"""The ``eq5`` margin in AugCLIP units: 2× the standard deviation of one AugCLIP draw of 50 views at a fixed image,
measured 0.0024 on the tiny fixture models (the toy world's trained CLIP: 0.023; the margin should scale with the
model's noise and 1/√copies; ``benchmarks/augclip_draw_noise.py``, docs/composition.md "Which iterate")."""


def require_keep(keep: str, tolerance: float) -> None:
    require(keep in KEEP_MODES, f"keep must be one of {', '.join(KEEP_MODES)}, got '{keep}'.")
    require(tolerance >= 0, f"keep_tolerance must be at least 0 (an AugCLIP margin), got {tolerance}.")


@dataclass(frozen=True)
class Iterate:
    step: int
    score: float
    """s_Fuse: the step's AugCLIP draw."""
    loss: float
    """ℓ_Fuse: the step's LPIPS."""
    latent: Any = None


class KeptIterates:
    """The iterates a run may still return under ``keep`` as more steps arrive; :meth:`choice` is the rule's pick
    over the steps offered so far."""

    def __init__(self, keep: str = DEFAULT_KEEP, tolerance: float = DEFAULT_KEEP_TOLERANCE):
        require_keep(keep, tolerance)
        self.keep = keep
        self.tolerance = float(tolerance)
        self.top = -float("inf")
        self.items: list[Iterate] = []

    def offer(self, step: int, score: float, loss: float, latent: Callable[[], Any] = lambda: None) -> None:
        """Add step ``step``; ``latent()`` is called only if the iterate is kept (it may copy tensors)."""
        self.top = max(self.top, score)
        if self.keep == "augclip" and self.items and score <= self.items[0].score:
            return
        if self.keep in ("augclip", "last"):
            self.items = [Iterate(step, score, loss, latent())]
            return
        floor = self.top - self.tolerance
        if score < floor or any(_beats(kept, Iterate(step, score, loss)) for kept in self.items):
            self.items = [i for i in self.items if i.score >= floor]
            return
        new = Iterate(step, score, loss, latent())
        self.items = [i for i in self.items if i.score >= floor and not _beats(new, i)] + [new]

    def choice(self) -> Iterate:
        require(bool(self.items), "no iterate was offered.")
        if self.keep != "eq5":
            return self.items[0]
        return min(self.items, key=lambda i: (i.loss, i.step))


def _beats(a: Iterate, b: Iterate) -> bool:
    """``a`` is in the eq5 candidate set whenever ``b`` is (s_a ≥ s_b) and ranks before it (lower ℓ, then earlier)."""
    return a.score >= b.score and (a.loss, a.step) < (b.loss, b.step)


def kept_step(scores: Sequence[float], losses: Sequence[float], keep: str = DEFAULT_KEEP,
              tolerance: float = DEFAULT_KEEP_TOLERANCE) -> int:
    """The 1-based step ``keep`` returns for a run with these per-step s_Fuse draws and ℓ_Fuse values (e.g. a
    column of a composition result's ``history``)."""
    require(len(scores) == len(losses), "scores and losses must have one value per step.")
    kept = KeptIterates(keep, tolerance)
    for step, (score, loss) in enumerate(zip(scores, losses), start=1):
        kept.offer(step, float(score), float(loss))
    return kept.choice().step
