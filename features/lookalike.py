"""Look-alike users for Recall-Augmented Ranking (RAR): ``user_vectors`` and ``lookalike_users``.

RAR (Huang et al., WWW'24) enriches a ranking model's view of a user with look-alike users
(u2u) and recall-stage items (i2i, ``features/recall.py``). Its public text describes SimHash
selection (random-hyperplane signatures compared group by group) and a top-k; no code is
public. The details chosen here are documented in ``docs/lookalike.md``:

* **user vector** (as of a cutoff): an L2-normalised profile block (numeric attributes
  ``sign(x)·log1p(|x|)`` then z-scored; categorical attributes one-hot over their most frequent
  values) times ``profile_weight``, concatenated with an L2-normalised behaviour block (Spark ML
  ALS on implicit feedback from the positive events *strictly before* the cutoff) times
  ``behaviour_weight``; the concatenation is L2-normalised, so cosine = dot product and
  ``cos = (wp²·cos_profile + wb²·cos_behaviour) / (wp² + wb²)`` for users with both blocks.
* **hashing space**: the vectors are centred on their mean and projected on their
  ``projection_dims`` leading principal directions (fitted on a seeded sample of users) before
  hashing, so the hyperplanes cut where users differ rather than through a component every
  user shares; 0 hashes the raw vectors. Re-ranking always uses the exact cosine of the stored
  vectors.
* **candidates**: SimHash bands. ``bands`` groups of ``bits_per_band`` random hyperplanes
  (seeded Gaussian); a user's band key is the integer of its sign bits (a bucket). Each band
  sorts all users by (bucket, projection on one more random direction of the band, user id):
  users in the same bucket, and buckets sharing a long prefix of bits, are adjacent. A user's
  candidates are the ``window`` users on each side of it in every band: at most
  ``2·window·bands`` per user, linear in the number of users (this is also the cap on the
  bucket share: a bucket larger than ``2·window`` is only compared within the window).
* **re-ranking**: exact cosine of every candidate, the top ``k`` kept by similarity
  descending, then ``neighbor_user_id`` ascending (similarities rounded to 1e-12 so that the
  order does not depend on floating-point summation order).
* **recall estimate**: two disjoint seeded samples of ``recall_sample`` users get their exact
  top ``k`` by brute force (linear in users). With ``auto_bands`` (the default), bands are added
  (doubling the count; each band has its own seeded hyperplanes, so the bands already built are
  kept) until the recall on the *selection* sample reaches ``target_recall`` or ``max_bands``
  would be exceeded. The recall reported is measured on the other, *held-out* sample, which
  chose nothing.

Pure DataFrame-to-DataFrame functions; no I/O.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import math
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from features.contracts import TableContract, register
from features.events import TS_TYPE

SIM_DECIMALS = 12

USER_VECTORS = register(
    TableContract(
        name="user_vectors",
        schema=pa.schema(
            [
                pa.field("user_id", pa.string(), nullable=False),
                pa.field("vector", pa.list_(pa.float32()), nullable=False),
                pa.field("profile_dim", pa.int32(), nullable=False),
                pa.field("behaviour_dim", pa.int32(), nullable=False),
                pa.field("n_events", pa.int64(), nullable=False),
                pa.field("n_positive", pa.int64(), nullable=False),
                pa.field("cutoff_ts", TS_TYPE, nullable=False),
            ]
        ),
        key=("user_id",),
        description="One unit-norm vector per user with an event before the cutoff: profile block + ALS behaviour block (RAR look-alikes).",
        invariants=(
            "every user has at least one event with event_ts < cutoff_ts; nothing at or after the cutoff is used",
            "size(vector) = profile_dim + behaviour_dim for every row; the vector has L2 norm 1 (or is all zeros)",
        ),
    )
)

LOOKALIKE_USERS = register(
    TableContract(
        name="lookalike_users",
        schema=pa.schema(
            [
                pa.field("user_id", pa.string(), nullable=False),
                pa.field("rank", pa.int32(), nullable=False),
                pa.field("neighbor_user_id", pa.string(), nullable=False),
                pa.field("similarity", pa.float64(), nullable=False),
                pa.field("cutoff_ts", TS_TYPE, nullable=False),
            ]
        ),
        key=("user_id", "rank"),
        description="Each user's top-K look-alike users (SimHash LSH candidates, exact cosine re-ranking) as of the cutoff.",
        invariants=(
            "neighbor_user_id != user_id; (user_id, neighbor_user_id) unique",
            "rank = 1..n contiguous per user, similarity non-increasing with rank, in [-1, 1]",
            "min(K, users - 1) rows per user",
        ),
    )
)


# ---------------------------------------------------------------------------------------------
# Events before the cutoff, positives


def as_utc(ts: dt.datetime) -> dt.datetime:
    """``ts`` as an aware UTC datetime (a naive one is read as UTC)."""
    return ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)


def before_cutoff(events, cutoff_ts: dt.datetime):
    """Spark: the events strictly before the cutoff (``event_ts < cutoff_ts``)."""
    from pyspark.sql import functions as F

    return events.where(F.col("event_ts") < F.lit(as_utc(cutoff_ts)))


def positive_column(min_rating: float):
    """Spark column: is the event positive feedback?

    A click where the source logs clicks (``is_click``); else a rating of at least
    ``min_rating`` where it logs ratings; else every event (a play log without either).
    """
    from pyspark.sql import functions as F

    return F.coalesce(F.col("is_click"), F.col("rating") >= F.lit(float(min_rating)), F.lit(True))


# ---------------------------------------------------------------------------------------------
# user_vectors


@dataclass(frozen=True)
class VectorParams:
    """How a user vector is built (``LookalikeSettings`` carries the same fields)."""

    profile_weight: float = 1.0
    behaviour_weight: float = 1.0
    profile_exclude: tuple[str, ...] = ("zip_code",)
    categorical_columns: tuple[str, ...] = ("onehot_feat*",)
    max_categories: int = 32
    als_rank: int = 32
    als_iterations: int = 10
    als_reg: float = 0.05
    als_alpha: float = 10.0
    min_rating: float = 4.0
    seed: int = 20220408


def profile_columns(users, exclude: tuple[str, ...], categorical: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The attribute columns of ``users`` split into (numeric, categorical), in table order.

    ``user_id`` and ``source`` are never attributes; names matching a pattern of ``exclude`` are
    dropped; string columns and names matching a pattern of ``categorical`` are categorical
    (KuaiRand's ``onehot_feat*`` are category ids stored as numbers).
    """
    from pyspark.sql.types import BooleanType, NumericType

    numeric, cats = [], []
    for field in users.schema.fields:
        name = field.name
        if name in ("user_id", "source") or any(fnmatch.fnmatch(name, p) for p in exclude):
            continue
        if any(fnmatch.fnmatch(name, p) for p in categorical) or not isinstance(field.dataType, (NumericType, BooleanType)):
            cats.append(name)
        else:
            numeric.append(name)
    return numeric, cats


def encode_profiles(users, numeric: list[str], categorical: list[str], max_categories: int):
    """Spark: ``(user_id, profile array<double>)`` for every row of ``users``, and its width.

    Numeric: ``s = sign(x)·log1p(|x|)``, then ``(s - mean) / std`` over ``users`` (std 0 -> 0,
    null -> 0). Categorical: one indicator per value among the column's ``max_categories`` most
    frequent non-null values (ties by value); other values and nulls are all zeros. The block is
    L2-normalised (an all-zero block stays zero).
    """
    from pyspark.sql import functions as F

    parts = []
    if numeric:
        squashed = {c: F.signum(F.col(c).cast("double")) * F.log1p(F.abs(F.col(c).cast("double"))) for c in numeric}
        stats = users.select(*[e.alias(c) for c, e in squashed.items()]).agg(
            *[F.avg(c).alias(f"m_{c}") for c in numeric], *[F.stddev_pop(c).alias(f"s_{c}") for c in numeric]
        ).collect()[0]
        for c in numeric:
            mean, std = stats[f"m_{c}"], stats[f"s_{c}"]
            if mean is None or not std:
                parts.append(F.lit(0.0))
            else:
                parts.append(F.coalesce((squashed[c] - F.lit(mean)) / F.lit(std), F.lit(0.0)))
    for c in categorical:
        top = (
            users.where(F.col(c).isNotNull())
            .groupBy(F.col(c).cast("string").alias("v"))
            .count()
            .orderBy(F.desc("count"), "v")
            .limit(max_categories)
            .collect()
        )
        for row in top:
            parts.append(F.when(F.col(c).cast("string") == F.lit(row["v"]), F.lit(1.0)).otherwise(F.lit(0.0)))
    width = len(parts)
    if not width:
        return users.select("user_id", F.array().cast("array<double>").alias("profile")), 0
    raw = users.select("user_id", F.array(*parts).alias("_p"))
    return raw.select("user_id", _unit(F.col("_p")).alias("profile")), width


def _unit(arr):
    """Spark column: ``arr`` divided by its L2 norm (an all-zero array stays zero)."""
    from pyspark.sql import functions as F

    norm = F.sqrt(F.aggregate(arr, F.lit(0.0), lambda acc, x: acc + x * x))
    return F.transform(arr, lambda x: F.when(norm > 0, x / norm).otherwise(F.lit(0.0)))


def behaviour_embedding(interactions, params: VectorParams):
    """Spark: ``(user_id, behaviour array<double>)`` from ALS on implicit feedback.

    ``interactions`` holds ``(user_id, item_id, n_pos)``: positive events per pair, before the
    cutoff. Ids are encoded as dense ranks of the string ids (deterministic); ALS runs with
    ``implicitPrefs`` (confidence ``1 + alpha·n_pos``), a fixed seed and fixed block counts.
    Only users with a positive event get a row. The factors are L2-normalised.
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    users = interactions.select("user_id").distinct().withColumn("u", F.dense_rank().over(Window.orderBy("user_id")) - 1)
    items = interactions.select("item_id").distinct().withColumn("i", F.dense_rank().over(Window.orderBy("item_id")) - 1)
    data = (
        interactions.join(users, "user_id")
        .join(items, "item_id")
        .select(F.col("u").cast("int"), F.col("i").cast("int"), F.col("n_pos").cast("float").alias("r"))
        .orderBy("u", "i")
        .coalesce(1)
    )
    als = ALS(
        rank=params.als_rank,
        maxIter=params.als_iterations,
        regParam=params.als_reg,
        alpha=params.als_alpha,
        implicitPrefs=True,
        userCol="u",
        itemCol="i",
        ratingCol="r",
        seed=params.seed,
        numUserBlocks=1,
        numItemBlocks=1,
        nonnegative=False,
        coldStartStrategy="drop",
    )
    model = als.fit(data)
    factors = model.userFactors.select(F.col("id").alias("u"), F.col("features").cast("array<double>").alias("f"))
    return users.join(factors, "u").select("user_id", _unit(F.col("f")).alias("behaviour"))


def build_user_vectors(events, users, cutoff_ts: dt.datetime, params: VectorParams):
    """Spark: the ``user_vectors`` rows as of ``cutoff_ts``.

    Users: every user with an event strictly before the cutoff. ``users`` (the dimension table,
    or ``None``) gives the profile block; a user without a profile row gets a zero profile block,
    a user without a positive event a zero behaviour block. A block whose weight is 0 is left
    out (width 0).
    """
    from pyspark.sql import functions as F

    if params.profile_weight < 0 or params.behaviour_weight < 0 or params.profile_weight + params.behaviour_weight <= 0:
        raise ValueError("profile_weight and behaviour_weight must be >= 0 and not both 0")
    past = before_cutoff(events, cutoff_ts).withColumn("_pos", positive_column(params.min_rating))
    counts = past.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n_events"), F.sum(F.col("_pos").cast("long")).alias("n_positive")
    )
    out = counts
    blocks = []
    p_dim = b_dim = 0
    if params.profile_weight > 0 and users is not None:
        numeric, cats = profile_columns(users, params.profile_exclude, params.categorical_columns)
        # Statistics are fitted on the users the table describes (those with a past event).
        known = users.join(counts.select("user_id"), "user_id", "left_semi")
        prof, p_dim = encode_profiles(known, numeric, cats, params.max_categories)
        if p_dim:
            out = out.join(prof, "user_id", "left")
            blocks.append(_block("profile", p_dim, params.profile_weight))
    if params.behaviour_weight > 0:
        pairs = past.where("_pos").groupBy("user_id", "item_id").agg(F.count(F.lit(1)).alias("n_pos"))
        if pairs.limit(1).count():
            out = out.join(behaviour_embedding(pairs, params), "user_id", "left")
            b_dim = params.als_rank
            blocks.append(_block("behaviour", b_dim, params.behaviour_weight))
    if not blocks:
        vec = F.array().cast("array<double>")
    else:
        vec = _unit(F.concat(*blocks))
    return out.select(
        "user_id",
        vec.cast("array<float>").alias("vector"),
        F.lit(p_dim).cast("int").alias("profile_dim"),
        F.lit(b_dim).cast("int").alias("behaviour_dim"),
        F.col("n_events").cast("long"),
        F.coalesce(F.col("n_positive"), F.lit(0)).cast("long").alias("n_positive"),
        F.lit(as_utc(cutoff_ts)).alias("cutoff_ts"),
    )


def _block(name: str, width: int, weight: float):
    from pyspark.sql import functions as F

    zeros = F.array_repeat(F.lit(0.0), width)
    return F.transform(F.coalesce(F.col(name), zeros), lambda x: x * F.lit(float(weight)))


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


# ---------------------------------------------------------------------------------------------
# Synthetic vectors for tests and benchmarks


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
