"""The catalog: the explicit list of feature families, in build order. One line per family.

Everything generic reads this list: ``pipelines.settings`` (one settings section per family
with parameters), ``orchestration.factory`` (assets and checks), ``recfeat tables`` and
``recfeat report``, the quality suites and the docs test. To add a family, write its modules
(``features/<family>/``, ``pipelines/<family>/``) and add its :class:`~pipelines.family.Family`
here; nothing else changes (docs/architecture.md).
"""
from __future__ import annotations

from features.contracts import TableContract
from pipelines import labels, lookalike, recall, sequences
from pipelines import item_codes
from pipelines import dialogues
from pipelines.core import dimensions, ingest, synthetic
from pipelines.family import Family, View

FAMILIES: tuple[Family, ...] = (
    synthetic.FAMILY,
    ingest.FAMILY,
    dimensions.FAMILY,
    sequences.FAMILY,
    labels.FAMILY,
    lookalike.FAMILY,
    recall.FAMILY,
    item_codes.FAMILY,
    dialogues.FAMILY,
)


def families() -> tuple[Family, ...]:
    """The catalogued families (read at call time, so a test may extend :data:`FAMILIES`)."""
    names = [f.name for f in FAMILIES]
    if len(set(names)) != len(names):
        raise ValueError(f"two families share a name: {names}")
    return FAMILIES


def all_contracts() -> list[TableContract]:
    """Every table's contract, in catalog order."""
    out: list[TableContract] = []
    for family in families():
        out += family.tables
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"tables built by two families: {dupes}")
    return out


def contract(name: str) -> TableContract:
    """The contract of table ``name``; ``KeyError`` naming the known tables if absent."""
    for c in all_contracts():
        if c.name == name:
            return c
    raise KeyError(f"no table named {name!r}; known: {sorted(c.name for c in all_contracts())}")


def family_of(table: str) -> Family:
    """The family that builds ``table``."""
    for family in families():
        if table in (t.name for t in family.tables):
            return family
    raise KeyError(f"no family builds a table named {table!r}")


def view_sources(settings) -> dict[str, str]:
    """Table -> source table of every view under the settings (``Family.views``)."""
    return {v.table: v.source for family in families() if family.enabled(settings) for v in family.views(settings)}


def view(table: str, settings) -> tuple[Family, View] | None:
    """``(family, view)`` when the settings make ``table`` a view (derived on read), else ``None``."""
    for family in families():
        if family.enabled(settings):
            for v in family.views(settings):
                if v.table == table:
                    return family, v
    return None
