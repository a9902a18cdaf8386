"""PUB, Parameter Update Balancing (Yuan, Cai, Dong; ICDM 2024, arXiv 2410.05806), on shared parameters.

PUB balances the tasks' Adam *update vectors* rather than their gradients (spec: trainers §2):

1. Every step, for each task k, the step Adam would take on the shared parameters if only that
   task's gradient ``g_k`` arrived now: ``u_k = m̂_k / (sqrt(v̂_k) + eps)`` with
   ``m_k = b1 m + (1 - b1) g_k``, ``v_k = b2 v + (1 - b2) g_k²`` on the one moment pair (m, v) the
   tasks share, bias-corrected as Adam does.
2. Every ``update_every`` steps (the first step included), the Gram matrix ``G = U Uᵀ`` of the
   flattened steps, divided by its Frobenius norm, gives the task weights α: the Nash bargaining
   condition ``(G α)_i = 1 / α_i`` with α > 0 (:func:`bargaining_weights`, warm-started from the
   previous weights; between refreshes the weights are reused).
3. The shared parameters move by ``-lr Σ_k α_k u_k``; then the shared moments take the combined
   gradient ``Σ_k α_k g_k``. Weight decay is applied once per step, decoupled:
   ``-lr · weight_decay · θ`` (the official code adds it inside the per-task loop, K times).
4. Task-specific parameters get a plain Adam step on the gradient of ``Σ_k L_k``.

Differences from the official code at the commit the spec read, all deliberate: the solver runs
(the official call ``cp.QSOP`` does not exist and a bare ``except`` leaves α at ones, i.e. an
equal-weight sum of per-task Adam steps); the update directions span the shared parameters only
(the official code takes every parameter of the optimiser, towers included); weight decay once.

The solver. ``(G α)_i = 1/α_i`` for every i is exactly the stationarity condition of the convex
function ``f(α) = ½ αᵀ G α − Σ_i log α_i`` on α > 0 (G is positive semi-definite; ``−log`` is
strictly convex), so its minimiser is the unique bargaining solution when one exists. It is
found by damped Newton's method (Hessian ``G + diag(1/α²)``, positive definite; a step is cut
to keep α > 0 and by Armijo backtracking on f), which converges quadratically: residuals of
1e-12 in a handful of iterations, where the CCP loop of Nash-MTL/PUB stops at 1e-3. This is the
same problem the CCP loop solves, with a different (exact) method.

No solution exists when some positive combination of the steps cancels (``Σ α_k u_k = 0`` for
some α > 0, e.g. two exactly opposite steps, or a task whose step is zero): f is unbounded
below there and α diverges. Then, and when Newton does not converge or G is not finite, the
fallback solves the ridge-regularised problem ``G + δ I`` (δ = 1e-3 · trace(G)/K, always
solvable); if that fails too (a non-finite G), the previous weights are kept (ones at the start).
:class:`SolveInfo` says which path gave the weights; ``PUB.solves`` counts them.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Solver paths (``SolveInfo.method``).
NEWTON, RIDGE, KEPT = "newton", "ridge", "kept"


@dataclass(frozen=True)
class SolveInfo:
    method: str  # NEWTON, RIDGE (fallback) or KEPT (fallback of the fallback)
    iterations: int
    residual: float  # max_i |(G α)_i − 1/α_i| on the matrix the weights solve (G, or G + δI for RIDGE)


def _objective(G: np.ndarray, a: np.ndarray) -> float:
    return float(0.5 * a @ G @ a - np.log(a).sum())


def _newton(G: np.ndarray, a0: np.ndarray, max_iter: int, tol: float, max_alpha: float) -> tuple[np.ndarray, int, float, bool]:
    a = a0.copy()
    for it in range(1, max_iter + 1):
        ga = G @ a
        r = ga - 1.0 / a
        res = float(np.abs(r).max())
        # Relative to the terms' size: for an ill-conditioned G rounding keeps an absolute
        # residual of a few 1e-10 whatever the iterations.
        if res < tol * max(1.0, float(np.abs(ga).max())):
            return a, it - 1, res, True
        H = G + np.diag(1.0 / a**2)
        try:
            d = np.linalg.solve(H, -r)
        except np.linalg.LinAlgError:
            return a, it, res, False
        if not np.isfinite(d).all():
            return a, it, res, False
        t = 1.0
        neg = d < 0
        if neg.any():
            t = min(1.0, 0.99 * float(np.min(-a[neg] / d[neg])))
        f0, slope = _objective(G, a), float(r @ d)
        # Near the solution the decrease is below the objective's rounding: take the (positive)
        # Newton step as it is, since the Armijo test can no longer tell.
        if abs(slope) > 1e-13 * max(1.0, abs(f0)):
            while t > 1e-12 and _objective(G, a + t * d) > f0 + 1e-4 * t * slope:
                t *= 0.5
        a = a + t * d
        if not np.isfinite(a).all() or a.max() > max_alpha:
            return a, it, math.inf, False
    ga = G @ a
    res = float(np.abs(ga - 1.0 / a).max())
    return a, max_iter, res, res < tol * max(1.0, float(np.abs(ga).max()))


def bargaining_weights(
    G, alpha0: Sequence[float] | None = None, *, max_iter: int = 100, tol: float = 1e-10, max_alpha: float = 1e8
) -> tuple[np.ndarray, SolveInfo]:
    """α > 0 with ``(G α)_i = 1/α_i`` for the PSD matrix ``G`` (K×K), warm-started at ``alpha0``.

    Returns the weights and how they were found (module docstring: Newton, else the ridge
    fallback, else ``alpha0`` kept).
    """
    G = np.asarray(G, dtype=np.float64)
    k = G.shape[0]
    prev = np.ones(k) if alpha0 is None else np.asarray(alpha0, dtype=np.float64)
    if not (np.isfinite(prev).all() and (prev > 0).all()):
        prev = np.ones(k)
    if not np.isfinite(G).all():
        return prev.copy(), SolveInfo(KEPT, 0, math.nan)
    G = 0.5 * (G + G.T)
    a, it, res, ok = _newton(G, prev, max_iter, tol, max_alpha)
    if ok:
        return a, SolveInfo(NEWTON, it, res)
    trace = float(np.trace(G))
    delta = 1e-3 * trace / k if trace > 0 else 1e-3
    Gr = G + delta * np.eye(k)
    start = prev if prev.max() < max_alpha else np.ones(k)
    a, it2, res, ok = _newton(Gr, start, max_iter, tol, max_alpha)
    if ok:
        return a, SolveInfo(RIDGE, it + it2, res)
    return prev.copy(), SolveInfo(KEPT, it + it2, res)


class PUB:
    """The PUB optimiser over ``shared`` parameters, with Adam on the ``specific`` ones.

    ``step(losses)`` takes the K task losses of one forward pass (a 1-D tensor with its graph),
    computes the per-task shared gradients (K backward passes) and the task-specific gradients of
    their sum (one more), and applies the update of the module docstring.
    """

    def __init__(
        self,
        shared: Iterable[torch.nn.Parameter],
        specific: Iterable[torch.nn.Parameter] = (),
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        update_every: int = 10,
        max_iter: int = 100,
        normalize: bool = True,
    ):
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.shared = [p for p in shared if p.requires_grad]
        self.specific = [p for p in specific if p.requires_grad]
        ids = {id(p) for p in self.shared}
        if any(id(p) in ids for p in self.specific):
            raise ValueError("a parameter is both shared and task-specific")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.update_every, self.max_iter, self.normalize = update_every, max_iter, normalize
        self.specific_opt = (
            torch.optim.Adam(self.specific, lr=lr, betas=self.betas, eps=eps, weight_decay=weight_decay)
            if self.specific else None
        )
        self.m = [torch.zeros_like(p) for p in self.shared]
        self.v = [torch.zeros_like(p) for p in self.shared]
        self.t = 0
        self.alpha: np.ndarray | None = None
        self.last_info: SolveInfo | None = None
        self.solves: dict[str, int] = {NEWTON: 0, RIDGE: 0, KEPT: 0}

    def task_steps(self, grads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Per shared tensor, the K would-be Adam steps ``u_k`` stacked [K, *shape] (at step ``self.t``)."""
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        out = []
        for i in range(len(self.shared)):
            g = torch.stack([gk[i] for gk in grads])
            m = b1 * self.m[i] + (1 - b1) * g
            v = b2 * self.v[i] + (1 - b2) * g * g
            out.append((m / bc1) / ((v / bc2).sqrt() + self.eps))
        return out

    def _solve(self, steps: list[torch.Tensor], k: int) -> None:
        U = torch.cat([s.reshape(k, -1) for s in steps], dim=1).double()
        G = (U @ U.T).numpy()
        norm = float(np.linalg.norm(G))
        G = G / norm if norm > 0 and math.isfinite(norm) else G
        self.alpha, self.last_info = bargaining_weights(G, self.alpha, max_iter=self.max_iter)
        self.solves[self.last_info.method] += 1

    @torch.no_grad()
    def apply(self, grads: list[list[torch.Tensor]]) -> None:
        """The shared-parameter update from per-task gradients ``grads[k][i]`` (of ``self.shared[i]``)."""
        k = len(grads)
        self.t += 1
        steps = self.task_steps(grads)
        if self.alpha is None or len(self.alpha) != k or (self.t - 1) % self.update_every == 0:
            self._solve(steps, k)
        b1, b2 = self.betas
        alpha = torch.as_tensor(self.alpha * (k / self.alpha.sum()) if self.normalize else self.alpha)
        for i, p in enumerate(self.shared):
            w = alpha.to(p.dtype).reshape((k,) + (1,) * p.dim())
            update = (w * steps[i]).sum(0)
            if self.weight_decay:
                update = update + self.weight_decay * p
            p.sub_(self.lr * update)
            g = (w * torch.stack([gk[i] for gk in grads])).sum(0)
            self.m[i].mul_(b1).add_((1 - b1) * g)
            self.v[i].mul_(b2).add_((1 - b2) * g * g)

    def step(self, losses: torch.Tensor) -> None:
        k = int(losses.shape[0])
        grads = []
        for j in range(k):
            gs = torch.autograd.grad(losses[j], self.shared, retain_graph=True, allow_unused=True)
            grads.append([torch.zeros_like(p) if g is None else g for p, g in zip(self.shared, gs)])
        if self.specific_opt is not None:
            gs = torch.autograd.grad(losses.sum(), self.specific, allow_unused=True)
            for p, g in zip(self.specific, gs):
                p.grad = None if g is None else g
        self.apply(grads)
        if self.specific_opt is not None:
            self.specific_opt.step()
