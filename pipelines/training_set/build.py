"""``training_set``: point-in-time features for a spine of examples, on Spark (docs/python-api.md).

A **spine** is one row per example: ``user_id``, optionally ``item_id``, the example time (column
``ts_column``, default ``event_ts``, UTC) and any other columns (labels), passed through. Each
row gets the features asked for (:mod:`pipelines.training_set.spec`), every one computed only
from data strictly before the example time, or from a build (a committed version computed as of
a cutoff or fit window, :mod:`pipelines.training_set.builds`) whose time is at or before it:

* history: the user's events with ``event_ts < t`` in the total order, the last ``max_len``,
  with RoTE columns (:mod:`pipelines.training_set.history`);
* ``users`` / ``items``: the attributes of the version read (snapshots without time), attached
  in the tasks by :mod:`features.attributes`, the kernel the trainers' loaders use;
* ``lookalike_users`` / ``recall_items``: the build with the latest ``cutoff_ts <= t``;
* ``watch_time_labels`` / ``duration_stats``: the build whose fit window ends latest at or before ``t``.
  A label is the example's own event's (by ``event_id`` when the spine has one, else by
  ``user_id``, ``item_id`` and time); statistics are those of the example's duration (the spine's
  ``duration_ms``, else the item's), in whole seconds rounded half to even.

A TTL per table (Feast's semantics) nulls a value whose time (event time, cutoff, fit-window end)
is before ``t - ttl``. The result records the version of every table read, the builds used,
the spine's hash and the code version (:attr:`TrainingSet.metadata`); written out, that record
is in each Parquet file's metadata (key ``recfeat.training_set``) and in the sidecar
``_training_set.json`` of the output directory. Passing ``versions=`` (a mapping, or the path of
an earlier output or sidecar) pins every table and so reproduces the rows exactly.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from features.events import EVENTS
from pipelines.training_set import builds as builds_mod
from pipelines.training_set.history import histories_from_sorted_batches, history_schema
from pipelines.training_set.spec import (
    CUTOFF_TABLES,
    FIT_TABLES,
    HISTORY,
    FeatureError,
    FeatureSpec,
    out_name,
    parse_features,
)
from pipelines.training_set.fit_tables import join_fit_table
from pipelines.training_set.io import _read_output_arrow, load_spine, read_metadata, read_output, spine_hash, write_output
from pipelines.warehouse import Warehouse

RESERVED = ("spine_row", "_t", "_k")
#: How a history treats events at the example time (``training_set(history_ties=...)``).
HISTORY_TIES = ("exclude", "log_order")
UTC = dt.timezone.utc


def code_version() -> str:
    """sha256 (16 hex) of the modules that compute a training set's values."""
    here = Path(__file__).resolve().parent
    root = here.parents[1]
    files = sorted(here.glob("*.py")) + [root / "features/sequences/rote.py", root / "features/sequences/rote_inputs.py",
                                         root / "features/sequences/histories.py", root / "features/attributes.py"]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class TrainingSet:
    """The result: ``df`` (a Spark DataFrame in spine order, column ``spine_row`` first), what it
    read (``metadata``), how many rows got each feature (``report``) and the output ``path``."""

    df: object
    metadata: dict
    path: str | None = None
    report: dict = field(default_factory=dict)

    def to_pandas(self):
        """The rows as pandas, in spine order; ``attrs["recfeat.training_set"]`` holds the metadata."""
        pdf = self.df.toPandas() if self.path is None else read_output(self.path)
        pdf.attrs["recfeat.training_set"] = self.metadata
        return pdf

    def to_arrow(self) -> pa.Table:
        if self.path is not None:
            return _read_output_arrow(self.path)
        return self.df.toArrow()


# ---- spine ---------------------------------------------------------------------------
def _pinned(versions) -> dict[str, int]:
    if versions is None:
        return {}
    if isinstance(versions, (str, os.PathLike)):
        versions = read_metadata(str(versions))["versions"]
    return {str(k): int(v) for k, v in dict(versions).items()}


# ---- the job -------------------------------------------------------------------------
def _choose_build(builds: list, ttl: dt.timedelta | None):
    """Spark expression: index of the build used by each row (null: none at or before ``t``, or
    outside the ttl)."""
    from pyspark.sql import functions as F

    expr = F.lit(None).cast("int")
    for i, b in enumerate(builds):  # later builds win
        ok = F.col("_t") >= F.lit(_us(b.valid_from))
        expr = F.when(ok, F.lit(i)).otherwise(expr)
    if ttl is not None:
        valid = F.lit(None).cast("long")
        for i, b in enumerate(builds):
            valid = F.when(expr == i, F.lit(_us(b.valid_from))).otherwise(valid)
        expr = F.when(valid >= F.col("_t") - F.lit(_td_us(ttl)), expr)
    return expr


def _us(when: dt.datetime) -> int:
    return int((when - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(microseconds=1))


def _td_us(td: dt.timedelta) -> int:
    return int(td / dt.timedelta(microseconds=1))


def training_set(
    spark,
    warehouse: Warehouse,
    spine,
    features,
    *,
    ts_column: str = "event_ts",
    max_len: int | None = None,
    ttl: dict | None = None,
    versions=None,
    settings=None,
    out: str | None = None,
    overwrite: bool = False,
    partitions: int | None = None,
    history_ties: str = "exclude",
) -> TrainingSet:
    """Point-in-time features for every spine row (module docstring). ``settings``: the project
    settings (``sequences.max_len`` and ``sequences.rote_levels`` are the defaults); ``versions``:
    table -> version to read (or an earlier output's path); ``out``: a directory to write.
    ``history_ties``: ``"exclude"`` (default: a history holds the events strictly before the
    example time) or ``"log_order"`` (a spine row with the ``event_id`` of an event of its user
    at its time also sees that user's events at the same time that come before the event in the
    total order, exactly the ``user_sequences`` history of the event; other rows as ``exclude``)."""
    from pyspark.sql import functions as F

    spec: FeatureSpec = parse_features(features, ttl)
    seq = getattr(settings, "sequences", None)
    max_len = int(max_len if max_len is not None else (seq.max_len if seq else 50))
    levels = tuple(seq.rote_levels) if seq else ("year", "month", "day")
    nparts = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    pinned = _pinned(versions)
    read: dict[str, int] = {}

    def version_of(table: str) -> int:
        if table not in read:
            v = pinned.get(table, warehouse.current_version(table))
            if v is None:
                raise FeatureError(f"table {table!r} has no committed version in {warehouse.uri}")
            read[table] = int(v)
        return read[table]

    if history_ties not in HISTORY_TIES:
        raise FeatureError(f"history_ties must be one of {', '.join(HISTORY_TIES)}, got {history_ties!r}")
    base = load_spine(spark, spine, ts_column)
    if history_ties == "log_order" and spec.wants(HISTORY) and "event_id" not in base.columns:
        raise FeatureError("history_ties='log_order' needs an event_id column in the spine (the events it names)")
    spine_cols = [c for c in base.columns if c not in ("spine_row", "_t")]
    if "items" in spec.tables and "item_id" not in base.columns:
        raise FeatureError("items features need an item_id column in the spine")
    # Which build each row uses depends on its time only: chosen on the spine, in one pass.
    found_builds = {t: builds_mod.builds(warehouse, t, version_of(t))
                    for t in (*CUTOFF_TABLES, *FIT_TABLES) if spec.wants(t)}
    for table, found in found_builds.items():
        base = base.withColumn(f"_{table}_build", _choose_build(found, spec.ttl.get(table)))
    base = base.persist()
    aggs = [F.count(F.lit(1)).alias("rows"), F.sum(F.col("_t").isNull().cast("long")).alias("null_ts")]
    for table, found in found_builds.items():
        aggs.append(F.collect_set(f"_{table}_build").alias(f"{table}_chosen"))
        if table in CUTOFF_TABLES:
            first = F.lit(_us(found[0].valid_from)) if found else None
            before = F.lit(True) if first is None else F.col("_t") < first
            aggs.append(F.sum(before.cast("long")).alias(f"{table}_before"))
    counts = base.agg(*aggs).collect()[0].asDict()
    if counts["null_ts"]:
        base.unpersist()
        raise FeatureError(f"{counts['null_ts']} spine rows have no {ts_column!r}")
    result = base
    report: dict = {"rows": int(counts["rows"])}
    used: dict[str, list] = {}
    chosen_builds = {t: sorted(counts[f"{t}_chosen"] or []) for t in found_builds}
    for table in CUTOFF_TABLES:
        if table in found_builds:
            report[f"{table}_rows_before_first_cutoff"] = int(counts[f"{table}_before"] or 0)

    # Narrow features first (joins on the spine's keys), then the histories, which carry every
    # column already attached through their one shuffle by user: no wide row is joined back.
    groups: dict[str, list[str]] = {}
    for table, list_cols in CUTOFF_TABLES.items():
        if not spec.wants(table):
            continue
        found, chosen = found_builds[table], chosen_builds[table]
        want = spec.columns[table] if spec.columns[table] is not None else [*list_cols, "cutoff_ts"]
        bad = [c for c in want if c not in (*list_cols, "cutoff_ts")]
        if bad:
            raise FeatureError(f"{table} has no feature column(s) {bad}: one of {', '.join((*list_cols, 'cutoff_ts'))}")
        idx = f"_{table}_build"
        used[table] = [found[i].record() for i in chosen]
        lists = _cutoff_lists(spark, warehouse, table, found, chosen, list_cols, idx)
        if lists is None:
            for c in want:
                typ = "timestamp" if c == "cutoff_ts" else ("array<double>" if c in ("similarity", "score") else "array<string>")
                result = result.withColumn(out_name(table, c), F.lit(None).cast(typ))
        else:
            lists = lists.select("user_id", idx, *[out_name(table, c) for c in want])
            result = result.join(lists, ["user_id", idx], "left")
        groups[table] = [out_name(table, c) for c in want]

    for table in FIT_TABLES:
        if not spec.wants(table):
            continue
        found, chosen = found_builds[table], chosen_builds[table]
        idx = f"_{table}_build"
        used[table] = [found[i].record() for i in chosen]
        before = set(result.columns)
        result = join_fit_table(spark, warehouse, table, result, found, chosen, spec.columns[table], idx, version_of,
                                 ts_column)
        groups[table] = [c for c in result.columns if c not in before and not c.startswith("_")]

    if spec.wants(HISTORY):
        keep = spec.columns[HISTORY]
        hist_cols = [f.name for f in history_schema(levels) if f.name != "spine_row"]
        if keep is not None:
            unknown = [c for c in keep if c not in hist_cols]
            if unknown:
                raise FeatureError(f"unknown history column(s) {unknown}: one of {', '.join(hist_cols)}")
            hist_cols = [c for c in hist_cols if c in keep]
        result = _histories(spark, warehouse, result, version_of(EVENTS.name), max_len, spec.ttl.get(HISTORY), levels,
                            nparts, history_ties, hist_cols)
        groups[HISTORY] = hist_cols

    for table in ("users", "items"):
        if spec.wants(table):
            before = set(result.columns)
            result, repeated = _attach_dimension(spark, warehouse, result, table, version_of(table), spec.columns[table])
            groups[table] = [c for c in result.columns if c not in before]
            if repeated:  # the last row of each is used (features.attributes); say so
                report[f"{table}_repeated_keys"] = repeated

    feature_cols = [c for t in spec.tables for c in groups.get(t, ())]
    result = result.select("spine_row", *spine_cols, *feature_cols)
    result = result.repartitionByRange(nparts, "spine_row").sortWithinPartitions("spine_row").persist()
    report["non_null"] = _non_null(result, feature_cols)
    metadata = {
        "features": [*spec.tables],
        "feature_columns": {t: spec.columns[t] for t in spec.tables},
        "ts_column": ts_column,
        "max_len": max_len,
        "history_ties": history_ties,
        "rote_levels": list(levels),
        "ttl_s": {t: v.total_seconds() for t, v in spec.ttl.items()},
        "versions": dict(sorted(read.items())),
        "builds": used,
        "spine_rows": report["rows"],
        "spine_sha256": spine_hash(base, spine_cols, report["rows"]),
        "code_version": code_version(),
        "report": report,
    }
    base.unpersist()
    ts = TrainingSet(result, metadata, None, report)
    if out is not None:
        ts.path = write_output(result, metadata, out, overwrite)
    return ts


def _non_null(df, cols: list[str]) -> dict[str, int]:
    """Rows that got each feature: non-null (lists and histories: non-empty)."""
    from pyspark.sql import functions as F

    if not cols:
        return {}
    types = dict(df.dtypes)
    aggs = []
    for c in cols:
        got = F.col(f"`{c}`").isNotNull()
        if types[c].startswith("array"):
            got = got & (F.size(F.col(f"`{c}`")) > 0)
        aggs.append(F.sum(got.cast("long")).alias(c))
    row = df.agg(*aggs).collect()[0].asDict()
    return {c: int(row[c] or 0) for c in cols}


#: Prefix of the spine's columns (and the features already attached) carried through the
#: history shuffle, so that they cannot clash with the event columns of the union.
PAYLOAD = "_sp_"


def _histories(spark, warehouse, base, events_version, max_len, ttl, levels, nparts, ties="exclude", columns=None):
    """``base`` with the history columns (``columns``) of each row, from one shuffle by user of
    the user's events and the rows of ``base``; every column of ``base`` is carried through the
    kernel (:func:`pipelines.training_set.history.histories_of_sorted`), none is joined back."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import from_arrow_schema

    events = warehouse.read_spark(spark, EVENTS.name, version=events_version)
    users = base.select("user_id").distinct()
    ev = events.join(users, "user_id", "left_semi").select(
        "user_id", F.unix_micros("event_ts").alias("_t"), F.lit(1).alias("_k"),
        "source_file", F.col("source_line").cast("long").alias("source_line"), "event_id", "item_id",
        F.col("play_time_ms").cast("long").alias("play_time_ms"), F.lit(None).cast("long").alias("spine_row"),
    )
    carried = [f for f in base.schema.fields if f.name != "spine_row"]
    payload = [F.col(f"`{f.name}`").alias(PAYLOAD + f.name) for f in carried]
    if ties == "log_order":
        # a spine row naming an event of its user at its time takes the event's source order and
        # sorts just before it (module docstring of .history); the others keep null keys, which
        # sort first: before every event of their time
        named = ev.select("user_id", "_t", F.col("event_id").alias("_named"), F.col("source_file").alias("_src_file"),
                          F.col("source_line").alias("_src_line"))
        keyed = base.select("*", F.col("event_id").alias("_named")).join(named, ["user_id", "_t", "_named"], "left")
        sp = keyed.select(
            "user_id", "_t", F.lit(0).alias("_k"), F.col("_src_file").alias("source_file"),
            F.col("_src_line").alias("source_line"),
            F.when(F.col("_src_file").isNotNull() | F.col("_src_line").isNotNull(), F.col("_named"))
            .cast("string").alias("event_id"),
            F.lit(None).cast("string").alias("item_id"), F.lit(None).cast("long").alias("play_time_ms"), "spine_row",
            *payload,
        )
        order = ("user_id", "_t", "source_file", "source_line", "event_id", "_k")
    else:
        sp = base.select(
            "user_id", "_t", F.lit(0).alias("_k"), F.lit(None).cast("string").alias("source_file"),
            F.lit(None).cast("long").alias("source_line"), F.lit(None).cast("string").alias("event_id"),
            F.lit(None).cast("string").alias("item_id"), F.lit(None).cast("long").alias("play_time_ms"), "spine_row",
            *payload,
        )
        order = ("user_id", "_t", "_k", "source_file", "source_line", "event_id")
    both = ev.unionByName(sp, allowMissingColumns=True).repartition(nparts, "user_id").sortWithinPartitions(*order)
    ttl_us = _td_us(ttl) if ttl is not None else None
    hist = history_schema(levels, columns)
    names = [PAYLOAD + f.name for f in carried]
    out_schema = T.StructType([T.StructField(PAYLOAD + f.name, f.dataType, True) for f in carried]
                              + list(from_arrow_schema(hist).fields))

    def kernel(batches):
        yield from histories_from_sorted_batches(batches, max_len, ttl_us, levels, columns, names)

    out = both.mapInArrow(kernel, out_schema)
    return out.select(*[F.col(PAYLOAD + f.name).alias(f.name) for f in carried], *hist.names)


def _attach_dimension(spark, warehouse, result, table: str, version: int, want):
    """``users`` / ``items`` attributes attached in the Spark tasks by :mod:`features.attributes`
    (the kernel the trainers' loaders call): the dimension (small) travels to every task.
    Returns the result and the number of the dimension's repeated keys."""
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import to_arrow_schema

    from features.attributes import DimensionIndex, attach_attributes

    key = "user_id" if table == "users" else "item_id"
    dim_types = warehouse.read_spark(spark, table, version=version).schema  # the Spark types of a Spark read
    cols = [f.name for f in dim_types if f.name != key]
    if want is not None:
        missing = [c for c in want if c not in cols]
        if missing:
            raise FeatureError(f"{table} has no column(s) {missing} (columns: {', '.join(cols)})")
        cols = list(want)
    names = [out_name(table, c) for c in cols]
    fields = [T.StructField(n, dim_types[c].dataType, True) for c, n in zip(cols, names)]
    arrow_types = to_arrow_schema(T.StructType(fields))
    dim = warehouse.read_arrow(table, version, columns=[key, *cols])
    dim = pa.table({key: dim.column(key).cast(pa.string()),
                    **{c: dim.column(c).cast(arrow_types.field(n).type) for c, n in zip(cols, names)}})
    out_schema = T.StructType([*result.schema.fields, *fields])
    repeated = DimensionIndex(dim.column(key)).repeated

    def kernel(batches):
        index = DimensionIndex(dim.column(key))
        for b in batches:
            yield attach_attributes(b, dim, key, cols, names, index)

    return result.mapInArrow(kernel, out_schema), repeated


def _cutoff_lists(spark, warehouse, table, found, chosen, list_cols, idx):
    """Per (user, build index): the build's rows as lists ordered by rank, and its cutoff."""
    from pyspark.sql import functions as F

    frames = []
    for i in chosen:
        df = warehouse.read_spark(spark, table, version=found[i].version)
        frames.append(df.select("user_id", "rank", *list_cols, "cutoff_ts").withColumn(idx, F.lit(i)))
    if not frames:
        return None
    union = frames[0]
    for f in frames[1:]:
        union = union.unionByName(f)
    agg = union.groupBy("user_id", idx).agg(
        F.sort_array(F.collect_list(F.struct("rank", *list_cols))).alias("_rows"),
        F.max("cutoff_ts").alias(out_name(table, "cutoff_ts")),
    )
    return agg.select(
        "user_id", idx, out_name(table, "cutoff_ts"),
        *[F.col(f"_rows.{c}").alias(out_name(table, c)) for c in list_cols],
    )
