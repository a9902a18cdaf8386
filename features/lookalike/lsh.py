"""SimHash candidates and the exact re-ranking of ``lookalike_users``, with the sampled recall estimate."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import numpy as np

from features.timeutil import as_utc


SIM_DECIMALS = 12


# ---------------------------------------------------------------------------------------------
# SimHash bands, sorted windows and exact re-ranking


@dataclass(frozen=True)
class LshParams:
    """SimHash candidates: ``bands`` orderings of ``bits_per_band`` hyperplanes, ``window`` users
    compared on each side of a user in each ordering, top ``k`` kept."""

    k: int = 50
    bands: int = 32
    bits_per_band: int = 16
    window: int = 32
    seed: int = 20220408
    projection_dims: int = 32
    recall_sample: int = 1000
    auto_bands: bool = True
    target_recall: float = 0.95
    max_bands: int = 256

    def validate(self) -> None:
        if self.k < 1 or self.bands < 1 or not 1 <= self.bits_per_band <= 62 or 2 * self.window < self.k:
            raise ValueError("k >= 1, bands >= 1, 1 <= bits_per_band <= 62 and 2 * window >= k are required")
        if self.projection_dims < 0 or self.recall_sample < 0:
            raise ValueError("projection_dims and recall_sample must be >= 0")
        if self.auto_bands and (self.recall_sample == 0 or self.max_bands < self.bands):
            raise ValueError("auto_bands needs recall_sample > 0 and max_bands >= bands")


PCA_FIT_ROWS = 20_000


def hash_projection(mat: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The space users are hashed in: ``(mean (dim,), components (p, dim))``; hash ``(v - mean) @ components.T``.

    ``dims`` 0: the identity (mean 0, hash the raw vectors). Otherwise the ``p = min(dims, dim)``
    leading principal directions of the centred vectors, fitted on a seeded sample of at most
    ``PCA_FIT_ROWS`` users (the same users for the same seed and data, so deterministic); each
    direction's sign is fixed so that its largest-magnitude entry is positive.
    """
    n, dim = mat.shape
    if dims == 0 or n == 0:
        return np.zeros(dim), np.eye(dim)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, PCA_FIT_ROWS), replace=False))
    mean = mat[rows].mean(axis=0)
    _, _, vt = np.linalg.svd(mat[rows] - mean, full_matrices=False)
    comps = vt[: min(dims, dim)]
    flip = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    return mean, comps * np.where(flip == 0, 1.0, flip)[:, None]


def hyperplanes(dim: int, bands: int, bits: int, seed: int, first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian directions of bands ``first .. first + bands - 1``: ``(bands·bits, dim)``
    sign hyperplanes and ``(bands, dim)`` tie-break directions (one per band: orders users inside
    a bucket). Each band has its own generator (seeded by ``(seed, band)``), so a band's
    directions do not depend on how many bands there are: adding bands keeps the others."""
    planes, order = np.empty((bands * bits, dim)), np.empty((bands, dim))
    for j in range(bands):
        rng = np.random.default_rng([seed, first + j])
        planes[j * bits : (j + 1) * bits] = rng.standard_normal((bits, dim))
        order[j] = rng.standard_normal(dim)
    return planes, order


def band_keys(vectors: np.ndarray, planes: np.ndarray, bands: int, bits: int) -> np.ndarray:
    """``(n, bands)`` int64 band keys: each band's sign bits read as a binary number, first
    hyperplane most significant (a projection of exactly 0 counts as bit 0)."""
    if len(vectors) == 0:
        return np.zeros((0, bands), dtype=np.int64)
    signs = (vectors @ planes.T) > 0
    signs = signs.reshape(len(vectors), bands, bits).astype(np.int64)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return signs @ weights


def signatures(indexed, params: LshParams, projection: tuple[np.ndarray, np.ndarray], first: int = 0, bands: int | None = None):
    """Spark: one row per (user, band): ``idx``, ``band``, ``bucket`` (band key), ``proj``, for
    the ``bands`` bands from ``first`` (default: all ``params.bands``; ``band`` counts from 0).

    Hashed in the space of ``projection`` (``hash_projection``)."""
    mean, comps = projection
    bands = params.bands - first if bands is None else bands
    bits = params.bits_per_band
    planes, order = hyperplanes(comps.shape[0], bands, bits, params.seed, first)

    def _sign(batches):
        import pandas as pd

        for pdf in batches:
            if pdf.empty:
                continue
            mat = (np.stack(pdf["vector"].to_numpy()).astype(np.float64) - mean) @ comps.T
            keys = band_keys(mat, planes, bands, bits)
            proj = np.round(mat @ order.T, SIM_DECIMALS)
            yield pd.DataFrame(
                {
                    "idx": np.repeat(pdf["idx"].to_numpy(), bands),
                    "band": np.tile(np.arange(bands, dtype=np.int32), len(pdf)),
                    "bucket": keys.reshape(-1),
                    "proj": proj.reshape(-1),
                }
            )

    return indexed.select("idx", "vector").mapInPandas(_sign, "idx long, band int, bucket long, proj double")


def band_orders(sigs, n: int, bands: int) -> np.ndarray:
    """``(bands, n)``: for each band the user indices sorted by (bucket, proj, idx).

    Sorted in Spark (one window per band); the result is collected to the driver, 4 bytes per
    user and band.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("band").orderBy("bucket", "proj", "idx")
    pos = sigs.select("band", "idx", (F.row_number().over(w) - 1).alias("pos")).toPandas()
    orders = np.full((bands, n), -1, dtype=np.int32)
    orders[pos["band"].to_numpy(), pos["pos"].to_numpy()] = pos["idx"].to_numpy()
    if (orders < 0).any():
        raise ValueError("band orders are incomplete (user indices are not 0..n-1)")
    return orders


def window_candidates(i: int, orders: np.ndarray, positions: np.ndarray, window: int) -> np.ndarray:
    """User ``i``'s candidates, sorted and distinct, ``i`` excluded: the ``window`` users on each
    side of it in every band's order (``orders`` ``(bands, n)``, ``positions`` its inverse). The
    window is shifted inward at the ends of an order, so there are ``min(2·window, n - 1)`` per band."""
    n = orders.shape[1]
    span = min(2 * window + 1, n)
    lo = np.clip(positions[:, i] - window, 0, n - span)
    cand = np.unique(np.concatenate([orders[b, lo[b] : lo[b] + span] for b in range(orders.shape[0])]))
    return cand[cand != i]


def top_by_similarity(i: int, cand: np.ndarray, mat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` candidates most similar to user ``i`` (exact cosine of unit rows of ``mat``,
    rounded to ``SIM_DECIMALS``; ties by index, i.e. by user id): ``(indices, similarities)``."""
    sim = np.round(mat[cand] @ mat[i], SIM_DECIMALS)
    top = np.lexsort((cand, -sim))[:k]
    return cand[top], sim[top]


def recall_samples(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(selection, held_out)``: two disjoint seeded samples of ``min(size, n // 2)`` user
    indices each (sorted), cut from one permutation of the ``n`` users.

    ``auto_bands`` chooses the bands on ``selection``; the recall a build reports is measured on
    ``held_out``, so it is not biased by the choice. The same users for the same ``n``, ``size``
    and ``seed``, with or without ``auto_bands``.
    """
    m = min(size, n // 2)
    perm = np.random.default_rng(seed + 1).permutation(n)
    return np.sort(perm[m : 2 * m]), np.sort(perm[:m])


def exact_kth(mat: np.ndarray, rows: np.ndarray, k: int, block: int = 32) -> np.ndarray:
    """Brute force: each of ``rows``' exact ``k``-th largest cosine to the other users
    (rounded to ``SIM_DECIMALS`` as the job rounds; linear in users)."""
    n = len(mat)
    out = np.empty(len(rows))
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        sim = np.round(mat[part] @ mat.T, SIM_DECIMALS)
        sim[np.arange(len(part)), part] = -np.inf
        out[start : start + block] = np.partition(sim, n - k, axis=1)[:, n - k]
    return out


def sampled_recall(mat: np.ndarray, orders: np.ndarray, positions: np.ndarray, window: int, k: int,
                   rows: np.ndarray, kth: np.ndarray) -> float:
    """Recall@k of the candidates of ``rows`` against their exact ``k``-th cosine ``kth``
    (:func:`exact_kth`): a neighbour the job returns counts as found when its cosine reaches it
    (tie-aware); found / (rows · k), rounded to 4 decimals. Exact for these users, since the job
    ranks them with the same functions."""
    found = 0
    for r, i in enumerate(rows):
        _, got = top_by_similarity(int(i), window_candidates(int(i), orders, positions, window), mat, k)
        found += int(np.count_nonzero(got >= kth[r]))
    return round(found / (len(rows) * k), 4)


def lookalike_topk(vectors, params: LshParams, cutoff_ts: dt.datetime | None = None):
    """Spark: ``(lookalike rows, stats)`` for ``vectors`` (``user_id``, unit ``vector``).

    Users are hashed in the space of ``hash_projection`` (centred, leading principal directions).
    Candidates of a user (``window_candidates``): the ``window`` users on each side of it in each
    band's order (users sorted by band key, then by projection on the band's tie-break direction,
    then id): users sharing a long prefix of sign bits are adjacent, so similar users meet in
    some band. The exact cosine of every candidate is computed and the top ``k`` kept
    (similarity descending, then ``neighbor_user_id`` ascending). Work is linear in users: at
    most ``2·window·bands`` candidates each.

    ``stats``: ``users``, ``bands``, ``bits_per_band``, ``window``, ``projection_dims`` (the
    hashing space's width, 0 = raw vectors), and, when sampled (``recall_samples``),
    ``recall_estimate`` and ``recall_sample_users``: the recall@k on the held-out sample
    (``sampled_recall``). With ``auto_bands``, ``bands`` is the count used, ``bands_tried`` lists
    ``bands:selection estimate`` for each try and ``selection_recall_estimate`` /
    ``selection_sample_users`` give the last try's. The sum over users of their distinct candidates
    is each row's ``n_candidates`` (``pairs_evaluated``). Rows: ``user_id``, ``rank`` (1-based),
    ``neighbor_user_id``, ``similarity``, ``cutoff_ts``, ``n_candidates``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    params.validate()
    spark = vectors.sparkSession
    # Index users by id order (a user index is also the tie-break order).
    indexed = vectors.select("user_id", "vector").withColumn(
        "idx", (F.row_number().over(Window.orderBy("user_id")) - 1).cast("long")
    )
    local = indexed.orderBy("idx").select("user_id", "vector").toPandas()
    n = len(local)
    ids = local["user_id"].to_numpy().astype(object)
    mat = np.stack(local["vector"].to_numpy()).astype(np.float64) if n else np.zeros((0, 0))
    stats = {"users": n, "bands": params.bands, "bits_per_band": params.bits_per_band, "window": params.window}
    schema = "user_id string, rank int, neighbor_user_id string, similarity double, n_candidates long"
    if n < 2:
        stats["projection_dims"] = 0
        empty = spark.createDataFrame([], schema)
        return _finish(empty, cutoff_ts), stats
    projection = hash_projection(mat, params.projection_dims, params.seed)
    stats["projection_dims"] = int(projection[1].shape[0]) if params.projection_dims else 0
    kk = min(params.k, n - 1)
    selection, held_out = recall_samples(n, params.recall_sample, params.seed)
    orders = band_orders(signatures(indexed, params, projection), n, params.bands)
    positions = _positions(orders)
    if params.auto_bands and len(selection):
        # Auto bands: double until the selection sample's recall reaches the target or the cap
        # is hit. Each band has its own hyperplanes, so only the added bands are hashed and sorted.
        kth, tried = exact_kth(mat, selection, kk), []
        while True:
            chosen = sampled_recall(mat, orders, positions, params.window, kk, selection, kth)
            tried.append(f"{params.bands}:{chosen}")
            if chosen >= params.target_recall or 2 * params.bands > params.max_bands:
                break
            added = band_orders(signatures(indexed, params, projection, first=params.bands, bands=params.bands), n, params.bands)
            orders = np.concatenate([orders, added])
            positions = np.concatenate([positions, _positions(added)])
            params = replace(params, bands=2 * params.bands)
        stats.update(selection_sample_users=int(len(selection)), selection_recall_estimate=chosen, bands_tried=" ".join(tried))
    if len(held_out):
        # The reported recall: on users that chose nothing.
        kth_out = exact_kth(mat, held_out, kk)
        stats["recall_sample_users"] = int(len(held_out))
        stats["recall_estimate"] = sampled_recall(mat, orders, positions, params.window, kk, held_out, kth_out)
    stats["bands"] = params.bands
    shared = spark.sparkContext.broadcast((ids, mat, orders, positions))
    k, win = params.k, params.window

    def _rerank(batches):
        import pandas as pd

        ids_, mat_, orders_, pos_ = shared.value
        kk = min(k, len(ids_) - 1)
        for pdf in batches:
            out_u, out_n, out_s, out_c = [], [], [], []
            for i in pdf["id"].to_numpy():
                cand = window_candidates(int(i), orders_, pos_, win)
                top, sim = top_by_similarity(int(i), cand, mat_, kk)
                out_u.append(np.full(len(top), i))
                out_n.append(top)
                out_s.append(sim)
                out_c.append(np.full(len(top), len(cand)))
            if not out_u:
                continue
            u, nb = np.concatenate(out_u), np.concatenate(out_n)
            yield pd.DataFrame(
                {
                    "user_id": ids_[u],
                    "rank": np.concatenate([np.arange(1, len(t) + 1) for t in out_n]).astype(np.int32),
                    "neighbor_user_id": ids_[nb],
                    "similarity": np.concatenate(out_s),
                    "n_candidates": np.concatenate(out_c).astype(np.int64),
                }
            )

    parts = max(spark.sparkContext.defaultParallelism, n // 20_000)
    ranked = spark.range(n, numPartitions=parts).mapInPandas(_rerank, schema)
    return _finish(ranked, cutoff_ts), stats


def _positions(orders: np.ndarray) -> np.ndarray:
    """The inverse of each band's order: ``positions[b, user]`` is the user's place in band ``b``."""
    positions = np.empty_like(orders)
    for b in range(orders.shape[0]):
        positions[b, orders[b]] = np.arange(orders.shape[1], dtype=orders.dtype)
    return positions


def _finish(ranked, cutoff_ts):
    from pyspark.sql import functions as F

    ts = F.lit(as_utc(cutoff_ts)) if cutoff_ts is not None else F.lit(None).cast("timestamp")
    sim = F.greatest(F.least(F.col("similarity"), F.lit(1.0)), F.lit(-1.0))
    return ranked.select("user_id", "rank", "neighbor_user_id", sim.alias("similarity"), ts.alias("cutoff_ts"), "n_candidates")


def pairs_evaluated(lookalikes) -> int:
    """Spark: the candidates whose exact cosine was computed, summed over users."""
    from pyspark.sql import functions as F

    row = lookalikes.where(F.col("rank") == 1).agg(F.sum("n_candidates")).collect()[0]
    return int(row[0] or 0)
