"""The check of one committed table: :func:`check_table` (the entry point of every table's check).

It runs the structural contract check (:mod:`pipelines.quality.contract`), the table's GX suite
(:mod:`pipelines.quality.suites`) with its row-count band, and, when given, the family's
invariant counter; it records all of it in the GX data docs (the counts as a validation of a
one-row frame, ``<table>_invariants``) and in the result store read by ``recfeat report``.

One read: the table is read once per check and that read serves the contract check, the GX
frame and the counter (:mod:`pipelines.quality.shared`; the counter runs first and may choose
Spark). Engines: GX validates on pandas when the frame has at most ``pandas_max_rows`` rows
(``QualitySettings.in_process``, the rule the families' counters follow too; the frame is
prepared on Arrow, without Spark, unless the read was Spark's), else on
the Spark DataFrame (GX on Spark runs every metric as Spark jobs, seconds per validation).
Both see the same values: NaN in float columns is turned into null first and timestamps stay
UTC-aware.
"""
from __future__ import annotations

import datetime as dt
import inspect
import threading
from concurrent.futures import wait
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipelines.quality.contract import check_contract
from pipelines.quality.expectations import ERROR, Expectation, SuiteContext, columns_used
from pipelines.quality.frames import arrow_to_pandas, as_utc, lists_as_lengths, nan_to_null, to_pandas
from pipelines.quality.gx_run import Batch, run_gx
from pipelines.quality.results import INFO_COUNTS, TableCheckResult, reports_root, store_result, violations_ok
from pipelines.quality.settings import QualitySettings, settings_params
from pipelines.quality.shared import SharedRead, SharedReadWarehouse
from pipelines.quality.suites import band_batches, declare_suite
from pipelines.quality.tables import contract

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.warehouse import Warehouse

#: Default event-time window when no rule gives one: [2000-01-01, now + 1 day].
DEFAULT_MIN_EVENT_TS = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
DEFAULT_MAX_EVENT_TS_AHEAD = dt.timedelta(days=1)


def check_table(
    spark,
    warehouse: "Warehouse",
    table: str,
    quality_settings: QualitySettings | None,
    *,
    params: dict[str, Any] | None = None,
    partitions: list[str] | None = None,
    invariants: Callable[[], dict[str, int]] | None = None,
    min_event_ts: dt.datetime | dt.date | None = None,
    max_event_ts: dt.datetime | dt.date | None = None,
    run_name: str | None = None,
) -> TableCheckResult:
    """Check the committed ``table``; write data docs and the stored result; return it.

    ``params``: values of the contract's expectation parameters (``max_len`` for the sequences
    tables, ``similarity`` and ``min_co_users`` for ``item_neighbors``, ...; the quality settings
    give ``rating_min``, ``rating_max`` and ``max_rejection_rate``); an expectation whose
    parameter is missing is skipped with a note. ``partitions`` (partitioned tables): the
    partitions to validate; default the ones the table's last commit wrote. ``invariants``: the
    family's counter, returning ``{violation: count}`` (0 = holds). ``min_event_ts`` /
    ``max_event_ts``: the allowed event-time window (default 2000-01-01 .. now + 1 day).
    ``run_name`` labels the validation in data docs (the Dagster run id in checks). Raises
    ``WarehouseError`` when the table has no committed version.
    """
    settings = quality_settings or QualitySettings()
    now = dt.datetime.now(dt.timezone.utc)
    lo = as_utc(min_event_ts) or DEFAULT_MIN_EVENT_TS
    hi = as_utc(max_event_ts) or now + DEFAULT_MAX_EVENT_TS_AHEAD
    c = contract(table)
    manifest = warehouse.manifest(table)
    if c.partition_column is not None:
        if partitions is None:
            partitions = list(manifest.written_partitions) or sorted(manifest.partitions)
        present = [p for p in partitions if p in manifest.partitions]
        rows = sum(manifest.partitions[p].row_count for p in present)
    else:
        partitions, present, rows = [], None, manifest.row_count

    all_params = {**settings_params(settings), **(params or {})}
    ctx = SuiteContext(spark, warehouse, settings, lo, hi, all_params)
    suite = declare_suite(table, ctx)
    notes = list(suite.notes)
    engine = "pandas" if settings.in_process(rows) else "spark"

    # One read of the table serves the contract check, the GX frame and the invariant counter.
    # The counter runs first: when it reads the table with Spark, that DataFrame is the one
    # (not persisted, docs/quality.md); else the table is read with Arrow (engine pandas) or
    # Spark (engine spark).
    shared = SharedRead(warehouse, manifest, present)
    whole = present is None or sorted(present) == sorted(manifest.partitions)
    counter_notes: list[str] = []
    counter_wh = SharedReadWarehouse(warehouse, shared, whole)
    counting = None  # the future of the counts, when counted beside GX
    counts: dict[str, int] | None = None
    if invariants is not None and engine == "pandas":
        # In the process, the counter (Arrow and NumPy, which release the GIL) counts in a thread
        # beside GX on pandas; the check waits only for the kind of read it chose.
        counting = _count_beside(invariants, counter_notes, counter_wh, shared)
        shared.wait_for_kind()
    else:
        counts = _count_invariants(invariants, counter_notes, counter_wh)

    def counted() -> list[Batch]:
        nonlocal counts
        if counting is not None:
            counts = counting.result()
        notes.extend(counter_notes)
        return [_invariants_batch(table, counts)] if counts else []

    batches: list[Batch] = []
    persisted = None
    try:
        if engine == "pandas" and shared.kind != "spark" and suite.arrow_ready:
            frame = shared.arrow()
            outcome = check_contract(spark, warehouse, c, partitions=present, frame=frame)
            frame = suite.prepare_arrow(frame)
            frame = lists_as_lengths(frame.select(columns_used(suite.expectations, frame.column_names)), suite.expectations)
            frame = arrow_to_pandas(frame)
        else:
            df = shared.spark(spark)
            outcome = check_contract(spark, warehouse, c, partitions=present, frame=df)
            df = suite.prepare(df)
            df = nan_to_null(lists_as_lengths(df.select(*columns_used(suite.expectations, df.columns)), suite.expectations))
            if engine == "pandas":
                frame = to_pandas(spark, df)
            else:
                frame = persisted = df.persist()
        batches.append((table, f"{table}_quality", suite.expectations, frame))
        batches += band_batches(warehouse, manifest, table, suite.bands, list(partitions), settings, notes)

        reports = reports_root(warehouse, settings)
        run_name = _safe_name(run_name or "manual")
        expectations, pages, index = run_gx(reports, batches, run_name, now, settings.keep_validations, later=counted)
    finally:
        if counting is not None:
            wait([counting])  # a failed validation still waits for the thread it started
        if persisted is not None:
            persisted.unpersist()

    counts = counts or {}
    # The invariants' outcomes are in the data docs; the result keeps their counts.
    expectations = [e for e in expectations if e.batch != f"{table}_invariants"]
    result = TableCheckResult(
        table=table,
        passed=outcome.passed and all(e.success for e in expectations if e.severity == ERROR) and violations_ok(counts),
        checked_at=now.isoformat(timespec="seconds"),
        table_version=manifest.version,
        partitions=list(partitions),
        rows=rows,
        engine=engine,
        contract_passed=outcome.passed,
        contract_description=outcome.description,
        contract_details={k: int(v) for k, v in outcome.details.items()},
        expectations=expectations,
        notes=notes,
        data_docs_index=index,
        validation_page=pages.get(table, ""),
        validation_pages=pages,
        run_name=run_name,
        invariants=counts,
        invariants_checked=invariants is not None,
        invariants_page=pages.get(f"{table}_invariants", ""),
        params={k: str(v) for k, v in sorted(all_params.items()) if k in c.parameters or k in (params or {})},
    )
    store_result(reports, result)
    return result


def validate_table(
    spark,
    warehouse: "Warehouse",
    table: str,
    settings: QualitySettings | None = None,
    *,
    partitions: list[str] | None = None,
    min_event_ts: dt.datetime | dt.date | None = None,
    max_event_ts: dt.datetime | dt.date | None = None,
    run_name: str | None = None,
    params: dict[str, Any] | None = None,
) -> TableCheckResult:
    """:func:`check_table` without an invariant counter (the contract check and the GX suite)."""
    return check_table(
        spark, warehouse, table, settings, params=params, partitions=partitions,
        min_event_ts=min_event_ts, max_event_ts=max_event_ts, run_name=run_name,
    )


def _count_invariants(counter: Callable[..., dict[str, int]] | None, notes: list[str], warehouse=None) -> dict[str, int] | None:
    """The counter's counts; a counter that raises counts as one violation ``counter_failed``.

    A counter that takes an argument gets ``warehouse`` (the check's shared read of the table).
    """
    if counter is None:
        return None
    try:
        raw = counter(warehouse) if _takes_argument(counter) else counter()
        counts = {str(k): int(v) for k, v in raw.items()}
    except Exception as exc:  # noqa: BLE001 - reported in the result, which then fails
        notes.append(f"the invariant counter raised {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        return {"counter_failed": 1}
    if not counts:  # a counter that counted nothing cannot pass
        notes.append("the invariant counter returned no counts")
        return {"counter_returned_no_counts": 1}
    return counts


def _count_beside(counter, notes: list[str], warehouse, shared: SharedRead):
    """:func:`_count_invariants` started in a thread of its own; the future of its counts.
    However the counter ends, the shared read is settled, so a check waiting for the kind of
    read (:meth:`SharedRead.wait_for_kind`) never waits forever."""
    from concurrent.futures import Future

    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(_count_invariants(counter, notes, warehouse))
        except BaseException as exc:  # noqa: BLE001 - raised by future.result()
            future.set_exception(exc)
        finally:
            shared.settle()

    threading.Thread(target=run, name=f"recfeat-invariants-{shared.table}", daemon=True).start()
    return future


def _takes_argument(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _invariants_batch(table: str, counts: dict[str, int]) -> Batch:
    """A one-row frame, one column per count; each violation count expected to be 0.

    Counts named in ``INFO_COUNTS`` (``rows``) are shown, not judged.
    """
    import pandas as pd

    frame = pd.DataFrame([counts], columns=list(counts)).astype("int64")
    expectations = [
        Expectation(
            "ExpectColumnValuesToBeBetween",
            {"column": name, "min_value": 0, "max_value": 0},
            description=f"invariant {name}: no violations (the family's invariant counter)",
        )
        if name not in INFO_COUNTS
        else Expectation(
            "ExpectColumnValuesToBeBetween",
            {"column": name, "min_value": 0},
            description=f"{name}: counted by the family's invariant counter (information, not a violation)",
        )
        for name in counts
    ]
    return (f"{table}_invariants", f"{table}_invariants", expectations, frame)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "manual"
