"""Asset checks: one blocking quality check per table (contract check + GX suite).

``<table>_quality`` (blocking, ERROR severity) runs :func:`pipelines.quality_suites.validate_table`:
the structural contract check and the table's Great Expectations suite. When it fails, Dagster
skips the assets downstream of the table in the same run. Tables whose suite has warning-level
expectations (``events``: referential integrity to ``users`` and ``items``) get a second,
non-blocking check ``<table>_<name>`` (``events_referential_integrity``) with WARN severity,
computed in the same step from the same validation (one ``multi_asset_check``), so warnings
show up in the UI without ever stopping a run.

Both record the data docs page of the validation (``data_docs``) and the site index.
"""

import datetime as dt

import dagster as dg

from features.dimensions import ITEMS, USERS
from features.events import EVENTS
from features.rote import ROTE_FEATURES
from features.sequences import USER_SEQUENCES
from features.synthetic_truth import SYNTHETIC_TRUTH
from orchestration.metadata import invariant_check_result
from orchestration.resources import SettingsResource, SparkResource, WarehouseResource
from pipelines.quality_suites import ERROR, QualitySettings, warning_check_name
from pipelines.settings import Settings


def build_checks(settings: Settings) -> list[dg.AssetChecksDefinition]:
    """The quality checks of every table of the active source's asset graph."""
    names = [EVENTS.name, USERS.name, ITEMS.name] + ([SYNTHETIC_TRUTH.name] if settings.source.kind == "synthetic" else [])
    return [quality_check(name) for name in names] + [sequences_check(), rote_check()]


def sequence_invariants_check(table: str, counter: str, description: str) -> dg.AssetChecksDefinition:
    """Blocking ``<table>_invariants``: ``pipelines.sequences.<counter>`` counts the violations."""

    @dg.asset_check(asset=table, name=f"{table}_invariants", blocking=True, description=description)
    def _check(settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource) -> dg.AssetCheckResult:
        import pipelines.sequences as jobs

        counts = getattr(jobs, counter)(spark.get_session(), warehouse.get(), settings.get().sequences)
        return invariant_check_result(counts)

    return _check


def sequences_check() -> dg.AssetChecksDefinition:
    """Blocking: the invariants of ``user_sequences`` (no future in a history, lengths, splits)."""
    return sequence_invariants_check(
        USER_SEQUENCES.name,
        "check_sequences",
        "No history event after its target; hist_len <= max_len; arrays aligned; split counts per user.",
    )


def rote_check() -> dg.AssetChecksDefinition:
    """Blocking: ``rote_features`` matches ``user_sequences`` row for row, lists aligned, gaps >= 0."""
    return sequence_invariants_check(
        ROTE_FEATURES.name,
        "check_rote",
        "One row per user_sequences row; every list has hist_len elements; gaps >= 0; query time <= target time.",
    )


def quality_settings(settings: Settings) -> QualitySettings:
    """The quality settings of the project."""
    return settings.quality


def event_window(settings: Settings, now: dt.datetime | None = None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The allowed event-time window, inclusive, from the ingestion rules (``settings.rules``).

    ``rules.min_event_ts`` (a UTC date) is the lower bound; ``rules.max_event_ts`` (a UTC date,
    exclusive) the upper one, else now + ``rules.future_tolerance_s``. Missing rules (or fields)
    give ``None``: the suite's defaults, 2000-01-01 .. now + 1 day.
    """
    rules = getattr(settings, "rules", None)
    lo = _midnight(getattr(rules, "min_event_ts", None))
    hi = _midnight(getattr(rules, "max_event_ts", None))
    if hi is not None:
        hi -= dt.timedelta(microseconds=1)
    elif getattr(rules, "future_tolerance_s", None) is not None:
        hi = (now or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(seconds=rules.future_tolerance_s)
    return lo, hi


def run_partitions(tags: dict[str, str]) -> list[str] | None:
    """The daily partition keys a run covers (single partition or range tags), else ``None``.

    ``None`` makes the suite validate the partitions the table's last commit wrote (a check
    launched on its own). From the tags, a day of the range that the commit left empty is
    validated too: it counts 0 rows in the row-count band.
    """
    single = tags.get("dagster/partition")
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if single:
        return [single]
    if not (start and end):
        return None
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _midnight(day) -> dt.datetime | None:
    if day is None:
        return None
    if isinstance(day, dt.datetime):
        return day if day.tzinfo else day.replace(tzinfo=dt.timezone.utc)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def quality_check(table: str) -> dg.AssetChecksDefinition:
    quality_name = f"{table}_quality"
    warn_name = warning_check_name(table)
    specs = [
        dg.AssetCheckSpec(
            quality_name,
            asset=table,
            blocking=True,
            description=f"{table}: contract (schema, key) and data-quality suite (docs/quality.md); blocks downstream assets.",
        )
    ]
    if warn_name:
        specs.append(
            dg.AssetCheckSpec(
                warn_name,
                asset=table,
                blocking=False,
                description=f"{table}: warning-level expectations of the quality suite (never blocks).",
            )
        )

    @dg.multi_asset_check(specs=specs, name=f"{table}_quality_checks", compute_kind="great_expectations")
    def _check(
        context: dg.AssetCheckExecutionContext,
        settings: SettingsResource,
        warehouse: WarehouseResource,
        spark: SparkResource,
    ):
        from features.contracts import get_contract
        from pipelines.quality_suites import validate_table

        wh = warehouse.get()
        if not wh.exists(table):
            yield dg.AssetCheckResult(
                check_name=quality_name, asset_key=table, passed=False, description=f"table {table!r} has no committed version"
            )
            if warn_name:
                yield dg.AssetCheckResult(
                    check_name=warn_name, asset_key=table, passed=True, severity=dg.AssetCheckSeverity.WARN,
                    description="not run: the table has no committed version",
                )
            return
        s = settings.get()
        lo, hi = event_window(s)
        result = validate_table(
            spark.get_session(),
            wh,
            table,
            quality_settings(s),
            partitions=run_partitions(context.run.tags) if get_contract(table).partition_column else None,
            min_event_ts=lo,
            max_event_ts=hi,
            run_name=context.run.run_id,
        )
        context.log.info(result.summary())
        docs = {
            "data_docs": dg.MetadataValue.path(result.validation_page),
            "data_docs_url": dg.MetadataValue.url("file://" + result.validation_page),
            "data_docs_index": dg.MetadataValue.path(result.data_docs_index),
        }
        errors = [e for e in result.expectations if e.severity == ERROR]
        meta = {
            **docs,
            "rows_validated": result.rows,
            "table_version": result.table_version,
            "engine": result.engine,
            "expectations": len(errors),
            "expectations_failed": len(result.failures),
            "failed_expectations": dg.MetadataValue.md(_bullets([e.label() for e in result.failures])),
            "contract": result.contract_description,
            **{f"contract_{k}": v for k, v in result.contract_details.items()},
        }
        if result.partitions:
            meta["partitions"] = _short_list(result.partitions)
        if result.notes:
            meta["notes"] = dg.MetadataValue.md(_bullets(result.notes))
        if result.warnings and not warn_name:
            meta["warnings"] = dg.MetadataValue.md(_bullets([e.label() for e in result.warnings]))
        yield dg.AssetCheckResult(
            check_name=quality_name,
            asset_key=table,
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=result.summary()[:1000],
            metadata=meta,
        )
        if warn_name:
            warned = [e for e in result.expectations if e.severity != ERROR]
            failed = [e for e in warned if not e.success]
            yield dg.AssetCheckResult(
                check_name=warn_name,
                asset_key=table,
                passed=not failed,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(e.label() for e in failed)[:1000] or f"{len(warned)} warning-level expectations passed",
                metadata={
                    **docs,
                    "expectations": len(warned),
                    "expectations_failed": len(failed),
                    "unexpected_rows": sum(e.unexpected_count or 0 for e in failed),
                    "failed_expectations": dg.MetadataValue.md(_bullets([e.label() for e in failed])),
                },
            )

    return _check


def _bullets(items: list[str]) -> str:
    return "\n".join(f"- {i}" for i in items) or "(none)"


def _short_list(values: list[str], limit: int = 10) -> str:
    return ", ".join(values[:limit]) + (f" ... ({len(values)} in all)" if len(values) > limit else "")
