"""Combining a primary objective and a secondary loss into one gradient for a torch optimizer (FuseDream eq. 5–8).

Convention: the primary objective ``s`` is MAXIMISED (e.g. AugCLIP), the secondary loss ``ℓ`` is MINIMISED (e.g.
LPIPS), and the returned direction ``v`` is a gradient to DESCEND: set as ``p.grad`` it makes ``optimizer.step()``
(Adam in FuseDream) move along −v.

- ``bilevel`` (eq. 5–6, the dynamic barrier of Gong, Liu & Liu 2021): min ℓ s.t. ξ ∈ argmax s,
  ``v = ∇ℓ − λ∇s``, ``λ = max((β‖∇s‖² + ⟨∇ℓ, ∇s⟩) / ‖∇s‖², 0)``. Then ``⟨v, ∇s⟩ ≤ −β‖∇s‖²``: a step along −v never
  decreases s to first order, and when ∇ℓ does not conflict with ∇s (λ = 0) it is plain descent on ℓ.
- ``linear`` (eq. 7): min (1 − λ)ℓ − λs for a fixed λ ∈ (0, 1): ``v = (1 − λ)∇ℓ − λ∇s``.
- ``inverse`` (eq. 8): max s s.t. ξ ∈ argmin ℓ, the same barrier with the roles swapped:
  ``v = −∇s + λ∇ℓ``, ``λ = max((β‖∇ℓ‖² + ⟨∇s, ∇ℓ⟩) / ‖∇ℓ‖², 0)``, so ``⟨v, ∇ℓ⟩ ≥ β‖∇ℓ‖²``.

Inner products and norms run over all parameters of a group; independent problems optimised in one batch (one group
each) get their own λ.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..core.errors import require

METHODS = ("bilevel", "linear", "inverse")

Grads = Sequence[torch.Tensor]


def _dot(a: Grads, b: Grads) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def barrier_direction(primary_loss_grads: Grads, secondary_loss_grads: Grads, beta: float = 1.0):
    """Dynamic barrier descent direction in the minimise-both form: min g s.t. ξ ∈ argmin f.

    ``v = ∇g + λ∇f``, ``λ = max((β‖∇f‖² − ⟨∇g, ∇f⟩) / ‖∇f‖², 0)`` (λ = 0 where ∇f = 0), so ``⟨v, ∇f⟩ ≥ β‖∇f‖²``.
    Returns ``(v, λ)``.
    """
    f, g = list(primary_loss_grads), list(secondary_loss_grads)
    norm2 = _dot(f, f)
    lam = torch.where(norm2 > 0, (beta * norm2 - _dot(g, f)) / norm2.clamp_min(torch.finfo(norm2.dtype).tiny),
                      torch.zeros_like(norm2)).clamp_min(0.0)
    return [gi + lam * fi for gi, fi in zip(g, f)], lam


def combined_direction(objective_grads: Grads, loss_grads: Grads, method: str = "bilevel", beta: float = 1.0,
                       weight: float = 0.5):
    """The descent direction ``v`` for ``method`` (see the module docstring) and the λ it used.

    ``objective_grads`` = ∇s of the objective to maximise, ``loss_grads`` = ∇ℓ of the loss to minimise;
    ``weight`` is the fixed λ of ``linear``, ``beta`` the barrier strength of ``bilevel``/``inverse``.
    """
    require(method in METHODS, f"method must be one of {', '.join(METHODS)}, got '{method}'.")
    require(beta > 0, f"beta must be positive, got {beta}.")
    s, l = list(objective_grads), list(loss_grads)
    require(len(s) == len(l), "objective and loss gradients must cover the same parameters.")
    if method == "bilevel":
        return barrier_direction([-g for g in s], l, beta)
    if method == "inverse":
        return barrier_direction(l, [-g for g in s], beta)
    require(0.0 < weight < 1.0, f"weight (λ of the linear combination) must be in (0, 1), got {weight}.")
    lam = torch.tensor(float(weight), device=s[0].device if s else None)
    return [(1 - weight) * li - weight * si for si, li in zip(s, l)], lam


def set_combined_grad_(groups: Sequence[Sequence[torch.Tensor]], objective: torch.Tensor, loss: torch.Tensor,
                       method: str = "bilevel", beta: float = 1.0, weight: float = 0.5) -> torch.Tensor:
    """Set ``p.grad = v`` for every parameter, ``v`` from :func:`combined_direction` per group; returns λ per group.

    ``objective`` and ``loss`` are scalars (sums over groups are fine: a group's parameters must only influence
    its own terms). Parameters that do not reach a term get a zero gradient for it.
    """
    params = [p for group in groups for p in group]
    require(bool(params), "there are no parameters to optimise.")
    s = torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True, materialize_grads=True)
    l = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    lambdas, start = [], 0
    for group in groups:
        end = start + len(group)
        v, lam = combined_direction(s[start:end], l[start:end], method, beta, weight)
        for p, vi in zip(group, v):
            p.grad = vi.detach()
        lambdas.append(lam.detach())
        start = end
    return torch.stack(lambdas)
