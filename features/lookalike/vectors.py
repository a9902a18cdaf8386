"""User vectors as of a cutoff: the events before it, profile encoding, the ALS behaviour block."""
from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass

from features.timeutil import as_utc


# ---------------------------------------------------------------------------------------------
# Events before the cutoff, positives


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
