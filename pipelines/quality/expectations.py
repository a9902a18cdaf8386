"""From contracts to Great Expectations: expectations, the suite of one table, its derived columns.

A contract declares what must hold (``features.contracts.ColumnExpectation``: ranges, allowed
values, column orders, dates of timestamps, row-count bands) without naming an engine. Here each
becomes an :class:`Expectation` (a GX expectation class name, its arguments and a severity) and,
where GX cannot express it on the stored columns, a Spark derivation that adds a column for GX
to check (``<ts>_utc_date``, ``<list>_min_element``). Bounds given as ``Param`` are taken from
the parameters of the check; an expectation whose parameter is missing is skipped with a note.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from features.contracts import ERROR, WARNING, ColumnExpectation, Param

if TYPE_CHECKING:  # pragma: no cover
    from features.contracts import TableContract
    from pipelines.quality.settings import QualitySettings
    from pipelines.warehouse import Warehouse

INFO = "info"

__all__ = [
    "ERROR", "INFO", "WARNING", "Expectation", "SuiteContext", "TableSuite", "contract_expectations",
    "declared_expectations",
]


@dataclass(frozen=True)
class Expectation:
    """One expectation: a GX expectation class name, its arguments and our severity."""

    type: str  # class name in great_expectations.expectations, e.g. "ExpectColumnValuesToNotBeNull"
    kwargs: dict[str, Any]
    severity: str = ERROR
    description: str | None = None  # replaces GX's prose in data docs (used for derived columns)

    @property
    def column(self) -> str | None:
        return column_of(self.kwargs)

    def to_gx(self):
        from pipelines.quality.preload import wait_for_gx

        wait_for_gx()
        import great_expectations as gx

        cls = getattr(gx.expectations, self.type)
        extra = {"description": self.description} if self.description else {}
        return cls(**self.kwargs, severity=GX_SEVERITY[self.severity], **extra)


GX_SEVERITY = {ERROR: "critical", WARNING: "warning", INFO: "info"}
FROM_GX_SEVERITY = {"critical": ERROR, "warning": WARNING, "info": INFO}


@dataclass
class TableSuite:
    """What the check of one table validates.

    ``derivations`` (from the contract) and then ``derive`` (a table's own builder) add derived
    columns to the Spark frame before validation; ``derive_arrow`` is the builder's same step
    on an Arrow table (the check of a small table prepares its frame on Arrow, without Spark,
    when every step has an Arrow form: each derivation has one, a builder gives its own);
    ``bands`` are the contract's row-count bands; ``notes`` explain skipped or adapted checks.
    """

    table: str
    expectations: list[Expectation]
    derive: Callable[[Any], Any] | None = None
    notes: list[str] = field(default_factory=list)
    derivations: list[Callable[[Any], Any]] = field(default_factory=list)
    bands: list[ColumnExpectation] = field(default_factory=list)
    derive_arrow: Callable[[Any], Any] | None = None

    def prepare(self, df):
        """The validation frame: ``df`` with every derived column."""
        for step in self.derivations:
            df = step(df)
        if self.derive is not None:
            df = self.derive(df)
        return df

    @property
    def arrow_ready(self) -> bool:
        """Every derivation step has an Arrow form (:meth:`prepare_arrow` can be used)."""
        return all(hasattr(step, "arrow") for step in self.derivations) and (self.derive is None or self.derive_arrow is not None)

    def prepare_arrow(self, table):
        """:meth:`prepare` on an Arrow table (the same derived columns, computed by Arrow)."""
        for step in self.derivations:
            table = step.arrow(table)
        if self.derive_arrow is not None:
            table = self.derive_arrow(table)
        return table


@dataclass
class SuiteContext:
    """What a suite builder may use: the session, the warehouse, the settings, the parameters."""

    spark: Any
    warehouse: "Warehouse"
    settings: "QualitySettings"
    min_event_ts: dt.datetime
    max_event_ts: dt.datetime
    params: dict[str, Any] = field(default_factory=dict)


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


def declared_expectations(contract: "TableContract", params: dict[str, Any], session_zone: str) -> TableSuite:
    """The contract's declarative expectations as a suite (without the key and not-null part)."""
    suite = TableSuite(table=contract.name, expectations=[])
    for e in contract.expectations:
        missing = [p for p in e.params if params.get(p) is None]
        if missing:
            suite.notes.append(f"{e.describe()}: not checked (parameter {', '.join(missing)} not given)")
            continue
        if e.when is not None and params[e.when[0]] != e.when[1]:
            continue
        if e.kind == "row_count_band":
            suite.bands.append(e)
            continue
        _translate(e, params, session_zone, suite)
    return suite


def _translate(e: ColumnExpectation, params: dict[str, Any], zone: str, suite: TableSuite) -> None:
    lo, hi = _resolve(e.min_value, params), _resolve(e.max_value, params)
    if e.kind == "between":
        suite.expectations.append(
            Expectation("ExpectColumnValuesToBeBetween", _bounds(e.columns[0], lo, hi, e.strict_min, e.strict_max), e.severity)
        )
    elif e.kind == "each_between":
        col = e.columns[0]
        for bound, func, value in (("min", "array_min", lo), ("max", "array_max", hi)):
            if value is None:
                continue
            derived = f"{col}_{bound}_element"
            suite.derivations.append(_array_extreme(col, derived, func))
            kwargs = _bounds(derived, value if bound == "min" else None, value if bound == "max" else None, False, False)
            suite.expectations.append(
                Expectation(
                    "ExpectColumnValuesToBeBetween", kwargs, e.severity,
                    description=f"{e.describe()} ({derived}, the {bound}imum element, derived by Spark)",
                )
            )
    elif e.kind == "one_of":
        suite.expectations.append(
            Expectation("ExpectColumnValuesToBeInSet", {"column": e.columns[0], "value_set": list(e.values)}, e.severity)
        )
    elif e.kind == "ordered":
        low, high = e.columns
        suite.expectations.append(
            Expectation(
                "ExpectColumnPairValuesAToBeGreaterThanB",
                {"column_A": high, "column_B": low, "or_equal": not e.strict, "ignore_row_if": "either_value_is_missing"},
                e.severity,
                description=f"{low} {'<' if e.strict else '<='} {high} on every row where both are present",
            )
        )
    elif e.kind == "utc_date_of":
        date_col, ts_col = e.columns
        derived = f"{ts_col}_utc_date"
        suite.derivations.append(_utc_date(ts_col, derived, zone))
        suite.expectations.append(
            Expectation(
                "ExpectColumnPairValuesToBeEqual",
                {"column_A": date_col, "column_B": derived},
                e.severity,
                description=f"{date_col} must equal the UTC date of {ts_col} ({derived}, derived by Spark)",
            )
        )
    else:  # pragma: no cover - ColumnExpectation validates its kind
        raise ValueError(f"unknown expectation kind {e.kind!r}")


def _bounds(column: str, lo, hi, strict_min: bool, strict_max: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"column": column}
    if lo is not None:
        kwargs["min_value"] = lo
        if strict_min:
            kwargs["strict_min"] = True
    if hi is not None:
        kwargs["max_value"] = hi
        if strict_max:
            kwargs["strict_max"] = True
    return kwargs


def _resolve(bound, params: dict[str, Any]):
    return params[bound.name] if isinstance(bound, Param) else bound


class _Derivation:
    """One derived column: ``step(spark_df)`` adds it with Spark, ``step.arrow(table)`` with Arrow."""

    def __init__(self, spark_fn: Callable[[Any], Any], arrow_fn: Callable[[Any], Any], out: str):
        self._spark, self._arrow, self.out = spark_fn, arrow_fn, out

    def __call__(self, df):
        return self._spark(df)

    def arrow(self, table):
        column = self._arrow(table)
        if self.out in table.column_names:
            return table.set_column(table.column_names.index(self.out), self.out, column)
        return table.append_column(self.out, column)


def _array_extreme(column: str, out: str, func: str) -> _Derivation:
    """``array_min`` / ``array_max`` of a list column (null for a null or empty list; null
    elements skipped), in Spark and in Arrow."""

    def step(df):
        from pyspark.sql import functions as F

        return df.withColumn(out, getattr(F, func)(F.col(column)))

    def arrow(table):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        # One reduceat over the values, a segment per non-empty list (from the offsets); null
        # elements are replaced by the operation's neutral value, and a list with no non-null
        # element (or a null list) gives null.
        lists = table.column(column).combine_chunks()
        offsets = lists.offsets.to_numpy(zero_copy_only=False)
        values = lists.values.slice(offsets[0], offsets[-1] - offsets[0])
        offsets = offsets - offsets[0]
        typ = values.type
        out = pa.nulls(len(lists), typ)
        starts = np.flatnonzero(np.diff(offsets) > 0)
        if not len(starts):
            return out
        has_value = lists.is_valid().to_numpy(zero_copy_only=False)[starts]
        if values.null_count:  # a list whose elements are all null has no extreme
            seen = np.r_[0, np.cumsum(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=np.int64)]
            has_value &= seen[offsets[starts + 1]] - seen[offsets[starts]] > 0
        numbers = values.cast(pa.int64()) if pa.types.is_timestamp(typ) or pa.types.is_date(typ) else values
        floating = pa.types.is_floating(typ)
        bounds = None if floating else np.iinfo(numbers.type.to_pandas_dtype())
        if func == "array_min":  # fmin skips NaN (null here) unless every value is NaN, as Spark's NaN is the largest
            reduce, neutral = np.fmin, np.nan if floating else bounds.max
        else:  # maximum keeps NaN: Spark's NaN is above every number
            reduce, neutral = np.maximum, -np.inf if floating else bounds.min
        filled = pc.fill_null(numbers, pa.scalar(neutral, numbers.type)).to_numpy(zero_copy_only=False)
        picked = reduce.reduceat(filled, offsets[starts])
        taker = np.full(len(lists), -1, dtype=np.int64)
        taker[starts[has_value]] = np.flatnonzero(has_value)
        picked = pa.array(picked, numbers.type).cast(typ)
        return pc.if_else(pa.array(taker >= 0), picked.take(pa.array(np.maximum(taker, 0))), out)

    return _Derivation(step, arrow, out)


def _utc_date(column: str, out: str, zone: str) -> _Derivation:
    def step(df):
        from pyspark.sql import functions as F

        return df.withColumn(out, F.to_date(F.to_utc_timestamp(F.col(column), zone)))

    def arrow(table):
        from pipelines.quality.frames import arrow_utc_date

        return arrow_utc_date(table.column(column))

    return _Derivation(step, arrow, out)


def column_of(kwargs: dict[str, Any]) -> str | None:
    """The column (or ``a,b`` columns) an expectation's arguments name."""
    if kwargs.get("column"):
        return str(kwargs["column"])
    if kwargs.get("column_A"):
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    if kwargs.get("column_list"):
        return ",".join(kwargs["column_list"])
    return None


def columns_used(expectations: list[Expectation], available: list[str]) -> list[str]:
    """The columns of ``available`` the expectations read, in first-use order."""
    wanted: list[str] = []
    for e in expectations:
        for k in ("column", "column_A", "column_B"):
            if e.kwargs.get(k):
                wanted.append(e.kwargs[k])
        wanted += list(e.kwargs.get("column_list") or [])
    seen: list[str] = []
    for c in wanted:
        if c in available and c not in seen:
            seen.append(c)
    return seen
