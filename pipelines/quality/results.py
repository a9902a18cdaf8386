"""Results of a table check and their store: ``<reports>/quality/<table>.json``, one per table.

The store holds the last :class:`TableCheckResult` of each table; ``recfeat report`` reads it
without running anything (no Spark, no GX, no Dagster).
"""
from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from features.contracts import ERROR

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.warehouse import Warehouse

REPORTS_DIR = "reports"
GX_DIR = "gx"
RESULTS_DIR = "quality"

#: Counts an invariant counter may return that are information, not violations.
INFO_COUNTS = frozenset({"rows"})


def violations_ok(counts: dict[str, int]) -> bool:
    """Every violation count is 0 (``INFO_COUNTS`` left out)."""
    return all(v == 0 for k, v in counts.items() if k not in INFO_COUNTS)


@dataclass
class ExpectationOutcome:
    """One expectation's result."""

    expectation: str  # GX type, e.g. expect_column_values_to_not_be_null
    column: str | None
    severity: str  # error | warning | info
    success: bool
    unexpected_count: int | None = None
    unexpected_sample: list[str] = field(default_factory=list)
    batch: str = ""  # the validated batch: the table, <table>_partition_row_counts, <table>_invariants
    error: str | None = None  # GX raised while evaluating (counted as a failure)

    def label(self) -> str:
        col = f"({self.column})" if self.column else ""
        n = f": {self.unexpected_count:,} unexpected" if self.unexpected_count else ""
        sample = f" e.g. {', '.join(self.unexpected_sample[:3])}" if self.unexpected_sample else ""
        err = f": {self.error}" if self.error else ""
        return f"{self.expectation}{col}{n}{sample}{err}"


@dataclass
class TableCheckResult:
    """What the check of one table found: contract check, GX suite, invariants; also the JSON
    that ``recfeat report`` reads.

    ``passed``: the contract check passed, no error-severity expectation failed and every
    invariant holds (0 violations). ``invariants`` maps each invariant of the family's counter
    to its violation count (empty when no counter was given: ``invariants_checked`` is then
    false; a ``rows`` count is information, not a violation); their data docs page is
    ``invariants_page``. ``expectations``, ``failures`` and ``warnings`` are the GX suite's. ``params`` are the expectation parameters the check used (as text).
    """

    table: str
    passed: bool
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
    invariants: dict[str, int] = field(default_factory=dict)
    invariants_checked: bool = False
    invariants_page: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """Failed error-severity expectations (they fail the check)."""
        return [e for e in self.expectations if not e.success and e.severity == ERROR]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed warning-severity expectations (reported only)."""
        return [e for e in self.expectations if not e.success and e.severity != ERROR]

    @property
    def invariants_passed(self) -> bool:
        """Every invariant holds (true when none was counted)."""
        return violations_ok(self.invariants)

    @property
    def violations(self) -> dict[str, int]:
        """The invariants that do not hold, with their counts."""
        return {k: v for k, v in self.invariants.items() if k not in INFO_COUNTS and v}

    @property
    def gx_passed(self) -> bool:
        """No error-severity GX expectation failed (the contract check and invariants left out)."""
        return not self.failures

    def summary(self) -> str:
        scope = f"{self.rows:,} rows" + (f" in {len(self.partitions)} partition(s)" if self.partitions else "")
        inv = f" and {len(self.invariants)} invariants" if self.invariants_checked else ""
        if self.passed:
            errors = sum(1 for e in self.expectations if e.severity == ERROR)
            text = f"{self.table}: passed: contract, {errors} error-level expectations{inv} on {scope}"
        else:
            problems = ([] if self.contract_passed else [f"contract: {self.contract_description}"]) + [
                e.label() for e in self.failures
            ]
            problems += [f"invariant {k}: {v:,} violations" for k, v in self.violations.items()]
            text = f"{self.table}: FAILED on {scope}: " + "; ".join(problems)
        if self.warnings:
            text += f" (warnings: {'; '.join(e.label() for e in self.warnings)})"
        return text

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> "TableCheckResult":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["expectations"] = [ExpectationOutcome(**e) for e in data["expectations"]]
        return cls(**data)


#: The name used before invariants were part of the result (same class).
QualityResult = TableCheckResult


def reports_root(warehouse: "Warehouse", settings=None) -> str:
    """Local folder of the reports: ``reports_dir``, else ``<warehouse root>/reports``.

    GX's stores and data docs are written with local file I/O, so a remote warehouse (s3://...)
    defaults to ``./var/reports``.
    """
    if settings is not None and getattr(settings, "reports_dir", None):
        return os.path.abspath(settings.reports_dir)
    if warehouse.is_local:
        return f"{warehouse.root}/{REPORTS_DIR}"
    return os.path.abspath(os.path.join("var", REPORTS_DIR))


def result_path(reports: str, table: str) -> str:
    return os.path.join(reports, RESULTS_DIR, f"{table}.json")


def store_result(reports: str, result: TableCheckResult) -> str:
    """Write ``result`` as the table's last result (atomically); return its path."""
    path = result_path(reports, result.table)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as fh:
        fh.write(result.to_json())
    os.replace(tmp, path)
    return path


def load_results(reports: str) -> dict[str, TableCheckResult]:
    """The last stored result per table under ``reports`` (``{}`` when none)."""
    folder = os.path.join(reports, RESULTS_DIR)
    out: dict[str, TableCheckResult] = {}
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as fh:
                result = TableCheckResult.from_json(fh.read())
            out[result.table] = result
    return out
