"""A local implicit-feedback ALS: the objective and the update of Spark ML's ``ALS(implicitPrefs=True)``.

``user_vectors``' behaviour block (docs/lookalike.md) is the user factors of an implicit ALS.
Spark ML runs it as a distributed job, which costs seconds of scheduling per iteration even on a
matrix of a few thousand users; below ``als.local_max_entries`` entries the job factorises the
matrix here instead, with NumPy in the driver. Pure math: arrays in, arrays out; no Spark.

**The model** (Hu, Koren and Volinsky 2008, with Spark's ALS-WR weighting of the ridge). For a
user ``u`` and item ``i`` with ``r_ui`` positive events (``r_ui = 0`` when the pair is absent):
preference ``p_ui = 1`` if ``r_ui > 0`` else 0, confidence ``c_ui = 1 + alpha·r_ui``. The loss is

    L(X, Y) = Σ_{u,i} c_ui (p_ui - x_uᵀy_i)²  +  reg · (Σ_u n_u ‖x_u‖² + Σ_i n_i ‖y_i‖²)

over *all* pairs, with ``n_u`` (``n_i``) the user's (item's) number of entries with ``r > 0``.
Spark's ``computeFactors`` weights ``regParam`` by that count (``numExplicits * regParam``, "ALS-WR"),
so the ridge of each solve is ``λ_u = reg·n_u``, not a plain ``reg``.

**The half-step.** With ``Y`` fixed, each ``x_u`` solves exactly

    (YᵀY + Σ_{i∈I_u} alpha·r_ui y_i y_iᵀ + λ_u I) x_u = Σ_{i∈I_u} (1 + alpha·r_ui) y_i

that is ``(YᵀC_uY + λ_u I) x_u = YᵀC_u p(u)``, the minimiser of ``L`` in ``x_u``; the item
half-step is the same with the roles swapped. ``YᵀY`` is shared, so a solve costs
``O(|I_u|·rank² + rank³)``. An entity without entries gets ``b = 0``, so ``x = 0`` (as in Spark,
whose ridge is then 0 and ``YᵀY`` is solved against a zero right-hand side).

**Iterations** follow Spark's ``ALS.train`` for implicit feedback: the user factors start as
seeded Gaussian vectors scaled to unit length (the item start is never used), then each
iteration solves the items from the users and then the users from the items. Every half-step
minimises ``L`` exactly in its block, so ``L`` never increases (tested). Same inputs and seed,
same factors, bit for bit (the solves and the sums run in a fixed order).

Spark's own random start (``XORShiftRandom`` per block) is not reproduced, so the two engines
reach factors of the same quality, not the same numbers; the tests compare the loss, one
half-step from Spark's item factors (equal to Spark's user factors to float precision) and the
look-alike neighbours (tests/features/test_als_local.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The engines ``als.engine`` may name; ``auto`` picks ``local`` up to ``local_max_entries``.
ENGINES = ("auto", "local", "spark")


@dataclass(frozen=True)
class CsrMatrix:
    """A sparse ``rows × cols`` matrix in compressed rows: row ``a``'s entries are
    ``cols[indptr[a]:indptr[a+1]]`` with values ``values[...]`` (columns ascending in a row)."""

    indptr: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_coo(cls, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n_cols: int) -> "CsrMatrix":
        """From (row, col, value) triples; a (row, col) pair must appear at most once."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        order = np.lexsort((cols, rows))
        rows, cols, values = rows[order], cols[order], np.asarray(values, dtype=np.float64)[order]
        if len(rows) > 1 and np.any((rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])):
            raise ValueError("ALS input: a (row, col) pair appears more than once")
        indptr = np.searchsorted(rows, np.arange(n_rows + 1)).astype(np.int64)
        return cls(indptr, cols, values, int(n_cols))

    def transpose(self) -> "CsrMatrix":
        rows = np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))
        return CsrMatrix.from_coo(self.cols, rows, self.values, self.n_cols, self.n_rows)


def choose_engine(engine: str, entries: int, local_max_entries: int) -> str:
    """``local`` or ``spark``: ``engine`` itself unless it is ``auto``, which is ``local`` when the
    matrix has at most ``local_max_entries`` (user, item) entries and ``spark`` above."""
    if engine not in ENGINES:
        raise ValueError(f"als.engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine != "auto":
        return engine
    return "local" if entries <= local_max_entries else "spark"


def initial_factors(n: int, rank: int, seed: int) -> np.ndarray:
    """``n × rank`` seeded standard Gaussian rows scaled to unit L2 norm (Spark's start, not its stream)."""
    x = np.random.default_rng(seed).standard_normal((n, rank))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


#: Entries (padded) gathered per batch of a half-step: bounds its temporaries to about
#: ``4 · BATCH_ENTRIES · rank · 8`` bytes (8 MiB at rank 32), whatever the matrix.
BATCH_ENTRIES = 1 << 13


def half_step(fixed: np.ndarray, ratings: CsrMatrix, reg: float, alpha: float) -> np.ndarray:
    """The factors of ``ratings``' rows given the factors ``fixed`` of its columns.

    Row ``a`` solves ``(FᵀF + Σ alpha·r f fᵀ + reg·n_a I) x = Σ (1 + alpha·r) f`` over its entries
    (``r > 0``; ``n_a`` their count), in float64. Rows without entries get 0.

    Rows are batched by their entry count rounded up to a power of two and padded with zero
    weights to it (at most twice the entries), so that each batch is one stacked GEMM and one
    stacked solve, with no Python loop over rows; a batch holds at most :data:`BATCH_ENTRIES`
    padded entries (or one row).
    """
    rank = fixed.shape[1]
    fixed = np.asarray(fixed, dtype=np.float64)
    gram = fixed.T @ fixed
    counts = np.diff(ratings.indptr)
    out = np.zeros((ratings.n_rows, rank))
    c1_all = alpha * ratings.values
    diag = np.arange(rank)
    width = np.zeros(ratings.n_rows, dtype=np.int64)
    has = counts > 0
    width[has] = 1 << np.ceil(np.log2(counts[has])).astype(np.int64)
    for w in np.unique(width[has]):
        rows_w = np.flatnonzero(width == w)
        per = max(1, BATCH_ENTRIES // int(w))
        for start in range(0, len(rows_w), per):
            rows = rows_w[start:start + per]
            offs = np.arange(w)
            mask = offs[None, :] < counts[rows][:, None]
            pos = np.where(mask, ratings.indptr[rows][:, None] + offs[None, :], 0)
            f = fixed[ratings.cols[pos]] * mask[..., None]  # (rows, w, rank), padded entries zero
            c1 = np.where(mask, c1_all[pos], 0.0)
            a = np.matmul((f * c1[..., None]).transpose(0, 2, 1), f)
            a += gram
            a[:, diag, diag] += reg * counts[rows][:, None]
            b = np.einsum("rwk,rw->rk", f, 1.0 + c1)
            out[rows] = np.linalg.solve(a, b[..., None])[..., 0]
    return out


def implicit_loss(x: np.ndarray, y: np.ndarray, ratings: CsrMatrix, reg: float, alpha: float) -> float:
    """``L(X, Y)`` above, over all ``n_users × n_items`` pairs (``ratings`` has users as rows).

    Computed without the dense matrix: ``Σ_all s²`` is ``trace(XᵀX·YᵀY)``, and the entries add
    ``c(1 - s)² - s²``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rows = np.repeat(np.arange(ratings.n_rows), np.diff(ratings.indptr))
    s = np.einsum("nk,nk->n", x[rows], y[ratings.cols])
    c = 1.0 + alpha * ratings.values
    fit = float(np.sum((x.T @ x) * (y.T @ y))) + float(np.sum(c * (1.0 - s) ** 2 - s**2))
    n_u = np.diff(ratings.indptr)
    n_i = np.bincount(ratings.cols, minlength=ratings.n_cols)
    ridge = reg * (float(n_u @ np.sum(x * x, axis=1)) + float(n_i @ np.sum(y * y, axis=1)))
    return fit + ridge


def implicit_als(
    ratings: CsrMatrix, rank: int, iterations: int, reg: float, alpha: float, seed: int, trace: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(user_factors, item_factors)`` (float64, ``n_users × rank`` and ``n_items × rank``).

    ``ratings`` holds the positive-event counts with users as rows. ``iterations`` times: items
    from users, then users from items (Spark's order). ``trace``, when given, receives the loss
    after every half-step (for the monotonicity test; it costs one pass over the entries each).
    """
    if rank < 1 or iterations < 1:
        raise ValueError("ALS needs rank >= 1 and iterations >= 1")
    if reg < 0 or alpha <= 0:
        raise ValueError("ALS needs reg >= 0 and alpha > 0")
    by_item = ratings.transpose()
    x = initial_factors(ratings.n_rows, rank, seed)
    y = np.zeros((ratings.n_cols, rank))
    with _single_threaded_blas():
        for _ in range(iterations):
            y = half_step(x, by_item, reg, alpha)
            if trace is not None:
                trace.append(implicit_loss(x, y, ratings, reg, alpha))
            x = half_step(y, ratings, reg, alpha)
            if trace is not None:
                trace.append(implicit_loss(x, y, ratings, reg, alpha))
    return x, y


def _single_threaded_blas():
    """A context with BLAS on one thread. The half-steps are thousands of rank × rank products
    and solves, for which a BLAS thread pool costs more in hand-offs than it saves (several
    times slower with OpenBLAS's default threads on a demo-sized matrix, in a timing not kept
    as a benchmark). ``threadpoolctl`` comes with
    scikit-learn; without it nothing is limited."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn (a dependency) brings it
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def encode_ids(values) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted distinct ids, index of each value among them)``: the dense rank of a string id
    minus 1 (code-point order, which is the byte order of UTF-8 that Spark sorts strings by)."""
    distinct, index = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return distinct, index.astype(np.int64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (an all-zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x, dtype=np.float64), where=norm > 0)


def user_behaviour_vectors(
    user_ids, item_ids, n_pos, rank: int, iterations: int, reg: float, alpha: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct user ids, unit behaviour vectors)`` from ``(user_id, item_id, n_pos)`` rows
    (one per pair, ``n_pos >= 1``): the local engine of the behaviour block, users in id order."""
    users, u = encode_ids(user_ids)
    items, i = encode_ids(item_ids)
    ratings = CsrMatrix.from_coo(u, i, np.asarray(n_pos, dtype=np.float64), len(users), len(items))
    x, _ = implicit_als(ratings, rank, iterations, reg, alpha, seed)
    return users, unit_rows(x)
