"""The local engine of ``user_vectors``: :func:`features.lookalike.vectors.build_user_vectors`
on Arrow and NumPy in one process, with no Spark (``lookalike.vectors_engine``, docs/lookalike.md).

The same definitions (read that module for the math): per (user, item) events and positives
before the cutoff, the profile block fitted on the users with a past event, the behaviour block
of the local ALS (:mod:`features.lookalike.als`, which the Spark engine also uses below
``als_local_max_entries``), the weighted, normalised concatenation. The rows are the Spark
engine's: the same users, counts, widths and cutoff; the vectors agree to float32 rounding (a
mean, a standard deviation and a norm summed in another order, and ``log1p`` from another math
library, may move a component by an ulp).

Categorical values are compared as strings, as the Spark engine casts them
(:func:`features.columns.spark_strings`: doubles written as the JVM writes them). A categorical
column of a type whose text differs (float32, timestamps, decimals) is not supported here
(:func:`unsupported_columns`): the job uses the Spark engine for it.
"""
from __future__ import annotations

import datetime as dt
import fnmatch

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.lookalike.als import choose_engine as choose_als_engine
from features.lookalike.als import unit_rows, user_behaviour_vectors
from features.lookalike.vectors import VectorParams, positive_mask
from features.columns import encode, micros, spark_strings
from features.timeutil import to_micros

#: Engines of ``user_vectors`` (``lookalike.vectors_engine``).
ENGINES = ("auto", "local", "spark")

#: Columns of ``events`` the local engine reads.
EVENT_COLUMNS = ("user_id", "item_id", "event_ts", "is_click", "rating")


def choose_engine(engine: str, events: int, local_max_events: int) -> str:
    """``local`` or ``spark``: ``engine`` itself unless it is ``auto``, which is ``local`` when the
    job reads at most ``local_max_events`` events (the local engine may still hand over, :class:`NeedsSpark`)."""
    if engine not in ENGINES:
        raise ValueError(f"lookalike.vectors_engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine != "auto":
        return engine
    return "local" if events <= local_max_events else "spark"


class NeedsSpark(Exception):
    """The local engine cannot build these vectors as the Spark engine would: ``str()`` says why
    (a categorical column whose values print differently, or more ALS pairs than the local
    factoriser takes under ``als_engine``)."""


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def _prints_as_spark(t: pa.DataType) -> bool:
    try:
        spark_strings(pa.array([], t))
    except TypeError:
        return False
    return True


def profile_columns(schema: pa.Schema, exclude: tuple[str, ...], categorical: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """:func:`features.lookalike.vectors.profile_columns` on an Arrow schema: (numeric, categorical)."""
    numeric, cats = [], []
    for field in schema:
        name = field.name
        if name in ("user_id", "source") or any(fnmatch.fnmatch(name, p) for p in exclude):
            continue
        if any(fnmatch.fnmatch(name, p) for p in categorical) or not _is_numeric(field.type):
            cats.append(name)
        else:
            numeric.append(name)
    return numeric, cats


def unsupported_columns(users_schema: pa.Schema | None, params: VectorParams) -> list[str]:
    """The categorical profile columns the local engine cannot encode as Spark does (their
    values print differently as strings); empty when it can build these vectors."""
    if users_schema is None or params.profile_weight <= 0:
        return []
    _, cats = profile_columns(users_schema, params.profile_exclude, params.categorical_columns)
    return [c for c in cats if not _prints_as_spark(users_schema.field(c).type)]


def _doubles(col) -> tuple[np.ndarray, np.ndarray]:
    """``(values as float64, null mask)`` of a numeric or boolean column."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    null = col.is_null().to_numpy(zero_copy_only=False)
    values = pc.fill_null(pc.cast(col, pa.float64()), 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    return values, null


def encode_profiles(users: pa.Table, numeric: list[str], categorical: list[str], max_categories: int) -> np.ndarray:
    """The unit profile block of every row of ``users`` (``rows × width``, float64), as
    :func:`features.lookalike.vectors.encode_profiles`: numeric ``sign(x)·log1p(|x|)`` z-scored
    over the rows (population std; std 0, or no value, gives 0; a null gives 0), categorical
    one-hot over the ``max_categories`` most frequent non-null values (by count, then value)."""
    n = users.num_rows
    parts = []
    for c in numeric:
        x, null = _doubles(users.column(c))
        s = np.sign(x) * np.log1p(np.abs(x))
        valid = s[~null]
        if not len(valid) or (not np.isnan(valid).any() and valid.min() == valid.max()):
            parts.append(np.zeros(n))  # no value, or one value: std 0
            continue
        mean = valid.sum() / len(valid)
        std = np.sqrt(np.square(valid - mean).sum() / len(valid))
        z = (s - mean) / std
        parts.append(np.where(null, 0.0, z))
    for c in categorical:
        text = spark_strings(users.column(c))
        counts = pc.value_counts(text.drop_null())
        values = counts.field("values").to_pylist()
        freq = counts.field("counts").to_numpy()
        ranked = sorted(range(len(values)), key=lambda k: (-int(freq[k]), values[k].encode()))[:max_categories]
        if ranked:
            at = pc.index_in(text, value_set=pa.array([values[k] for k in ranked], pa.string()))
            at = pc.fill_null(at, -1).to_numpy(zero_copy_only=False)
            for j in range(len(ranked)):
                parts.append((at == j).astype(np.float64))
    if not parts:
        return np.zeros((n, 0))
    return unit_rows(np.column_stack(parts))


def build_user_vectors_local(events: pa.Table, users: pa.Table | None, cutoff_ts: dt.datetime, params: VectorParams,
                             report: dict | None = None) -> pa.Table:
    """The ``user_vectors`` rows as of ``cutoff_ts`` (as the Spark engine), ordered by ``user_id``.

    ``events``: at least :data:`EVENT_COLUMNS` (events at or after the cutoff are ignored);
    ``users``: the dimension table or ``None``. ``report`` receives ``als_engine`` (always
    ``local``) and ``als_entries``. Raises :class:`NeedsSpark` where the Spark engine is needed.
    """
    from features.lookalike.contracts import USER_VECTORS

    if params.profile_weight < 0 or params.behaviour_weight < 0 or params.profile_weight + params.behaviour_weight <= 0:
        raise ValueError("profile_weight and behaviour_weight must be >= 0 and not both 0")
    bad = unsupported_columns(users.schema if users is not None else None, params)
    if bad:
        raise NeedsSpark(f"categorical profile columns {bad} are not strings, integers, doubles, booleans or dates")
    past = micros(events.column("event_ts")) < to_micros(cutoff_ts)
    events = events.filter(pa.array(past))
    positive = positive_mask(events, params.min_rating)
    user, user_ids = encode(events.column("user_id"))
    item, item_ids = encode(events.column("item_id"))
    n_users = len(user_ids)
    # Per user: its events and positives; per (user, item): its positives (the ALS entries).
    n_events = np.bincount(user, minlength=n_users).astype(np.int64)
    n_positive = np.bincount(user[positive], minlength=n_users).astype(np.int64)
    n_items = int(item.max()) + 1 if len(item) else 1
    keys, n_pos = np.unique(user[positive] * n_items + item[positive], return_counts=True)

    blocks: list[tuple[np.ndarray, float]] = []
    p_dim = b_dim = 0
    if params.profile_weight > 0 and users is not None:
        numeric, cats = profile_columns(users.schema, params.profile_exclude, params.categorical_columns)
        # Fitted on the users the table describes (those with a past event), as the Spark engine.
        known = users.filter(pc.is_in(pc.cast(users.column("user_id"), pa.string()), value_set=user_ids))
        profile = encode_profiles(known, numeric, cats, params.max_categories)
        p_dim = profile.shape[1]
        if p_dim:
            block = np.zeros((n_users, p_dim))
            where = np.searchsorted(user_ids.to_numpy(zero_copy_only=False),
                                    np.asarray(known.column("user_id").to_pylist(), dtype=object))
            block[where] = profile
            blocks.append((block, params.profile_weight))
    if params.behaviour_weight > 0 and len(keys):
        entries = len(keys)
        if choose_als_engine(params.als_engine, entries, params.als_local_max_entries) != "local":
            raise NeedsSpark(f"{entries} ALS pairs: above als_local_max_entries ({params.als_local_max_entries}) "
                             f"or als_engine {params.als_engine!r}")
        ids = user_ids.to_numpy(zero_copy_only=False)
        als_users, vectors = user_behaviour_vectors(
            ids[keys // n_items], item_ids.to_numpy(zero_copy_only=False)[keys % n_items], n_pos.astype(np.float64),
            rank=params.als_rank, iterations=params.als_iterations, reg=params.als_reg, alpha=params.als_alpha,
            seed=params.seed,
        )
        block = np.zeros((n_users, params.als_rank))
        block[np.searchsorted(ids, als_users)] = vectors
        b_dim = params.als_rank
        blocks.append((block, params.behaviour_weight))
        if report is not None:
            report.update(als_engine="local", als_entries=entries)
    elif report is not None and params.behaviour_weight > 0:
        report.update(als_engine="local", als_entries=0)
    if blocks:
        vec = unit_rows(np.column_stack([b * float(w) for b, w in blocks])).astype(np.float32)
    else:
        vec = np.zeros((n_users, 0), dtype=np.float32)
    width = vec.shape[1]
    return pa.table(
        {
            "user_id": user_ids,
            "vector": pa.ListArray.from_arrays(pa.array(np.arange(n_users + 1) * width, pa.int32()),
                                               pa.array(vec.reshape(-1), pa.float32())),
            "profile_dim": pa.array(np.full(n_users, p_dim), pa.int32()),
            "behaviour_dim": pa.array(np.full(n_users, b_dim), pa.int32()),
            "n_events": pa.array(n_events, pa.int64()),
            "n_positive": pa.array(n_positive, pa.int64()),
            "cutoff_ts": pa.array(np.full(n_users, to_micros(cutoff_ts)), USER_VECTORS.schema.field("cutoff_ts").type),
        },
        schema=USER_VECTORS.schema,
    )
