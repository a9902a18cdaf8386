"""The tables the quality package knows: the one place that looks contracts up.

Every other module of the package asks :func:`contract`, :func:`table_names` or
:func:`all_contracts`; they read the project catalog (:mod:`pipelines.catalog`), imported when
first asked (the catalog imports the families, whose modules may import this package).
"""
from __future__ import annotations

from features.contracts import TableContract


def contract(name: str) -> TableContract:
    """The contract of table ``name``; ``KeyError`` naming the known tables if absent."""
    from pipelines import catalog

    return catalog.contract(name)


def all_contracts() -> list[TableContract]:
    """Every table's contract, in catalog order."""
    from pipelines import catalog

    return list(catalog.all_contracts())


def table_names() -> list[str]:
    """Every table, in catalog order."""
    return [c.name for c in all_contracts()]
