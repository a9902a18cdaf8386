"""Data-quality suites (Great Expectations 1.x) for the warehouse tables.

Every table gets a suite declared from its contract (key columns not null and unique, every
column the contract declares non-nullable not null); tables with more to check add their own
expectations and derived columns through :func:`suite_for` (``events`` and ``synthetic_truth``
below). A partitioned table also gets a row-count band: each validated partition's row count
against the previous committed partition's count, both read from the warehouse manifest.

:func:`validate_table` runs the structural contract check (:mod:`pipelines.quality`) and the
suite on the committed table (for a partitioned table: the partitions its last commit wrote),
writes Great Expectations data docs to ``<reports>/gx/`` (``index.html`` plus one page per
validation) and the result as JSON to ``<reports>/quality/<table>.json`` (read by ``recfeat
report`` without running anything), and returns a :class:`QualityResult`.

Severities: ``error`` expectations decide :attr:`QualityResult.passed` (and so the blocking
Dagster check); ``warning`` expectations (referential integrity of events to users and items by
default) are reported but never fail the result.

Engines: the validation frame is always prepared by Spark (partition pruning, derived columns,
the referential-integrity join), then validated by GX either on the Spark DataFrame or, when
it has at most ``pandas_max_rows`` rows, on its pandas copy: GX on Spark runs every metric as
Spark jobs (1.5 s warm, 7 s cold for a few thousand rows), GX on pandas takes ~0.1 s. Both
engines see the same values: NaN in float columns is turned into null first (Spark counts NaN
as a value, pandas as missing) and timestamps stay UTC-aware.

Configuration: :class:`pipelines.settings.QualitySettings` (``quality:`` in ``recfeat.yaml``).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pipelines.settings import QualitySettings

if TYPE_CHECKING:  # pragma: no cover
    from features.contracts import TableContract
    from features.layout import Manifest
    from pipelines.warehouse import Warehouse

ERROR = "error"
WARNING = "warning"
INFO = "info"

#: Default event-time window when no rule gives one: [2000-01-01, now + 1 day].
DEFAULT_MIN_EVENT_TS = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
DEFAULT_MAX_EVENT_TS_AHEAD = dt.timedelta(days=1)

REPORTS_DIR = "reports"
GX_DIR = "gx"
RESULTS_DIR = "quality"
DATASOURCE = "warehouse"
SAMPLE_VALUES = 5


# ---- declaring suites ----------------------------------------------------------------------
@dataclass(frozen=True)
class Expectation:
    """One expectation: a GX expectation class name, its arguments and our severity."""

    type: str  # class name in great_expectations.expectations, e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict[str, Any]
    severity: str = ERROR
    description: str | None = None  # replaces GX's prose in data docs (used for derived columns)

    @property
    def column(self) -> str | None:
        return _column_of(self.kwargs)

    def to_gx(self):
        import great_expectations as gx

        cls = getattr(gx.expectations, self.type)
        extra = {"description": self.description} if self.description else {}
        return cls(**self.kwargs, severity=_GX_SEVERITY[self.severity], **extra)


@dataclass
class TableSuite:
    """What :func:`validate_table` checks on one table.

    ``derive`` adds derived columns to the Spark frame before validation (for checks GX cannot
    express on the raw columns); ``notes`` explain skipped or adapted checks.
    """

    table: str
    expectations: list[Expectation]
    derive: Callable[[Any], Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SuiteContext:
    """What a suite builder may use: the session, the warehouse, the settings, the time window."""

    spark: Any
    warehouse: "Warehouse"
    settings: QualitySettings
    min_event_ts: dt.datetime
    max_event_ts: dt.datetime


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


def contract_expectations(contract: "TableContract") -> list[Expectation]:
    """Key columns not null and unique; every other non-nullable contract column not null."""
    out: list[Expectation] = []
    key = list(contract.key)
    for col in key:
        out.append(Expectation("ExpectColumnValuesToNotBeNull", {"column": col}))
    if len(key) == 1:
        out.append(Expectation("ExpectColumnValuesToBeUnique", {"column": key[0]}))
    elif key:
        out.append(Expectation("ExpectCompoundColumnsToBeUnique", {"column_list": key}))
    for f in contract.schema:
        if not f.nullable and f.name not in key:
            out.append(Expectation("ExpectColumnValuesToNotBeNull", {"column": f.name}))
    return out


def declare_suite(table: str, ctx: SuiteContext) -> TableSuite:
    """The suite of ``table``: its contract expectations plus its registered extras."""
    from features.contracts import get_contract

    suite = TableSuite(table=table, expectations=contract_expectations(get_contract(table)))
    builder = _BUILDERS.get(table)
    if builder is not None:
        builder(ctx, suite)
    return suite


@suite_for("events", warning_check="referential_integrity")
def _events_suite(ctx: SuiteContext, suite: TableSuite) -> None:
    from pyspark.sql import functions as F

    s = ctx.settings
    suite.expectations += [
        Expectation("ExpectColumnValuesToBeBetween", {"column": "play_time_ms", "min_value": 0}),
        Expectation("ExpectColumnValuesToBeBetween", {"column": "duration_ms", "min_value": 0}),
        Expectation("ExpectColumnValuesToBeBetween", {"column": "rating", "min_value": s.rating_min, "max_value": s.rating_max}),
        Expectation(
            "ExpectColumnValuesToBeBetween",
            {"column": "event_ts", "min_value": ctx.min_event_ts, "max_value": ctx.max_event_ts},
        ),
        Expectation(
            "ExpectColumnPairValuesToBeEqual",
            {"column_A": "event_date", "column_B": "event_ts_utc_date"},
            description="event_date must equal the UTC date of event_ts (event_ts_utc_date, derived by Spark)",
        ),
    ]
    # Referential integrity: a left join of the events on the distinct keys of the dimension
    # (Spark picks a broadcast join when the keys are small) yields, per event, the id when it
    # is unknown to the dimension, else null; GX then expects that column to be null. The
    # dimension is read at its committed version; a null id is left to the not-null check.
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
                severity=s.referential_integrity,
                description=f"every events.{key} must exist in {dim}.{key} ({out} holds the unknown ones; severity {s.referential_integrity})",
            )
        )

    def derive(df):
        df = df.withColumn("event_ts_utc_date", F.to_date(F.to_utc_timestamp(F.col("event_ts"), _session_zone(ctx.spark))))
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

    suite.derive = derive


@suite_for("synthetic_truth")
def _synthetic_truth_suite(ctx: SuiteContext, suite: TableSuite) -> None:
    suite.expectations.append(
        Expectation(
            "ExpectColumnValuesToBeBetween",
            {"column": "interest", "min_value": 0, "max_value": 1, "strict_min": True, "strict_max": True},
        )
    )


# ---- row-count band ------------------------------------------------------------------------
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


def row_count_expectation(settings: QualitySettings) -> Expectation:
    return Expectation(
        "ExpectColumnValuesToBeBetween",
        {"column": "ratio_to_previous", "min_value": settings.row_count_min_ratio, "max_value": settings.row_count_max_ratio},
    )


# ---- results -------------------------------------------------------------------------------
@dataclass
class ExpectationOutcome:
    """One expectation's result."""

    expectation: str  # GX type, e.g. expect_column_values_to_not_be_null
    column: str | None
    severity: str  # error | warning | info
    success: bool
    unexpected_count: int | None = None
    unexpected_sample: list[str] = field(default_factory=list)
    batch: str = ""  # the validated batch: the table, or <table>_partition_row_counts
    error: str | None = None  # GX raised while evaluating (counted as a failure)

    def label(self) -> str:
        col = f"({self.column})" if self.column else ""
        n = f": {self.unexpected_count:,} unexpected" if self.unexpected_count else ""
        sample = f" e.g. {', '.join(self.unexpected_sample[:3])}" if self.unexpected_sample else ""
        err = f": {self.error}" if self.error else ""
        return f"{self.expectation}{col}{n}{sample}{err}"


@dataclass
class QualityResult:
    """What :func:`validate_table` found; also the JSON read by ``recfeat report``."""

    table: str
    passed: bool  # contract check passed and no error-severity expectation failed
    checked_at: str
    table_version: int
    partitions: list[str]
    rows: int
    engine: str
    contract_passed: bool
    contract_description: str
    expectations: list[ExpectationOutcome]
    notes: list[str]
    data_docs_index: str
    validation_page: str
    validation_pages: dict[str, str]
    run_name: str
    contract_details: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """Failed error-severity expectations (they fail the check)."""
        return [e for e in self.expectations if not e.success and e.severity == ERROR]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed warning-severity expectations (reported only)."""
        return [e for e in self.expectations if not e.success and e.severity != ERROR]

    def summary(self) -> str:
        scope = f"{self.rows:,} rows" + (f" in {len(self.partitions)} partition(s)" if self.partitions else "")
        if self.passed:
            errors = sum(1 for e in self.expectations if e.severity == ERROR)
            text = f"{self.table}: passed: contract and {errors} error-level expectations on {scope}"
        else:
            problems = ([] if self.contract_passed else [f"contract: {self.contract_description}"]) + [
                e.label() for e in self.failures
            ]
            text = f"{self.table}: FAILED on {scope}: " + "; ".join(problems)
        if self.warnings:
            text += f" (warnings: {'; '.join(e.label() for e in self.warnings)})"
        return text

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> "QualityResult":
        data = json.loads(text)
        data["expectations"] = [ExpectationOutcome(**e) for e in data["expectations"]]
        return cls(**data)


# ---- running -------------------------------------------------------------------------------
def reports_root(warehouse: "Warehouse", settings: QualitySettings | None = None) -> str:
    """Local folder of the reports: ``reports_dir``, else ``<warehouse root>/reports``.

    GX's stores and data docs are written with local file I/O, so a remote warehouse (s3://...)
    defaults to ``./var/reports``.
    """
    if settings is not None and settings.reports_dir:
        return os.path.abspath(settings.reports_dir)
    if warehouse.is_local:
        return f"{warehouse.root}/{REPORTS_DIR}"
    return os.path.abspath(os.path.join("var", REPORTS_DIR))


def result_path(reports: str, table: str) -> str:
    return os.path.join(reports, RESULTS_DIR, f"{table}.json")


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
) -> QualityResult:
    """Run the contract check and the GX suite of ``table``; write data docs and the JSON result.

    ``partitions`` (partitioned tables): the partitions to validate; default the ones the
    table's last commit wrote (so a daily run validates its day, a backfill its range).
    ``min_event_ts`` / ``max_event_ts``: the allowed event time window (default
    2000-01-01 .. now + 1 day). ``run_name`` labels the validation in data docs (the Dagster
    run id in checks). Raises ``WarehouseError`` when the table has no committed version.
    """
    from features.contracts import get_contract
    from pipelines.quality import check_contract

    settings = settings or QualitySettings()
    now = dt.datetime.now(dt.timezone.utc)
    lo = _as_utc(min_event_ts) or DEFAULT_MIN_EVENT_TS
    hi = _as_utc(max_event_ts) or now + DEFAULT_MAX_EVENT_TS_AHEAD
    contract = get_contract(table)
    manifest = warehouse.manifest(table)
    if contract.partition_column is not None:
        if partitions is None:
            partitions = list(manifest.written_partitions) or sorted(manifest.partitions)
        present = [p for p in partitions if p in manifest.partitions]
        rows = sum(manifest.partitions[p].row_count for p in present)
    else:
        partitions, present, rows = [], None, manifest.row_count

    outcome = check_contract(spark, warehouse, contract, partitions=present)
    ctx = SuiteContext(spark, warehouse, settings, lo, hi)
    suite = declare_suite(table, ctx)
    notes = list(suite.notes)

    df = warehouse.read_spark(spark, table, partitions=present)
    if suite.derive is not None:
        df = suite.derive(df)
    df = df.select(*_columns_used(suite.expectations, df.columns))
    df = _nan_to_null(df)
    engine = settings.engine
    if engine == "auto":
        engine = "pandas" if rows <= settings.pandas_max_rows else "spark"

    # (batch name, suite name, expectations, frame)
    batches: list[tuple[str, str, list[Expectation], Any]] = []
    persisted = None
    if engine == "pandas":
        batches.append((table, f"{table}_quality", suite.expectations, _to_pandas(spark, df)))
    else:
        persisted = df.persist()
        batches.append((table, f"{table}_quality", suite.expectations, persisted))
    if contract.partition_column is not None and partitions:
        import pandas as pd

        counts = partition_row_counts(manifest, partitions)
        for c in counts:
            if c["previous_partition"] is None:
                notes.append(f"{c['partition']}: no previous partition, row-count band not applied")
        frame = pd.DataFrame(counts, columns=list(counts[0])).astype({"ratio_to_previous": "float64"})
        batches.append((f"{table}_partition_row_counts", f"{table}_row_count_band", [row_count_expectation(settings)], frame))

    reports = reports_root(warehouse, settings)
    run_name = _safe_name(run_name or "manual")
    try:
        expectations, pages, index = _run_gx(reports, table, batches, run_name, now, settings.keep_validations)
    finally:
        if persisted is not None:
            persisted.unpersist()

    result = QualityResult(
        table=table,
        passed=outcome.passed and all(e.success for e in expectations if e.severity == ERROR),
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
    )
    _write_text(result_path(reports, table), result.to_json())
    return result


def load_results(reports: str) -> dict[str, QualityResult]:
    """The last stored result per table under ``reports`` (``{}`` when none)."""
    folder = os.path.join(reports, RESULTS_DIR)
    out: dict[str, QualityResult] = {}
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as fh:
                result = QualityResult.from_json(fh.read())
            out[result.table] = result
    return out


def render_report(results: dict[str, QualityResult], reports: str) -> str:
    """The text ``recfeat report`` prints: per table the last verdict, failures and warnings."""
    if not results:
        return f"no quality reports in {reports} (they are written when the Dagster checks run)"
    lines = [f"{'table':<18} {'status':<7} {'version':>7} {'rows':>12}  checked_at"]
    for table, r in sorted(results.items()):
        lines.append(f"{table:<18} {'passed' if r.passed else 'FAILED':<7} {r.table_version:>7} {r.rows:>12,}  {r.checked_at}")
        if not r.contract_passed:
            lines.append(f"    contract: {r.contract_description}")
        for e in r.failures:
            lines.append(f"    error:   {e.label()}")
        for e in r.warnings:
            lines.append(f"    warning: {e.label()}")
        if r.validation_page:
            lines.append(f"    page:    {r.validation_page}")
    index = next((r.data_docs_index for r in results.values() if r.data_docs_index), "")
    lines.append(f"data docs: {index or os.path.join(reports, GX_DIR, 'index.html')}")
    return "\n".join(lines)


# ---- GX --------------------------------------------------------------------------------------
_GX_SEVERITY = {ERROR: "critical", WARNING: "warning", INFO: "info"}
_FROM_GX_SEVERITY = {"critical": ERROR, "warning": WARNING, "info": INFO}


def _gx_context(reports: str):
    """An ephemeral GX context whose suites and results persist under ``<reports>/gx/_stores``.

    The data docs index lists what the stores hold (and deletes pages whose result is not
    there), so the stores must outlive the process for one index to cover every table and run.
    Datasources, validation definitions and checkpoints stay in memory.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    base = os.path.join(reports, GX_DIR)

    def files(sub: str) -> dict[str, str]:
        return {"class_name": "TupleFilesystemStoreBackend", "base_directory": os.path.join(base, "_stores", sub)}

    memory = {"class_name": "InMemoryStoreBackend"}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        stores={
            "expectations_store": {"class_name": "ExpectationsStore", "store_backend": files("expectations")},
            "validation_results_store": {"class_name": "ValidationResultsStore", "store_backend": files("validations")},
            "checkpoint_store": {"class_name": "CheckpointStore", "store_backend": memory},
            "validation_definition_store": {"class_name": "ValidationDefinitionStore", "store_backend": memory},
        },
        expectations_store_name="expectations_store",
        validation_results_store_name="validation_results_store",
        checkpoint_store_name="checkpoint_store",
        data_docs_sites={
            "recfeat": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": base},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_gx(
    reports: str,
    table: str,
    batches: list[tuple[str, str, list[Expectation], Any]],
    run_name: str,
    run_time: dt.datetime,
    keep: int,
) -> tuple[list[ExpectationOutcome], dict[str, str], str]:
    """Validate each (batch, suite, expectations, frame); build data docs; return outcomes, pages, index."""
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = _gx_context(reports)
    run_id = RunIdentifier(run_name=run_name, run_time=run_time)
    outcomes: list[ExpectationOutcome] = []
    ids: dict[str, Any] = {}
    for name, suite_name, expectations, frame in batches:
        suite = gx.ExpectationSuite(name=suite_name, expectations=[e.to_gx() for e in expectations])
        suite = ctx.suites.add_or_update(suite)
        is_pandas = _is_pandas(frame)
        source = ctx.data_sources.add_pandas(f"{DATASOURCE}_{name}") if is_pandas else ctx.data_sources.add_spark(f"{DATASOURCE}_{name}")
        batch_def = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole")
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch_def, suite=suite))
        cp = ctx.checkpoints.add(
            gx.Checkpoint(name=suite_name, validation_definitions=[vd], actions=[], result_format={"result_format": "SUMMARY"})
        )
        result = cp.run(batch_parameters={"dataframe": frame}, run_id=run_id)
        for key, validation in result.run_results.items():
            ids[name] = key
            outcomes += [_outcome(r, name) for r in validation.results]
    # Checks of several tables may run at once (Dagster's multiprocess executor). The index
    # build deletes pages whose result it did not list, so pruning and building are serialised
    # with a file lock; validation itself (the slow part) runs outside it.
    with _docs_lock(reports):
        _prune(ctx, [suite_name for _, suite_name, _, _ in batches], keep)
        ctx.build_data_docs(resource_identifiers=list(ids.values()))
        pages = {name: _site_path(ctx.get_docs_sites_urls(resource_identifier=key)) for name, key in ids.items()}
        index = _site_path(ctx.get_docs_sites_urls())
    return outcomes, pages, index


@contextmanager
def _docs_lock(reports: str) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.join(reports, GX_DIR), exist_ok=True)
    with open(os.path.join(reports, GX_DIR, ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _outcome(r, batch: str) -> ExpectationOutcome:
    cfg = r.expectation_config
    severity = getattr(cfg, "severity", "critical")
    severity = _FROM_GX_SEVERITY.get(getattr(severity, "value", str(severity)), ERROR)
    res = r.result or {}
    error = None
    info = r.exception_info or {}
    if info.get("raised_exception"):
        error = str(info.get("exception_message") or "GX raised").splitlines()[0][:200]
    count = res.get("unexpected_count")
    sample: list[str] = []
    for v in res.get("partial_unexpected_list") or []:
        text = _short(v)
        if text not in sample and len(sample) < SAMPLE_VALUES:
            sample.append(text)
    return ExpectationOutcome(
        expectation=cfg.type,
        column=_column_of(cfg.kwargs),
        severity=severity,
        success=bool(r.success) and error is None,
        unexpected_count=None if count is None else int(count),
        unexpected_sample=sample,
        batch=batch,
        error=error,
    )


def _prune(ctx, suite_names: list[str], keep: int) -> None:
    """Keep the newest ``keep`` stored results per suite; data docs drop the others' pages."""
    store = ctx.validation_results_store
    by_suite: dict[str, list] = {}
    for key in store.list_keys():
        name = key.expectation_suite_identifier.name
        if name in suite_names:
            by_suite.setdefault(name, []).append(key)
    for keys in by_suite.values():
        keys.sort(key=lambda k: str(k.run_id.run_time))
        for old in keys[:-keep]:
            store.remove_key(old)


# ---- helpers ----------------------------------------------------------------------------------
def _column_of(kwargs: dict[str, Any]) -> str | None:
    if kwargs.get("column"):
        return str(kwargs["column"])
    if kwargs.get("column_A"):
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    if kwargs.get("column_list"):
        return ",".join(kwargs["column_list"])
    return None


def _columns_used(expectations: list[Expectation], available: list[str]) -> list[str]:
    wanted: list[str] = []
    for e in expectations:
        for k in ("column", "column_A", "column_B"):
            if e.kwargs.get(k):
                wanted.append(e.kwargs[k])
        wanted += list(e.kwargs.get("column_list") or [])
    seen = []
    for c in wanted:
        if c in available and c not in seen:
            seen.append(c)
    return seen


def _nan_to_null(df):
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    for f in df.schema.fields:
        if isinstance(f.dataType, (DoubleType, FloatType)):
            df = df.withColumn(f.name, F.when(F.isnan(F.col(f.name)), F.lit(None)).otherwise(F.col(f.name)))
    return df


def _session_zone(spark) -> str:
    return spark.conf.get("spark.sql.session.timeZone") or "UTC"


def _to_pandas(spark, df):
    """Spark to pandas with timestamps UTC-aware (Spark gives naive session-zone values)."""
    import pandas as pd
    from pyspark.sql.types import TimestampType

    pdf = df.toPandas()
    zone = _session_zone(spark)
    for f in df.schema.fields:
        if isinstance(f.dataType, TimestampType):
            col = pd.to_datetime(pdf[f.name])
            if col.dt.tz is None:
                col = col.dt.tz_localize(zone)
            pdf[f.name] = col.dt.tz_convert("UTC")
    return pdf


def _is_pandas(frame) -> bool:
    import pandas as pd

    return isinstance(frame, pd.DataFrame)


def _as_utc(value: dt.datetime | dt.date | None) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _site_path(urls: list[dict[str, str]]) -> str:
    if not urls:
        return ""
    url = urls[0]["site_url"]
    return unquote(urlparse(url).path) if url.startswith("file://") else url


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "manual"


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
