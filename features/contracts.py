"""Table contracts: the one description of every warehouse table.

A contract names a table, its columns (as an Arrow schema, which is the source of truth for
types), what each column means (with its unit), its key, its partition column, its invariants
in prose and its declarative quality expectations. Pipelines write through contracts, quality
suites are built from them, trainers read through them, and the column tables of
``docs/tables.md`` are generated from them. Nothing here does I/O.

Time convention: every timestamp column is ``timestamp[us, tz=UTC]``; every ``*_date`` column is
the UTC calendar date of the corresponding timestamp.

Expectations
------------
:class:`ColumnExpectation` values say what must hold of a column's values, independent of any
engine: ranges (:func:`between`, :func:`each_between` for list columns), allowed values
(:func:`one_of`), an order between two columns (:func:`ordered`), a date that is the UTC date of
a timestamp (:func:`utc_date_of`) and a row-count band against the previous partition or version
(:func:`row_count_band`). A bound may be a :class:`Param`: a value the caller passes when it
checks the table (a setting such as ``sequences.max_len``). Each has a severity: ``error``
(blocks) or ``warning`` (reported only). ``pipelines/quality`` turns them into Great
Expectations suites; key uniqueness and not-null of non-nullable columns follow from the schema
and the key and are not repeated here.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

ERROR = "error"
WARNING = "warning"
SEVERITIES = (ERROR, WARNING)

#: Kinds of :class:`ColumnExpectation`.
EXPECTATION_KINDS = ("between", "each_between", "one_of", "ordered", "utc_date_of", "row_count_band")


@dataclass(frozen=True)
class Param:
    """A bound given by the caller at check time (``params[name]``), e.g. ``Param("max_len")``."""

    name: str

    def __str__(self) -> str:
        return f"{{{self.name}}}"


@dataclass(frozen=True)
class ColumnExpectation:
    """One declarative expectation of a table (build it with the functions below).

    ``columns``: the column (``between``, ``each_between``, ``one_of``), the pair ``(low, high)``
    (``ordered``: low <= high, or < with ``strict``), ``(date, timestamp)`` (``utc_date_of``), or
    empty (``row_count_band``, whose ``mode`` is ``partition`` or ``version``). ``when``: the
    expectation applies only when ``params[when[0]] == when[1]`` (for example a bound that holds
    for one similarity measure only).
    """

    kind: str
    columns: tuple[str, ...] = ()
    min_value: float | int | Param | None = None
    max_value: float | int | Param | None = None
    strict_min: bool = False
    strict_max: bool = False
    values: tuple[Any, ...] = ()
    strict: bool = False
    mode: str = ""
    severity: str = ERROR
    when: tuple[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in EXPECTATION_KINDS:
            raise ValueError(f"unknown expectation kind {self.kind!r}; known: {EXPECTATION_KINDS}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the parameters this expectation needs (bounds and ``when``)."""
        names = [b.name for b in (self.min_value, self.max_value) if isinstance(b, Param)]
        if self.when is not None:
            names.append(self.when[0])
        return tuple(names)

    def describe(self) -> str:
        """One line of prose (used in the generated docs)."""
        cols = self.columns
        if self.kind in ("between", "each_between"):
            what = f"every element of `{cols[0]}`" if self.kind == "each_between" else f"`{cols[0]}`"
            lo = "(" if self.strict_min else "["
            hi = ")" if self.strict_max else "]"
            if self.min_value is not None and self.max_value is not None:
                text = f"{what} in {lo}{self.min_value}, {self.max_value}{hi}"
            elif self.min_value is not None:
                text = f"{what} {'>' if self.strict_min else '>='} {self.min_value}"
            else:
                text = f"{what} {'<' if self.strict_max else '<='} {self.max_value}"
        elif self.kind == "one_of":
            text = f"`{cols[0]}` in {{{', '.join(str(v) for v in self.values)}}}"
        elif self.kind == "ordered":
            text = f"`{cols[0]}` {'<' if self.strict else '<='} `{cols[1]}`"
        elif self.kind == "utc_date_of":
            text = f"`{cols[0]}` is the UTC date of `{cols[1]}`"
        else:
            text = f"row-count band against the previous {self.mode}"
        if self.when is not None:
            text += f" (when {self.when[0]} = {self.when[1]})"
        return text


def between(column: str, min_value=None, max_value=None, *, strict_min: bool = False, strict_max: bool = False,
            severity: str = ERROR, when: tuple[str, Any] | None = None) -> ColumnExpectation:
    """Non-null values of ``column`` within the bounds (``None``: unbounded on that side)."""
    return ColumnExpectation("between", (column,), min_value, max_value, strict_min, strict_max, severity=severity, when=when)


def each_between(column: str, min_value=None, max_value=None, *, severity: str = ERROR) -> ColumnExpectation:
    """Every element of the list column ``column`` within the bounds (inclusive)."""
    return ColumnExpectation("each_between", (column,), min_value, max_value, severity=severity)


def one_of(column: str, values, *, severity: str = ERROR) -> ColumnExpectation:
    """Non-null values of ``column`` in ``values``."""
    return ColumnExpectation("one_of", (column,), values=tuple(values), severity=severity)


def ordered(low: str, high: str, *, strict: bool = False, severity: str = ERROR) -> ColumnExpectation:
    """``low <= high`` (``low < high`` with ``strict``) on rows where both are present."""
    return ColumnExpectation("ordered", (low, high), strict=strict, severity=severity)


def utc_date_of(date_column: str, ts_column: str, *, severity: str = ERROR) -> ColumnExpectation:
    """``date_column`` equals the UTC calendar date of ``ts_column``."""
    return ColumnExpectation("utc_date_of", (date_column, ts_column), severity=severity)


def row_count_band(mode: str, *, severity: str = ERROR) -> ColumnExpectation:
    """Rows / rows of the previous ``partition`` (each validated one) or ``version`` within the
    configured band (``quality.row_count_min_ratio`` .. ``row_count_max_ratio``)."""
    if mode not in ("partition", "version"):
        raise ValueError(f"row_count_band mode must be 'partition' or 'version', not {mode!r}")
    return ColumnExpectation("row_count_band", (), mode=mode, severity=severity)


@dataclass(frozen=True)
class TableContract:
    """Schema, keys, partitioning, column meanings and expectations of one warehouse table.

    ``schema`` lists the required columns in order. ``open_columns`` allows a table (for
    example a dimension table whose attributes depend on the source) to carry further columns
    after the required ones; those extra columns are documented per source.

    ``column_docs`` maps each column to what it means, with its unit where it has one. A key may
    be a pattern with ``<placeholder>`` parts (``hist_<level>_id``) describing a family of open
    columns; ``open_column_types`` then gives the documented type of each pattern.
    ``expectations`` are the table's declarative quality expectations (module docstring).
    Both mappings are left out of the hash (a contract stays usable as a dict key).
    """

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    description: str
    partition_column: str | None = None
    open_columns: bool = False
    invariants: tuple[str, ...] = field(default_factory=tuple)
    column_docs: Mapping[str, str] = field(default_factory=dict, hash=False)
    open_column_types: Mapping[str, str] = field(default_factory=dict, hash=False)
    expectations: tuple[ColumnExpectation, ...] = field(default_factory=tuple, hash=False)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def column_description(self, name: str) -> str:
        """What column ``name`` means, with its unit ('' when undocumented)."""
        if name in self.column_docs:
            return self.column_docs[name]
        for pattern, text in self.column_docs.items():
            if "<" in pattern and _pattern_regex(pattern).fullmatch(name):
                return text
        return ""

    @property
    def column_patterns(self) -> list[str]:
        """The documented patterns of open columns (keys of ``column_docs`` with ``<...>``)."""
        return [k for k in self.column_docs if "<" in k]

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the parameters the expectations need (given at check time)."""
        out: list[str] = []
        for e in self.expectations:
            out += [p for p in e.params if p not in out]
        return tuple(out)

    def validate_schema(self, schema: pa.Schema) -> None:
        """Raise ``ValueError`` naming the first column that is missing or mistyped.

        Extra columns are accepted only for open contracts. Nullability is not compared
        (Parquet round trips and Spark both relax it); null checks belong to quality suites.
        """
        for expected in self.schema:
            if expected.name not in schema.names:
                raise ValueError(f"table {self.name!r}: column {expected.name!r} is missing")
            actual = schema.field(expected.name)
            if not _same_type(actual.type, expected.type):
                raise ValueError(
                    f"table {self.name!r}: column {expected.name!r} has type {actual.type}, "
                    f"expected {expected.type}"
                )
        if not self.open_columns:
            extra = [n for n in schema.names if n not in self.schema.names]
            if extra:
                raise ValueError(f"table {self.name!r}: unexpected columns {extra}")

    def conform(self, table: pa.Table) -> pa.Table:
        """Reorder and cast ``table`` to this contract (extra columns kept last if open)."""
        self.validate_schema_names(table.schema)
        required = [table.column(f.name).cast(f.type) for f in self.schema]
        names = list(self.schema.names)
        if self.open_columns:
            for name in table.schema.names:
                if name not in names:
                    required.append(table.column(name))
                    names.append(name)
        return pa.Table.from_arrays(required, names=names)

    def validate_schema_names(self, schema: pa.Schema) -> None:
        missing = [n for n in self.schema.names if n not in schema.names]
        if missing:
            raise ValueError(f"table {self.name!r}: columns {missing} are missing")


def _pattern_regex(pattern: str) -> "re.Pattern[str]":
    parts = re.split(r"<[^>]+>", pattern)
    return re.compile("[A-Za-z0-9_]+?".join(re.escape(p) for p in parts))


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual.equals(expected):
        return True
    # Parquet written by Spark stores strings as large_string in some paths and timestamps
    # without the zone name when the session zone is UTC; both are the same logical type.
    if pa.types.is_string(expected) and (pa.types.is_large_string(actual) or pa.types.is_string(actual)):
        return True
    if pa.types.is_timestamp(expected) and pa.types.is_timestamp(actual):
        return actual.tz in (None, "UTC", "+00:00", "Etc/UTC")
    return False
