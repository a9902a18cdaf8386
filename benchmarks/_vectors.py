"""Synthetic user vectors and a brute-force top-k: test and benchmark data, not library code.

``synthetic_user_vectors`` makes seeded clustered unit vectors shaped like learned embeddings;
``exact_topk`` is the brute-force reference of ``features.lookalike.kernels.lookalike_topk``.
Used by ``tests/features/test_lookalike.py``, ``tests/pipelines/test_lookalike.py`` and the
look-alike benchmarks.
"""
from __future__ import annotations

import math

import numpy as np

from features.lookalike.lsh import SIM_DECIMALS


def synthetic_user_vectors(
    n: int, dim: int = 32, clusters: int | None = None, latent_dim: int = 8, spread: float = 0.5,
    noise: float = 0.05, seed: int = 0,
):
    """Seeded clustered unit vectors: ``(user_ids, matrix float32 (n, dim))``.

    Taste lives in a ``latent_dim``-dimensional subspace (learned embeddings have a low
    effective rank): cluster centres are Gaussian there, cluster sizes follow log-normal weights
    (uneven, as real taste groups; default ``n // 100`` clusters), a user is its centre plus
    ``spread`` times Gaussian noise per unit of the centre's scale; the latent vector is mapped
    into ``dim`` dimensions by a random orthonormal basis, ``noise`` times isotropic Gaussian
    noise is added, and the result is L2-normalised.
    """
    rng = np.random.default_rng(seed)
    clusters = clusters or max(1, n // 100)
    latent_dim = min(latent_dim, dim)
    centres = rng.standard_normal((clusters, latent_dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 0.5, clusters)
    member = rng.choice(clusters, size=n, p=weights / weights.sum())
    latent = centres[member] + rng.standard_normal((n, latent_dim)) * (spread / math.sqrt(latent_dim))
    basis, _ = np.linalg.qr(rng.standard_normal((dim, latent_dim)))
    mat = latent @ basis.T + rng.standard_normal((n, dim)) * (noise / math.sqrt(dim))
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    ids = np.array([f"u{i:07d}" for i in range(n)])
    return ids, mat.astype(np.float32)


def exact_topk(ids: np.ndarray, mat: np.ndarray, k: int, block: int = 2048) -> dict[str, list[str]]:
    """Brute force: each user's top-k other users by cosine (ties by id), in blocks of rows."""
    mat = mat.astype(np.float64)
    order_ids = np.argsort(ids, kind="stable")
    ids_sorted = ids[order_ids]
    m = mat[order_ids]
    out: dict[str, list[str]] = {}
    for start in range(0, len(m), block):
        sim = np.round(m[start : start + block] @ m.T, SIM_DECIMALS)
        for r in range(sim.shape[0]):
            sim[r, start + r] = -np.inf
        kk = min(k, len(m) - 1)
        if kk <= 0:
            out.update({ids_sorted[start + r]: [] for r in range(sim.shape[0])})
            continue
        part = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        kth = np.take_along_axis(sim, part, axis=1).min(axis=1)
        for r in range(sim.shape[0]):
            idx = np.nonzero(sim[r] >= kth[r])[0]  # every tie with the k-th value, in id order
            idx = idx[np.argsort(-sim[r, idx], kind="stable")][:kk]
            out[ids_sorted[start + r]] = list(ids_sorted[idx])
    return out
