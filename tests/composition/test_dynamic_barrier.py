"""The dynamic-barrier bi-level step (eq. 6) and the Appendix B alternatives on problems with known gradients."""
import pytest
import torch

from fusedream_pack.fusedream_ops.composition.dynamic_barrier import combined_direction, set_combined_grad_
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError


def _flat(grads):
    return torch.cat([g.flatten() for g in grads])


def _random_pairs(count, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(count):
        s = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
        l = [4 * torch.randn(3, 4, generator=g), 4 * torch.randn(5, generator=g)]
        yield s, l


@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0])
def test_bilevel_direction_never_decreases_the_primary_to_first_order(beta):
    conflicting = 0
    for s, l in _random_pairs(200):
        v, lam = combined_direction(s, l, "bilevel", beta)
        gs, gv = _flat(s), _flat(v)
        # a step along -v changes s by -eps <v, grad s>, which must be at least eps * beta * |grad s|^2
        assert torch.dot(gv, gs) <= -beta * gs.square().sum() + 1e-4
        conflicting += int(lam > 0)
    assert 0 < conflicting < 200  # both branches of the max were exercised


def test_bilevel_direction_is_plain_descent_on_the_secondary_when_it_does_not_conflict():
    s = [torch.tensor([1.0, 0.0])]
    l = [torch.tensor([-3.0, 2.0])]  # <grad l, grad s> = -3 <= -beta |grad s|^2: moving against grad l raises s
    v, lam = combined_direction(s, l, "bilevel", beta=1.0)
    assert lam == 0
    assert torch.equal(v[0], l[0])
    assert torch.dot(v[0], l[0]) > 0  # a small step along -v lowers the secondary loss


def test_bilevel_direction_removes_the_conflicting_component_exactly_at_the_barrier():
    s = [torch.tensor([1.0, 0.0])]
    l = [torch.tensor([2.0, 5.0])]  # descending l alone would lower s
    v, lam = combined_direction(s, l, "bilevel", beta=1.0)
    assert lam == pytest.approx(3.0)  # (1 * 1 + 2) / 1
    assert torch.allclose(v[0], torch.tensor([-1.0, 5.0]))
    assert torch.dot(v[0], s[0]) == pytest.approx(-1.0)  # = -beta |grad s|^2


def test_linear_combination_is_the_gradient_of_eq_7():
    s = [torch.tensor([1.0, 2.0])]
    l = [torch.tensor([4.0, -1.0])]
    v, lam = combined_direction(s, l, "linear", weight=0.25)
    assert torch.allclose(v[0], 0.75 * l[0] - 0.25 * s[0])
    assert lam == pytest.approx(0.25)


@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_inverse_bilevel_never_increases_the_secondary_loss_to_first_order(beta):
    for s, l in _random_pairs(100, seed=1):
        v, _ = combined_direction(s, l, "inverse", beta)
        gl = _flat(l)
        assert torch.dot(_flat(v), gl) >= beta * gl.square().sum() - 1e-4


def test_zero_primary_gradient_gives_plain_descent_on_the_secondary():
    v, lam = combined_direction([torch.zeros(3)], [torch.tensor([1.0, 2.0, 3.0])], "bilevel")
    assert lam == 0 and torch.equal(v[0], torch.tensor([1.0, 2.0, 3.0]))


def _toy_run(method, steps=300, lr=0.02):
    """s = -(x0 - 1)^2 has a whole line of maxima x0 = 1;
    l = (x1 - 2)^2 + (x0 - 3)^2 prefers x0 = 3, conflicting with s. The bi-level solution is (1, 2)."""
    x = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        s = -(x[0] - 1) ** 2
        l = (x[1] - 2) ** 2 + (x[0] - 3) ** 2
        opt.zero_grad()
        set_combined_grad_([[x]], s, l, method, beta=1.0, weight=0.5)
        opt.step()
    return x.detach()


def test_bilevel_with_adam_reaches_the_secondary_minimum_inside_the_primary_optimum_set():
    x = _toy_run("bilevel")
    assert torch.allclose(x, torch.tensor([1.0, 2.0]), atol=0.05)


def test_linear_combination_trades_the_primary_away():
    x = _toy_run("linear")
    assert abs(x[0] - 2.0) < 0.05  # the average of the two minima in x0: s is no longer maximal


def test_groups_get_their_own_lambda():
    a = torch.nn.Parameter(torch.tensor([0.0]))
    b = torch.nn.Parameter(torch.tensor([0.0]))
    s = 1.0 * a.sum() + 1.0 * b.sum()  # grad s = 1 for both
    l = 2.0 * a.sum() - 5.0 * b.sum()  # conflicts for a only
    lambdas = set_combined_grad_([[a], [b]], s, l, "bilevel", beta=1.0)
    assert torch.allclose(lambdas, torch.tensor([3.0, 0.0]))
    assert a.grad.item() == pytest.approx(-1.0) and b.grad.item() == pytest.approx(-5.0)


def test_unknown_method_and_bad_weight_are_errors():
    with pytest.raises(FuseDreamError, match="bilevel, linear, inverse"):
        combined_direction([torch.ones(1)], [torch.ones(1)], "sum")
    with pytest.raises(FuseDreamError, match=r"\(0, 1\)"):
        combined_direction([torch.ones(1)], [torch.ones(1)], "linear", weight=1.0)
    with pytest.raises(FuseDreamError, match="beta must be positive"):
        combined_direction([torch.ones(1)], [torch.ones(1)], "bilevel", beta=0.0)
