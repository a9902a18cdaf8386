"""User vectors as of a cutoff: the events before it, profile encoding, the ALS behaviour block."""
from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass

from features.lookalike.als import choose_engine

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


def positive_mask(events, min_rating: float):
    """Arrow: :func:`positive_column` as a boolean NumPy mask over an Arrow table of events
    (``is_click``, ``rating``): ``is_click`` where it is set; else ``rating >= min_rating``
    where a rating is set (NaN counts as at least any number, as Spark orders it); else true."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rating = events["rating"]
    by_rating = pc.or_(pc.greater_equal(rating, float(min_rating)), pc.is_nan(rating))
    return pc.coalesce(events["is_click"], by_rating, pa.scalar(True)).to_numpy(zero_copy_only=False).astype(bool)


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
    als_engine: str = "auto"
    als_local_max_entries: int = 1_000_000


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
    for c, values in _top_values(users, categorical, max_categories).items():
        for v in values:
            parts.append(F.when(F.col(c).cast("string") == F.lit(v), F.lit(1.0)).otherwise(F.lit(0.0)))
    width = len(parts)
    if not width:
        return users.select("user_id", F.array().cast("array<double>").alias("profile")), 0
    raw = users.select("user_id", F.array(*parts).alias("_p"))
    return raw.select("user_id", _unit(F.col("_p")).alias("profile")), width


def _top_values(users, columns: list[str], max_categories: int) -> dict[str, list[str]]:
    """Each column's ``max_categories`` most frequent non-null values (as strings), by count
    descending then value ascending; one Spark job for all the columns (not one per column)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not columns:
        return {}
    cells = F.explode(F.array(*[
        F.struct(F.lit(j).alias("c"), F.col(c).cast("string").alias("v")) for j, c in enumerate(columns)
    ])).alias("cell")
    counts = users.select(cells).select("cell.c", "cell.v").where(F.col("v").isNotNull()).groupBy("c", "v").count()
    ranked = counts.withColumn("_r", F.row_number().over(Window.partitionBy("c").orderBy(F.desc("count"), "v")))
    rows = ranked.where(F.col("_r") <= max_categories).select("c", "v", "_r").collect()
    out: dict[str, list[str]] = {c: [] for c in columns}
    for row in sorted(rows, key=lambda r: (r["c"], r["_r"])):
        out[columns[row["c"]]].append(row["v"])
    return out


def _unit(arr):
    """Spark column: ``arr`` divided by its L2 norm (an all-zero array stays zero).

    The squared norm is the accumulator of one ``aggregate`` and the division runs in its
    ``finish``, so it is computed once per row: a norm written inside ``transform``'s lambda
    would be re-aggregated for every element (quadratic in the width; Spark does not hoist it).
    """
    from pyspark.sql import functions as F

    return F.aggregate(
        arr, F.lit(0.0), lambda acc, x: acc + x * x,
        lambda sq: F.transform(arr, lambda x: F.when(sq > 0, x / F.sqrt(sq)).otherwise(F.lit(0.0))),
    )


def behaviour_embedding(interactions, params: VectorParams, report: dict | None = None):
    """Spark: ``(user_id, behaviour array<double>)`` from ALS on implicit feedback.

    ``interactions`` holds ``(user_id, item_id, n_pos)``: positive events per pair, before the
    cutoff. Ids are encoded as dense ranks of the string ids (deterministic); ALS runs with
    ``implicitPrefs`` (confidence ``1 + alpha·n_pos``, ridge ``als_reg`` times the user's or item's
    number of pairs) and a fixed seed. Only users with a positive event get a row. The factors
    are L2-normalised.

    Engine (``params.als_engine``): ``local`` collects the pairs to the driver and factorises
    them with :func:`features.lookalike.als.user_behaviour_vectors` (NumPy, same objective and
    update as Spark's); ``spark`` runs Spark ML's ALS (one block each way); ``auto`` counts the
    pairs and is ``local`` up to ``als_local_max_entries`` of them. ``report``, when given,
    receives ``als_engine`` (the engine used) and, when counted, ``als_entries``.
    """
    engine = params.als_engine
    if engine == "auto":
        entries = interactions.count()
        engine = choose_engine(engine, entries, params.als_local_max_entries)
        if report is not None:
            report["als_entries"] = entries
    else:
        engine = choose_engine(engine, 0, params.als_local_max_entries)
    if report is not None:
        report["als_engine"] = engine
    if engine == "local":
        return _local_behaviour(interactions, params)
    return _spark_behaviour(interactions, params)


def _local_behaviour(interactions, params: VectorParams):
    """The ``local`` engine: collect the pairs, factorise in the driver, hand back a DataFrame."""
    pdf = interactions.select("user_id", "item_id", "n_pos").toPandas()
    return _local_behaviour_from(interactions.sparkSession, pdf, params)


def _local_behaviour_from(spark, pdf, params: VectorParams):
    """The local engine on pairs already in the driver (a pandas frame of ``user_id, item_id, n_pos``)."""
    import pandas as pd

    from features.lookalike.als import user_behaviour_vectors

    users, vectors = user_behaviour_vectors(
        pdf["user_id"].to_numpy(), pdf["item_id"].to_numpy(), pdf["n_pos"].to_numpy(dtype="float64"),
        rank=params.als_rank, iterations=params.als_iterations, reg=params.als_reg, alpha=params.als_alpha,
        seed=params.seed,
    )
    out = pd.DataFrame({"user_id": users.astype(object), "behaviour": list(vectors)})
    return spark.createDataFrame(out, "user_id string, behaviour array<double>")


def _spark_behaviour(interactions, params: VectorParams):
    """The ``spark`` engine: Spark ML ALS with one block each way, fixed seed."""
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


def _behaviour_block(pairs, params: VectorParams, report: dict | None):
    """The behaviour block of :func:`build_user_vectors`, or ``None`` when there is no positive pair.

    One Spark job decides and, for the local engine, also fetches: ``auto`` collects at most
    ``als_local_max_entries + 1`` pairs (and falls back to Spark ML when that many come back, so
    above the threshold up to that many rows are fetched for nothing), ``local`` collects every
    pair (unbounded: for builds known to be small), ``spark`` only counts them.
    """
    if params.als_engine == "spark":
        entries = pairs.count()
        local = None
    else:
        cap = params.als_local_max_entries
        local = (pairs if params.als_engine == "local" else pairs.limit(cap + 1)).select("user_id", "item_id", "n_pos").toPandas()
        entries = len(local)
    engine = choose_engine(params.als_engine, entries, params.als_local_max_entries)
    if report is not None:
        report["als_engine"] = engine
        if engine == "local" or params.als_engine == "spark":
            report["als_entries"] = entries  # auto above the threshold only knows "more than the cap"
    if not entries:
        return None
    if engine == "local":
        return _local_behaviour_from(pairs.sparkSession, local, params)
    return _spark_behaviour(pairs, params)


def build_user_vectors(events, users, cutoff_ts: dt.datetime, params: VectorParams, report: dict | None = None):
    """Spark: the ``user_vectors`` rows as of ``cutoff_ts``.

    Users: every user with an event strictly before the cutoff. ``users`` (the dimension table,
    or ``None``) gives the profile block; a user without a profile row gets a zero profile block,
    a user without a positive event a zero behaviour block. A block whose weight is 0 is left
    out (width 0). ``report``, when given, receives how the behaviour block was computed
    (:func:`behaviour_embedding`).
    """
    from pyspark.sql import functions as F

    if params.profile_weight < 0 or params.behaviour_weight < 0 or params.profile_weight + params.behaviour_weight <= 0:
        raise ValueError("profile_weight and behaviour_weight must be >= 0 and not both 0")
    past = before_cutoff(events, cutoff_ts).withColumn("_pos", positive_column(params.min_rating))
    # One scan of the events: per (user, item) its events and positives, kept (local checkpoint:
    # in the executors, lineage cut) for the profile statistics, the ALS pairs and the write,
    # which would each scan and aggregate the events again. At most one row per event.
    per_pair = past.groupBy("user_id", "item_id").agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("_pos").cast("long")).alias("n_pos")
    ).localCheckpoint()
    counts = per_pair.groupBy("user_id").agg(F.sum("n").alias("n_events"), F.sum("n_pos").alias("n_positive"))
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
        pairs = per_pair.where(F.col("n_pos") > 0).select("user_id", "item_id", "n_pos")
        behaviour = _behaviour_block(pairs, params, report)
        if behaviour is not None:
            out = out.join(behaviour, "user_id", "left")
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
