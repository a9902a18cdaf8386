"""Column schemas of table assets, from their contracts, for Dagster's ``dagster/column_schema``.

A table asset carries its contract's schema in its definition metadata, so the UI shows every
column with its Arrow type and meaning before anything is materialized::

    metadata={"dagster/column_schema": column_schema(USER_SEQUENCES)}
"""
from __future__ import annotations

import dagster as dg

from features.contracts import TableContract


def _description(contract: TableContract, name: str) -> str:
    describe = getattr(contract, "column_description", None)
    if describe is None:
        return ""
    return describe(name) or ""


def column_schema(contract: TableContract) -> dg.TableSchema:
    """Every column of ``contract`` in order, with ``type`` the Arrow type (``str``), its
    description (``contract.column_description``, '' when undocumented) and whether it may be
    null; the table's key and partition column as table constraints."""
    columns = [
        dg.TableColumn(
            name=f.name,
            type=str(f.type),
            description=_description(contract, f.name),
            constraints=dg.TableColumnConstraints(nullable=f.nullable),
        )
        for f in contract.schema
    ]
    other = []
    if contract.key:
        other.append(f"key: {', '.join(contract.key)}")
    if contract.partition_column:
        other.append(f"partitioned by {contract.partition_column}")
    if getattr(contract, "open_columns", False):
        other.append("open: further columns may follow the listed ones")
    return dg.TableSchema(columns=columns, constraints=dg.TableConstraints(other=other) if other else None)
