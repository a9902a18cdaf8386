"""``recfeat report``: every table with its last check (GX suite and invariants), from the store.

Reads the JSON results only (no Spark, no GX, no Dagster).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipelines.quality.expectations import ERROR
from pipelines.quality.results import GX_DIR, INFO_COUNTS, TableCheckResult, load_results, reports_root
from pipelines.quality.tables import table_names

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.warehouse import Warehouse

NOT_CHECKED = "-"
#: The status of a table that the settings make a view (not stored, derived on read).
VIEW = "view"


def report(warehouse: "Warehouse", quality_settings=None, tables: list[str] | None = None,
           views: dict[str, str] | None = None) -> str:
    """The text of ``recfeat report``: every table of the catalog (or ``tables``), checked or not.
    ``views``: table -> source of the tables that the settings make views (derived on read)."""
    reports = reports_root(warehouse, quality_settings)
    return render_report(load_results(reports), reports, tables=table_names() if tables is None else tables, views=views)


def render_report(results: dict[str, TableCheckResult], reports: str, tables: list[str] | None = None,
                  views: dict[str, str] | None = None) -> str:
    """Per table the last verdict, its GX and invariant results, failures, warnings and pages.

    ``tables``: the tables to list, in order (a table never checked gets a ``-`` line); default
    the tables that have a result. Tables with a result but not in ``tables`` are listed last.
    ``views`` (table -> source): these are not stored, so they have no check of their own; each
    gets a ``view`` line naming the source whose check covers it (a result left by an earlier
    build that stored the table is not shown).
    """
    views = dict(views or {})
    none = f"no quality reports in {reports} (they are written when the Dagster checks run)"
    if not results and not tables:
        return none
    names = list(tables) if tables is not None else sorted(results)
    names += sorted(t for t in results if t not in names)
    width = max([18, *(len(n) + 1 for n in names)])
    lines = [
        f"{'table':<{width}} {'status':<7} {'version':>7} {'rows':>12}  {'gx':<11} {'invariants':<13} checked_at"
    ]
    for table in names:
        r = results.get(table)
        if table in views:
            lines.append(f"{table:<{width}} {VIEW:<7} {NOT_CHECKED:>7} {NOT_CHECKED:>12}  derived on read from "
                         f"{views[table]}, checked by {views[table]}'s checks")
            continue
        if r is None:
            lines.append(f"{table:<{width}} {NOT_CHECKED:<7} {NOT_CHECKED:>7} {NOT_CHECKED:>12}  {'not checked'}")
            continue
        lines.append(
            f"{table:<{width}} {'passed' if r.passed else 'FAILED':<7} {r.table_version:>7} {r.rows:>12,}  "
            f"{_gx_cell(r):<11} {_invariants_cell(r):<13} {r.checked_at}"
        )
        if not r.contract_passed:
            lines.append(f"    contract: {r.contract_description}")
        for e in r.failures:
            lines.append(f"    error:   {e.label()}")
        for e in r.warnings:
            lines.append(f"    warning: {e.label()}")
        for name, count in r.violations.items():
            lines.append(f"    invariant: {name}: {count:,} violations")
        if r.validation_page:
            lines.append(f"    page:    {r.validation_page}")
        if r.invariants_page:
            lines.append(f"    invariants page: {r.invariants_page}")
    if not results:
        return "\n".join([none, *lines])
    index = next((r.data_docs_index for r in results.values() if r.data_docs_index), "")
    lines.append(f"data docs: {index or os.path.join(reports, GX_DIR, 'index.html')}")
    return "\n".join(lines)


def _gx_cell(r: TableCheckResult) -> str:
    errors = [e for e in r.expectations if e.severity == ERROR]
    ok = sum(1 for e in errors if e.success)
    return f"{ok}/{len(errors)}" + (f" {len(r.warnings)}w" if r.warnings else "")


def _invariants_cell(r: TableCheckResult) -> str:
    if not r.invariants_checked:
        return NOT_CHECKED
    judged = [k for k in r.invariants if k not in INFO_COUNTS]
    failed = len(r.violations)
    return f"{failed}/{len(judged)} failed" if failed else f"{len(judged)} hold"
