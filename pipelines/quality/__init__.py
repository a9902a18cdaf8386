"""Data quality of the warehouse tables: contract checks, Great Expectations suites, reports.

Every table's check is :func:`check_table`: the structural contract check, the table's GX suite
built from its contract (with its row-count band) and, when given, its family's invariant
counter; the results go to the GX data docs and to the store that ``recfeat report`` reads
(docs/quality.md).

Modules, one concern each: ``settings`` (:class:`QualitySettings`), ``tables`` (the contract
lookup), ``contract`` (the structural check), ``expectations`` (contracts to GX expectations),
``suites`` (each table's suite, row-count bands), ``frames`` (validation frames), ``gx_run``
(GX context, validation, data docs), ``results`` (results and their store), ``check``
(:func:`check_table`), ``report`` (``recfeat report``), ``docs`` (the generated column tables of
``docs/tables.md``).
"""
from pipelines.quality.check import DEFAULT_MAX_EVENT_TS_AHEAD, DEFAULT_MIN_EVENT_TS, check_table, validate_table
from pipelines.quality.contract import CheckOutcome, check_contract
from pipelines.quality.expectations import (
    ERROR,
    INFO,
    WARNING,
    Expectation,
    SuiteContext,
    TableSuite,
    contract_expectations,
)
from pipelines.quality.report import render_report, report
from pipelines.quality.results import (
    ExpectationOutcome,
    QualityResult,
    TableCheckResult,
    load_results,
    reports_root,
    result_path,
)
from pipelines.quality.settings import QualitySettings
from pipelines.quality.suites import (
    declare_suite,
    partition_row_counts,
    row_count_expectation,
    suite_for,
    version_row_counts,
    warning_check_name,
)

__all__ = [
    "DEFAULT_MAX_EVENT_TS_AHEAD", "DEFAULT_MIN_EVENT_TS", "ERROR", "INFO", "WARNING", "CheckOutcome", "Expectation",
    "ExpectationOutcome", "QualityResult", "QualitySettings", "SuiteContext", "TableCheckResult", "TableSuite",
    "check_contract", "check_table", "contract_expectations", "declare_suite", "load_results", "partition_row_counts",
    "render_report", "report", "reports_root", "result_path", "row_count_expectation", "suite_for", "validate_table",
    "version_row_counts", "warning_check_name",
]
