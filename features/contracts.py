"""Table contracts: the one description of every warehouse table.

A contract names a table, its columns (as an Arrow schema, which is the source of truth for
types), its key, its partition column and its invariants in prose. Pipelines write through
contracts, quality suites check them, trainers read through them, and ``docs/tables.md``
documents them. Nothing here does I/O.

Time convention: every timestamp column is ``timestamp[us, tz=UTC]``; every ``*_date`` column is
the UTC calendar date of the corresponding timestamp.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(frozen=True)
class TableContract:
    """Schema, keys and partitioning of one warehouse table.

    ``schema`` lists the required columns in order. ``open_columns`` allows a table (for
    example a dimension table whose attributes depend on the source) to carry further columns
    after the required ones; those extra columns are documented per source.
    """

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    description: str
    partition_column: str | None = None
    open_columns: bool = False
    invariants: tuple[str, ...] = field(default_factory=tuple)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

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


_REGISTRY: dict[str, TableContract] = {}


def register(contract: TableContract) -> TableContract:
    """Add a contract to the registry (one name, one contract)."""
    if contract.name in _REGISTRY and _REGISTRY[contract.name] != contract:
        raise ValueError(f"a different contract named {contract.name!r} is already registered")
    _REGISTRY[contract.name] = contract
    return contract


def get_contract(name: str) -> TableContract:
    """The contract of table ``name``; ``KeyError`` with the known names if absent."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no table contract named {name!r}; known: {sorted(_REGISTRY)}") from None


def all_contracts() -> list[TableContract]:
    _load_all()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def _load_all() -> None:
    # Importing the modules registers their contracts.
    from features import dimensions, events, ingest_runs, labels, lookalike, recall, rejections, rote, sequences, synthetic_truth  # noqa: F401
