"""Cutoffs of tables built "as of" a time (look-alike users, recall items): one place for the rule.

A table built as of ``cutoff_ts`` (UTC) uses only events strictly before it and stamps it on
every row and in its commit's producer metadata. A job reading such a table as input must find
exactly the configured cutoff there, and records what it read (``<table>_version``,
``<table>_cutoff_ts``) so the invariant checks can compare it with the configuration.
"""
from __future__ import annotations

import datetime as dt

from features.events import EVENTS
from features.timeutil import as_utc, from_micros
from pipelines.warehouse import Warehouse


def partitions_before(warehouse: Warehouse, cutoff: dt.datetime) -> list[str]:
    """The committed ``events`` partitions (UTC dates, ISO) that can hold instants before ``cutoff``
    (``event_date`` is the UTC date of ``event_ts``)."""
    last = (as_utc(cutoff) - dt.timedelta(microseconds=1)).date().isoformat()
    return sorted(p for p in warehouse.manifest(EVENTS.name).partitions if p <= last)


def events_in(warehouse: Warehouse, partitions: list[str]) -> int:
    """Rows of the committed ``events`` in ``partitions`` (from the manifest; nothing is read):
    what the engine choices of the local engines weigh."""
    held = warehouse.manifest(EVENTS.name).partitions
    return sum(held[p].row_count for p in partitions if p in held)


class CutoffMismatchError(ValueError):
    """A committed table was built with another ``cutoff_ts`` than the configured one."""


def committed_cutoffs(spark, warehouse: Warehouse, table: str, version: int | None = None) -> list[dt.datetime]:
    """The distinct ``cutoff_ts`` of the committed ``table``'s rows (UTC, sorted; at most 3), or,
    for a table without rows, the one its manifest's producer records (``[]`` if none).
    ``version``: that committed version (default the current one)."""
    from pyspark.sql import functions as F

    rows = (
        warehouse.read_spark(spark, table, version=version)
        .select(F.unix_micros("cutoff_ts").alias("us"))
        .distinct()
        .limit(3)
        .collect()
    )
    return _cutoffs_or_recorded([r.us for r in rows], warehouse, table, version)


def _cutoffs_or_recorded(micros, warehouse: Warehouse, table: str, version: int | None) -> list[dt.datetime]:
    """:func:`committed_cutoffs` from the rows' distinct cutoffs in microseconds (nulls ignored)."""
    found = sorted(from_micros(us) for us in set(micros) if us is not None)[:3]
    if found:
        return found
    recorded = warehouse.manifest(table, version).producer.get("cutoff_ts")
    return [dt.datetime.fromisoformat(recorded)] if recorded else []


def require_cutoff(table: str, found: list[dt.datetime], cutoff_ts: dt.datetime) -> None:
    """Refuse an input ``table`` whose committed cutoffs ``found`` (:func:`committed_cutoffs`) are
    not exactly ``cutoff_ts``.

    A job reading an input of another cutoff would mix two cutoffs while stamping the configured
    one on its rows. Raises :class:`CutoffMismatchError` with a one-line message naming the table,
    its cutoff and the configured one.
    """
    want = cutoff_ts
    if found != [want]:
        held = ", ".join(c.isoformat() for c in found) or "none recorded"
        raise CutoffMismatchError(
            f"{table} was built with cutoff_ts {held}, but the configured cutoff_ts is {want.isoformat()}: "
            f"materialize {table} again first"
        )


def read_input(spark, warehouse: Warehouse, table: str, cutoff_ts: dt.datetime):
    """``(DataFrame, provenance)`` of a committed input built as of ``cutoff_ts``
    (:func:`require_cutoff`); ``provenance`` (``<table>_version``, ``<table>_cutoff_ts``) goes into
    the producer of the table built from it, for the checks."""
    version = warehouse.current_version(table)  # one version for the check, the record and the read
    found = committed_cutoffs(spark, warehouse, table, version)
    require_cutoff(table, found, cutoff_ts)
    provenance = {
        f"{table}_version": str(version),
        f"{table}_cutoff_ts": ", ".join(c.isoformat() for c in found),
    }
    return warehouse.read_spark(spark, table, version=version), provenance


def read_input_arrow(warehouse: Warehouse, table: str, cutoff_ts: dt.datetime, columns: list[str] | None = None):
    """:func:`read_input` without Spark: ``(Arrow table, provenance)``, one read of the version
    for the cutoff check and the data (``columns``, plus ``cutoff_ts`` for the check)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    version = warehouse.current_version(table)
    wanted = None if columns is None else list(dict.fromkeys([*columns, "cutoff_ts"]))
    data = warehouse.read_arrow(table, version=version, columns=wanted)
    micros = pc.unique(pc.cast(data["cutoff_ts"], pa.int64())).to_pylist()
    found = _cutoffs_or_recorded(micros, warehouse, table, version)
    require_cutoff(table, found, cutoff_ts)
    provenance = {
        f"{table}_version": str(version),
        f"{table}_cutoff_ts": ", ".join(c.isoformat() for c in found),
    }
    return (data if columns is None else data.select(columns)), provenance


def cutoff_provenance_violations(warehouse: Warehouse, table: str, cutoff_ts: dt.datetime, inputs: tuple[str, ...] = ()) -> dict[str, int]:
    """Check counts from ``table``'s manifest, against the configured ``cutoff_ts`` rather than the rows' stamp:
    ``built_with_other_cutoff`` (the build's recorded cutoff is not the configured one) and, for a
    table built from committed ``inputs``, ``inputs_with_other_cutoff`` (inputs whose recorded
    cutoff is not the configured one; an unrecorded one counts)."""
    producer = warehouse.manifest(table).producer

    def other(recorded: str | None) -> int:
        try:
            return int(recorded is None or dt.datetime.fromisoformat(recorded) != cutoff_ts)
        except (TypeError, ValueError):  # unparseable, or naive, or several cutoffs ("a, b")
            return 1

    out = {"built_with_other_cutoff": other(producer.get("cutoff_ts"))}
    if inputs:
        out["inputs_with_other_cutoff"] = sum(other(producer.get(f"{name}_cutoff_ts")) for name in inputs)
    return out
