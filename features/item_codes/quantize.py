"""Residual k-means semantic IDs: code tokens per item and the disambiguation token.

Pure NumPy (faiss optional), no I/O.

* :func:`residual_kmeans`: level 0 clusters the embeddings into at most ``codebook_size``
  centroids; each next level clusters the residuals (embedding minus the centroids chosen so
  far). ``backend``: ``numpy`` (k-means++ seeding, Lloyd iterations, ties to the lower centroid
  index, every step seeded), ``faiss`` (``faiss.Kmeans`` with the same seed, one thread, so its
  result is deterministic too) or ``auto`` (faiss when importable, else NumPy). An empty cluster
  is re-seeded with the point farthest from its centroid. With fewer distinct points than
  ``codebook_size`` a level uses as many centroids as distinct points.
* :func:`disambiguate`: items sharing all ``levels`` codes (a collision) get 0, 1, 2, ... in
  ``item_id`` order as the extra token; every other item gets 0. The full sequence
  (codes + token) is then unique.
* :func:`codebook_digest`: a short, stable digest of the centroids and the build's settings
  (``codebook_version``).

Choices of ours (docs/fair.md): residual k-means rather than RQ-VAE (no training loop, seconds
on CPU) or OPQ (RPG's parallel, unordered codes); the coarse-to-fine order lets the trainer's
prefix trie share prefixes.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

BACKENDS = ("auto", "numpy", "faiss")


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (lowest index on ties) and the squared distance."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    d = np.maximum(d, 0.0)
    a = d.argmin(axis=1)
    return a, d[np.arange(len(x)), a]


def kmeans_numpy(x: np.ndarray, k: int, seed: int, iterations: int = 25) -> np.ndarray:
    """Centroids ``[k, d]`` of ``x`` (k-means++ init, Lloyd iterations; deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[rng.integers(n)]
    closest = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = closest.sum()
        i = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centroids[j] = x[i]
        closest = np.minimum(closest, ((x - x[i]) ** 2).sum(1))
    for _ in range(iterations):
        a, dist = _assign(x, centroids)
        counts = np.bincount(a, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, a, x)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
        for j in np.flatnonzero(counts == 0):  # re-seed an empty cluster at the worst-served point
            far = int(dist.argmax())
            new[j] = x[far]
            dist[far] = 0.0
        if np.allclose(new, centroids):
            centroids = new
            break
        centroids = new
    return centroids


def kmeans_faiss(x: np.ndarray, k: int, seed: int, iterations: int = 25) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(1)  # one thread: the same centroids on every run
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=int(seed) % (2**31), verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1_000_000)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km.centroids.astype(np.float64)


def residual_kmeans(x: np.ndarray, levels: int, codebook_size: int, seed: int, backend: str = "auto",
                    iterations: int = 25) -> tuple[np.ndarray, list[np.ndarray], str]:
    """(codes int32 [n, levels], centroids per level, the backend used)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "faiss" and not faiss_available():
        raise ImportError("the faiss backend needs faiss-cpu (pip install faiss-cpu); use backend numpy")
    used = "faiss" if backend == "faiss" or (backend == "auto" and faiss_available()) else "numpy"
    x = np.asarray(x, np.float64)
    n = len(x)
    codes = np.zeros((n, levels), np.int32)
    books: list[np.ndarray] = []
    residual = x.copy()
    for level in range(levels):
        distinct = len(np.unique(np.round(residual, 12), axis=0)) if n else 0
        k = max(1, min(codebook_size, distinct))
        if n == 0:
            books.append(np.zeros((0, x.shape[1])))
            continue
        level_seed = seed * 1_000 + level
        if k == 1:
            centroids = residual.mean(axis=0, keepdims=True)
        elif used == "faiss" and n >= k and x.shape[1] > 0:
            centroids = kmeans_faiss(residual, k, level_seed, iterations)
        else:
            centroids = kmeans_numpy(residual, k, level_seed, iterations)
        a, _ = _assign(residual, centroids)
        codes[:, level] = a
        books.append(centroids)
        residual = residual - centroids[a]
    return codes, books, used


def disambiguate(item_ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """int32 [n]: each item's 0-based rank by ``item_id`` among the items with the same codes."""
    n = len(item_ids)
    out = np.zeros(n, np.int32)
    if n == 0:
        return out
    order = np.lexsort((np.asarray(item_ids, dtype=str), *codes.T[::-1]))
    sorted_codes = codes[order]
    new_group = np.ones(n, bool)
    new_group[1:] = (sorted_codes[1:] != sorted_codes[:-1]).any(axis=1)
    starts = np.flatnonzero(new_group)
    group_start = starts[np.cumsum(new_group) - 1]
    out[order] = (np.arange(n) - group_start).astype(np.int32)
    return out


def semantic_ids(codes: np.ndarray, disambiguation: np.ndarray) -> list[str]:
    """``"c0-c1-...-d"`` strings of every row."""
    return ["-".join(map(str, [*row, d])) for row, d in zip(codes.tolist(), disambiguation.tolist())]


def codebook_digest(books: list[np.ndarray], settings: dict) -> str:
    """16 hex characters from the centroids (rounded to 1e-9) and the settings record."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for b in books:
        h.update(np.round(b, 9).astype("<f8").tobytes())
    return h.hexdigest()[:16]
