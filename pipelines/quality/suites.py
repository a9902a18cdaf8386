"""The suite of each table: its contract's expectations plus the rules that need code.

:func:`declare_suite` builds a table's suite from its contract (key not null and unique,
non-nullable columns not null, the declarative expectations of ``features``) and then runs the
table's builder, if one is registered with :func:`suite_for`, for rules that read other tables or
need a computed column: the referential integrity of ``events`` to ``users`` and ``items``, and
the balance and rejection rate of ``ingest_runs``. Row-count bands compare a table with its
previous partition or version, both read from the warehouse manifests (no data is scanned).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from features.contracts import ColumnExpectation
from pipelines.quality.expectations import (
    WARNING,
    Expectation,
    SuiteContext,
    TableSuite,
    contract_expectations,
    declared_expectations,
)
from pipelines.quality.tables import contract

if TYPE_CHECKING:  # pragma: no cover
    from features.layout import Manifest
    from pipelines.warehouse import Warehouse

_BUILDERS: dict[str, Callable[[SuiteContext, TableSuite], None]] = {}
_WARNING_CHECKS: dict[str, str] = {}


def suite_for(table: str, warning_check: str | None = None):
    """Register the table-specific part of a table's suite (decorator).

    The decorated function receives the :class:`SuiteContext` and the contract suite, and adds
    expectations, a ``derive`` step or notes to it. ``warning_check`` names the non-blocking
    Dagster check that reports the table's warning-level expectations
    (``<table>_<warning_check>``).
    """

    def register(fn: Callable[[SuiteContext, TableSuite], None]):
        _BUILDERS[table] = fn
        if warning_check:
            _WARNING_CHECKS[table] = warning_check
        return fn

    return register


def warning_check_name(table: str) -> str | None:
    """``<table>_<name>`` of the table's non-blocking warning check, or ``None``."""
    name = _WARNING_CHECKS.get(table)
    return f"{table}_{name}" if name else None


def declare_suite(table: str, ctx: SuiteContext) -> TableSuite:
    """The suite of ``table``: contract expectations, declared expectations, registered extras."""
    c = contract(table)
    params = {"min_event_ts": ctx.min_event_ts, "max_event_ts": ctx.max_event_ts, **ctx.params}
    suite = declared_expectations(c, params, session_zone(ctx.spark))
    suite.expectations = contract_expectations(c) + suite.expectations
    builder = _BUILDERS.get(table)
    if builder is not None:
        builder(ctx, suite)
    return suite


def session_zone(spark) -> str:
    """The session time zone; a ``pipelines.spark.LazySession`` not yet started answers from its
    settings, without starting Spark."""
    from pipelines.spark import LazySession

    if isinstance(spark, LazySession) and not spark.started:
        return spark.time_zone
    return spark.conf.get("spark.sql.session.timeZone") or "UTC"


@suite_for("events", warning_check="referential_integrity")
def _events_suite(ctx: SuiteContext, suite: TableSuite) -> None:
    """Referential integrity: every ``user_id`` (``item_id``) is in ``users`` (``items``).

    A left join of the events on the distinct keys of the dimension (Spark picks a broadcast
    join when the keys are small) yields, per event, the id when it is unknown to the dimension,
    else null; GX then expects that column to be null. The dimension is read at its committed
    version; a null id is left to the not-null check.
    """
    from pyspark.sql import functions as F

    severity = ctx.settings.referential_integrity
    dims = []
    for key, dim in (("user_id", "users"), ("item_id", "items")):
        if not ctx.warehouse.exists(dim):
            suite.notes.append(f"{dim} has no committed version: {key} referential integrity not checked")
            continue
        out = f"{key}_not_in_{dim}"
        dims.append((key, dim, out))
        suite.expectations.append(
            Expectation(
                "ExpectColumnValuesToBeNull",
                {"column": out},
                severity=severity,
                description=f"every events.{key} must exist in {dim}.{key} ({out} holds the unknown ones; severity {severity})",
            )
        )

    def derive(df):
        for key, dim, out in dims:
            keys = (
                ctx.warehouse.read_spark(ctx.spark, dim)
                .select(F.col(key).alias("_dim_key"))
                .where(F.col("_dim_key").isNotNull())
                .distinct()
            )
            df = (
                df.join(keys, F.col(key) == F.col("_dim_key"), "left")
                .withColumn(out, F.when(F.col(key).isNotNull() & F.col("_dim_key").isNull(), F.col(key)))
                .drop("_dim_key")
            )
        return df

    def derive_arrow(table):
        import pyarrow as pa
        import pyarrow.compute as pc

        for key, dim, out in dims:
            keys = ctx.warehouse.read_arrow(dim, columns=[key]).column(key).drop_null().unique()
            ids = table.column(key)
            unknown = pc.and_(pc.is_valid(ids), pc.invert(pc.is_in(ids, value_set=keys)))
            table = table.append_column(out, pc.if_else(unknown, ids, pa.nulls(len(ids), ids.type)))
        return table

    suite.derive = derive
    suite.derive_arrow = derive_arrow


@suite_for("ingest_runs", warning_check="rejection_rate")
def _ingest_runs_suite(ctx: SuiteContext, suite: TableSuite) -> None:
    """The balance of every run (ERROR) and the rejection rate of the latest run (WARN).

    ``unaccounted_records`` = records_in - (new_events + already_present + outside_window +
    rejected + duplicates) must be 0. ``rejection_rate`` = rejected / records_in of the run that
    finished last (null on the other rows, so an old run's rate warns only once) must not exceed
    ``quality.max_rejection_rate``.
    """
    from pyspark.sql import functions as F

    limit = ctx.params.get("max_rejection_rate")
    suite.expectations.append(
        Expectation(
            "ExpectColumnValuesToBeBetween",
            {"column": "unaccounted_records", "min_value": 0, "max_value": 0},
            description="records_in = new_events + already_present + outside_window + rejected + duplicates "
            "(unaccounted_records, derived by Spark, is 0)",
        )
    )
    suite.expectations.append(
        Expectation(
            "ExpectColumnValuesToBeBetween",
            {"column": "rejection_rate", "min_value": 0, "max_value": limit},
            severity=WARNING,
            description=f"rejected / records_in of the latest run (rejection_rate, derived by Spark) at most {limit} "
            "(quality.max_rejection_rate; a warning, never blocks)",
        )
    )

    def derive(df):
        parts = ("new_events", "already_present", "outside_window", "rejected", "duplicates")
        accounted = sum((F.col(c) for c in parts[1:]), F.col(parts[0]))
        latest = df.agg(F.max("finished_at")).collect()[0][0]
        rate = F.when(F.col("records_in") > 0, F.col("rejected") / F.col("records_in"))
        return df.withColumn("unaccounted_records", F.col("records_in") - accounted).withColumn(
            "rejection_rate", F.when(F.col("finished_at") == F.lit(latest), rate) if latest is not None else F.lit(None).cast("double")
        )

    def derive_arrow(table):
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = ("new_events", "already_present", "outside_window", "rejected", "duplicates")
        accounted = table.column(parts[0])
        for c in parts[1:]:
            accounted = pc.add(accounted, table.column(c))
        n = table.num_rows
        latest = pc.max(table.column("finished_at"))
        records, rejected = pc.cast(table.column("records_in"), pa.float64()), pc.cast(table.column("rejected"), pa.float64())
        rate = pc.if_else(pc.greater(records, 0), pc.divide(rejected, records), pa.nulls(n, pa.float64()))
        if latest.is_valid:
            # Spark's F.when: a null condition (finished_at null) gives null
            is_latest = pc.fill_null(pc.equal(table.column("finished_at"), latest), False)
            rate = pc.if_else(is_latest, rate, pa.nulls(n, pa.float64()))
        else:
            rate = pa.nulls(n, pa.float64())
        table = table.append_column("unaccounted_records", pc.subtract(table.column("records_in"), accounted))
        return table.append_column("rejection_rate", rate)

    suite.derive = derive
    suite.derive_arrow = derive_arrow


# ---- row-count bands ---------------------------------------------------------------------
def partition_row_counts(manifest: "Manifest", partitions: list[str]) -> list[dict[str, Any]]:
    """Per validated partition: its rows, the previous committed partition and its rows, the ratio.

    "Previous" is the latest committed partition before it (gaps skipped). A validated
    partition absent from the manifest (written but empty) counts 0 rows. The ratio is null when
    there is no previous partition (the band is then not applied).
    """
    committed = sorted(manifest.partitions)
    rows = []
    for p in sorted(set(partitions)):
        entry = manifest.partitions.get(p)
        count = entry.row_count if entry is not None else 0
        earlier = [k for k in committed if k < p]
        prev = earlier[-1] if earlier else None
        prev_count = manifest.partitions[prev].row_count if prev is not None else None
        ratio = count / prev_count if prev_count else None
        rows.append(
            {
                "partition": p,
                "row_count": count,
                "previous_partition": prev,
                "previous_row_count": prev_count,
                "ratio_to_previous": ratio,
            }
        )
    return rows


def version_row_counts(warehouse: "Warehouse", manifest: "Manifest") -> list[dict[str, Any]]:
    """The table's rows, the previous readable version and its rows, the ratio (one row).

    The ratio is null when no earlier version can be read (or it had no rows).
    """
    try:
        earlier = [v for v in warehouse.versions(manifest.table) if v < manifest.version]
        prev = max(earlier) if earlier else None
        prev_count = warehouse.manifest(manifest.table, prev).row_count if prev is not None else None
    except Exception:  # noqa: BLE001 - an unreadable history: no band rather than no check
        prev, prev_count = None, None
    ratio = manifest.row_count / prev_count if prev_count else None
    return [
        {
            "version": manifest.version,
            "row_count": manifest.row_count,
            "previous_version": prev,
            "previous_row_count": prev_count,
            "ratio_to_previous": ratio,
        }
    ]


def row_count_expectation(settings, severity: str = "error") -> Expectation:
    return Expectation(
        "ExpectColumnValuesToBeBetween",
        {"column": "ratio_to_previous", "min_value": settings.row_count_min_ratio, "max_value": settings.row_count_max_ratio},
        severity=severity,
    )


def band_batches(warehouse: "Warehouse", manifest: "Manifest", table: str, bands: list[ColumnExpectation],
                 partitions: list[str], settings, notes: list[str]) -> list[tuple[str, str, list[Expectation], Any]]:
    """The (batch, suite, expectations, frame) of each row-count band of the table."""
    import pandas as pd

    out = []
    for band in bands:
        if band.mode == "partition":
            if not partitions:
                continue
            counts, batch = partition_row_counts(manifest, partitions), f"{table}_partition_row_counts"
            for c in counts:
                if c["previous_partition"] is None:
                    notes.append(f"{c['partition']}: no previous partition, row-count band not applied")
        else:
            counts, batch = version_row_counts(warehouse, manifest), f"{table}_version_row_counts"
            if counts[0]["ratio_to_previous"] is None:
                notes.append(f"version {manifest.version}: no previous version with rows, row-count band not applied")
        frame = pd.DataFrame(counts, columns=list(counts[0])).astype({"ratio_to_previous": "float64"})
        out.append((batch, f"{table}_row_count_band", [row_count_expectation(settings, band.severity)], frame))
    return out
