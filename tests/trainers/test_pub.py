"""trainers.multitask.pub: the bargaining solve (condition to 1e-6, equal weights for identical
tasks, warm start, the fallbacks), the update as the weighted sum of the per-task Adam steps with
weight decay once, and the toy of the PUB paper (five starting points reach the optimum)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.multitask.pub import KEPT, NEWTON, PUB, RIDGE, bargaining_weights


def residual(G, a):
    return float(np.abs(np.asarray(G) @ a - 1 / a).max())


# --------------------------------------------------------------------------- the solve


def test_two_task_toy_satisfies_the_bargaining_condition():
    G = np.array([[4.0, 1.0], [1.0, 1.0]])
    a, info = bargaining_weights(G)
    assert info.method == NEWTON
    assert (a > 0).all()
    assert residual(G, a) < 1e-6
    # by hand: 4a² + ab = 1 and ab + b² = 1  =>  the task with the larger update gets the smaller weight
    assert a[0] * (4 * a[0] + a[1]) == pytest.approx(1, abs=1e-9)
    assert a[1] * (a[0] + a[1]) == pytest.approx(1, abs=1e-9)
    assert a[0] < a[1]


def test_orthogonal_updates_get_inverse_norm_weights():
    G = np.diag([4.0, 1.0, 0.25])  # ‖u_k‖ = 2, 1, 0.5: α_k = 1/‖u_k‖
    a, _ = bargaining_weights(G)
    np.testing.assert_allclose(a, [0.5, 1.0, 2.0], atol=1e-9)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_identical_tasks_get_equal_weights(k):
    u = np.array([0.3, -1.2, 0.5])
    U = np.tile(u, (k, 1))
    G = U @ U.T
    G = G / np.linalg.norm(G)  # as PUB normalises: then α_i = 1 exactly
    a, info = bargaining_weights(G)
    assert info.method == NEWTON
    np.testing.assert_allclose(a, np.ones(k), atol=1e-9)


def test_warm_start_from_the_solution_takes_no_iteration():
    G = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]])
    a, info = bargaining_weights(G)
    b, again = bargaining_weights(G, a)
    assert again.iterations == 0 and info.iterations > 0
    np.testing.assert_allclose(a, b)


def test_cancelling_updates_fall_back_to_the_ridge_solve():
    G = np.array([[1.0, -1.0], [-1.0, 1.0]])  # u_2 = -u_1: no solution exists (α diverges)
    a, info = bargaining_weights(G)
    assert info.method == RIDGE
    assert np.isfinite(a).all() and (a > 0).all()
    assert a[0] == pytest.approx(a[1])  # symmetric
    ridge = G + 1e-3 * np.trace(G) / 2 * np.eye(2)
    assert residual(ridge, a) < 1e-6


def test_a_zero_update_falls_back_and_a_nan_matrix_keeps_the_previous_weights():
    a, info = bargaining_weights(np.array([[1.0, 0.0], [0.0, 0.0]]))  # task 2's step is zero
    assert info.method == RIDGE and np.isfinite(a).all()
    a, info = bargaining_weights(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0.7, 1.3])
    assert info.method == KEPT
    np.testing.assert_allclose(a, [0.7, 1.3])
    a, info = bargaining_weights(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(a, [1.0, 1.0])


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_random_full_rank_gram_matrices_are_solved(k, seed):
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(k, k + 3))
    G = U @ U.T
    G = G / np.linalg.norm(G)
    a, info = bargaining_weights(G)
    assert info.method in (NEWTON, RIDGE)
    if info.method == NEWTON:
        assert (a > 0).all() and residual(G, a) < 1e-6


# --------------------------------------------------------------------------- the update


def adam_step(m, v, g, t, b1=0.9, b2=0.999, eps=1e-8):
    m_k = b1 * m + (1 - b1) * g
    v_k = b2 * v + (1 - b2) * g * g
    return (m_k / (1 - b1**t)) / (np.sqrt(v_k / (1 - b2**t)) + eps)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_update_is_the_weighted_sum_of_per_task_adam_steps(weight_decay):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
    head = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0]], dtype=torch.float64)
    lr = 0.01
    opt = PUB([w], [head], lr=lr, weight_decay=weight_decay, update_every=1, normalize=False)
    m, v = np.zeros(3), np.zeros(3)
    for t in (1, 2, 3):
        z = x @ w
        losses = torch.stack([(z[0] * head[0] - 1) ** 2, (z[1] * head[1] + 2) ** 2])
        g = [torch.autograd.grad(losses[k], w, retain_graph=True)[0].numpy() for k in range(2)]
        before = w.detach().numpy().copy()
        opt.step(losses)
        u = [adam_step(m, v, g[k], t) for k in range(2)]
        G = np.array([[u[i] @ u[j] for j in range(2)] for i in range(2)])
        alpha, _ = bargaining_weights(G / np.linalg.norm(G))
        np.testing.assert_allclose(opt.alpha, alpha, rtol=1e-9)
        expected = before - lr * (alpha[0] * u[0] + alpha[1] * u[1] + weight_decay * before)  # decay once
        np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
        comb = alpha[0] * g[0] + alpha[1] * g[1]
        m, v = 0.9 * m + 0.1 * comb, 0.999 * v + 0.001 * comb**2
    assert opt.solves[NEWTON] == 3


def test_task_specific_parameters_get_adam_on_the_loss_sum():
    torch.manual_seed(1)
    shared = torch.nn.Parameter(torch.randn(2))
    head = torch.nn.Parameter(torch.randn(2))
    twin = torch.nn.Parameter(head.detach().clone())
    ref = torch.optim.Adam([twin], lr=0.01)
    opt = PUB([shared], [head], lr=0.01)
    for _ in range(3):
        losses = torch.stack([(shared[0] * head[0] - 1) ** 2, (shared[1] * head[1] + 1) ** 2])
        ref.zero_grad()
        (((shared[0].detach() * twin[0] - 1) ** 2) + (shared[1].detach() * twin[1] + 1) ** 2).backward()
        ref.step()
        opt.step(losses)
        torch.testing.assert_close(head.detach(), twin.detach())


def test_identical_tasks_give_equal_weights_in_the_optimiser():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = PUB([w], lr=0.01, update_every=1)
    for _ in range(5):
        loss = ((w - 3) ** 2).sum()
        opt.step(torch.stack([loss, loss, loss]))
        np.testing.assert_allclose(opt.alpha, np.ones(3), atol=1e-9)


def test_weights_are_reused_between_refreshes():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = PUB([w], lr=0.01, update_every=4)
    for _ in range(9):
        opt.step(torch.stack([((w - 3) ** 2).sum(), (w**2).sum() * 3]))
    assert sum(opt.solves.values()) == 3  # steps 1, 5, 9


def test_a_parameter_cannot_be_shared_and_specific():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="both shared"):
        PUB([w], [w])


# --------------------------------------------------------------------------- the toy of the PUB paper

LOWER = 5e-6
#: The five starting points of the toy (CAGrad/FAMO toy; the PUB paper's Fig. "toy").
INITS = [(-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0)]


def toy_losses(x1: float, x2: float):
    """The two-objective toy (CAGrad, NeurIPS 2021; used by Nash-MTL, FAMO and PUB): losses and gradients."""
    th, th2 = math.tanh(x2), math.tanh(x2 / 2)
    a = -0.5 * x1 - 3.5 + th
    b = -0.5 * x1 + 3.5 - th
    l1 = math.log(max(abs(a), LOWER)) + 6
    l2 = math.log(max(abs(b), LOWER)) + 6
    dl1 = (-0.5 / a, (1 - th * th) / a) if abs(a) > LOWER else (0.0, 0.0)
    dl2 = (-0.5 / b, -(1 - th * th) / b) if abs(b) > LOWER else (0.0, 0.0)
    c1, dc1 = (th2, 0.5 * (1 - th2 * th2)) if th2 > 0 else (0.0, 0.0)
    c2, dc2 = (-th2, -0.5 * (1 - th2 * th2)) if th2 < 0 else (0.0, 0.0)
    s1 = ((x1 - 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    s2 = ((x1 + 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    ds1, ds2 = (0.2 * (x1 - 7), 0.02 * (x2 + 8)), (0.2 * (x1 + 7), 0.02 * (x2 + 8))
    f = (l1 * c1 + s1 * c2, l2 * c1 + s2 * c2)
    g1 = (dl1[0] * c1 + ds1[0] * c2, dl1[1] * c1 + l1 * dc1 + ds1[1] * c2 + s1 * dc2)
    g2 = (dl2[0] * c1 + ds2[0] * c2, dl2[1] * c1 + l2 * dc1 + ds2[1] * c2 + s2 * dc2)
    return f, (g1, g2)


def toy_torch(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[0], x[1]
    f1 = torch.clamp((0.5 * (-x1 - 7) - torch.tanh(-x2)).abs(), LOWER).log() + 6
    f2 = torch.clamp((0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs(), LOWER).log() + 6
    c1 = torch.clamp(torch.tanh(x2 * 0.5), 0)
    f1_sq = ((-x1 + 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    f2_sq = ((-x1 - 7).pow(2) + 0.1 * (-x2 - 8).pow(2)) / 10 - 20
    c2 = torch.clamp(torch.tanh(-x2 * 0.5), 0)
    return torch.stack([f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2])


@pytest.mark.parametrize("point", [(-8.5, 7.5), (3.0, -9.0), (0.5, 2.0), (-2.0, -1.0)])
def test_toy_gradients_match_autograd(point):
    x = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    f = toy_torch(x)
    (f_ref, grads) = toy_losses(*point)
    np.testing.assert_allclose(f.detach().numpy(), f_ref, rtol=1e-12)
    for k in range(2):
        g = torch.autograd.grad(f[k], x, retain_graph=True)[0].numpy()
        np.testing.assert_allclose(g, grads[k], rtol=1e-9, atol=1e-12)


def test_the_toy_reaches_the_optimum_from_all_five_starting_points():
    # the minimiser of f1 + f2 (by symmetry x1 = 0; x2 found numerically: -8.35511); every start
    # ends on the Pareto set near it (CAGrad, IMTL, Nash-MTL and FAMO stop elsewhere, per the paper)
    opt_x2 = -8.35511
    f_opt = sum(toy_losses(0.0, opt_x2)[0])
    for init in INITS:
        x = torch.nn.Parameter(torch.tensor(init, dtype=torch.float64))
        pub = PUB([x], lr=0.01, update_every=10)
        for step in range(10_000):
            if step == 9_000:
                pub.lr = 0.001
            _, (g1, g2) = toy_losses(*(float(v) for v in x.detach()))
            pub.apply([[torch.tensor(g1, dtype=torch.float64)], [torch.tensor(g2, dtype=torch.float64)]])
        x1, x2 = (float(v) for v in x.detach())
        # x1 is the direction where the tasks conflict and the mean loss is flat (it rises by 0.2·x1²):
        # the iterates jitter there by up to about ±0.7 at these step sizes
        assert abs(x1) < 1.0 and abs(x2 - opt_x2) < 0.1, (init, x1, x2)
        assert sum(toy_losses(x1, x2)[0]) - f_opt < 0.2, init


def test_an_ill_conditioned_gram_matrix_is_solved_not_kept():
    """Regression: an absolute 1e-10 residual is out of reach in floating point for some
    full-rank matrices, and the solver fell back to keeping the previous weights."""
    rng = np.random.default_rng(1058565)
    U = rng.normal(size=(6, 9))
    G = U @ U.T
    G = G / np.linalg.norm(G)
    a, info = bargaining_weights(G)
    assert info.method == NEWTON and (a > 0).all() and residual(G, a) < 1e-6
