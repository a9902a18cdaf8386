"""Builds of the tables computed as of a time: which committed versions a training set may use.

* ``lookalike_users`` and ``recall_items``: every readable committed version (up to the pinned
  one) is a build; its cutoff is the ``cutoff_ts`` its commit records (else the one its rows
  carry). An example at time ``t`` uses the build with the latest cutoff ``<= t`` (of several
  builds with that cutoff, the newest version); never a later one.
* ``duration_stats`` and ``watch_time_labels``: every version is a build of one fit window
  ``[fit_start, fit_end)`` (``duration_stats``: its rows' ``fit_start``/``fit_end``;
  ``watch_time_labels``: the ``settings`` its commit records). An example at time ``t`` uses the
  build whose window ends (``fit_end``, 00:00 UTC) latest at or before ``t``.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import pyarrow.compute as pc

from pipelines.training_set.spec import FeatureError
from pipelines.warehouse import Warehouse

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Build:
    """One committed version usable from ``valid_from`` on (a cutoff, or the end of a fit window)."""

    version: int
    valid_from: dt.datetime
    fit_start: dt.date | None = None

    def record(self) -> dict:
        out = {"version": self.version, "valid_from": self.valid_from.isoformat()}
        if self.fit_start is not None:
            out["fit_start"] = self.fit_start.isoformat()
        return out


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), UTC)


def _cutoff_of(warehouse: Warehouse, table: str, version: int) -> dt.datetime | None:
    recorded = warehouse.manifest(table, version).producer.get("cutoff_ts")
    if recorded:
        return dt.datetime.fromisoformat(recorded).astimezone(UTC)
    col = warehouse.read_arrow(table, version, columns=["cutoff_ts"]).column("cutoff_ts")
    found = pc.unique(col).to_pylist()
    found = [c for c in found if c is not None]
    if len(found) > 1:
        raise FeatureError(f"{table} version {version} holds rows of {len(found)} cutoffs; a build has one")
    return found[0].astimezone(UTC) if found else None


def _fit_window_of(warehouse: Warehouse, table: str, version: int) -> tuple[dt.date, dt.date] | None:
    if table == "duration_stats":
        t = warehouse.read_arrow(table, version, columns=["fit_start", "fit_end"])
        if t.num_rows == 0:
            return None
        starts, ends = set(t.column("fit_start").to_pylist()), set(t.column("fit_end").to_pylist())
        if len(starts) != 1 or len(ends) != 1:
            raise FeatureError(f"{table} version {version} mixes fit windows")
        return starts.pop(), ends.pop()
    settings = warehouse.manifest(table, version).producer.get("settings")
    if not settings:
        raise FeatureError(f"{table} version {version} records no fit window (no settings in its commit)")
    s = json.loads(settings)
    return dt.date.fromisoformat(s["fit_start"]), dt.date.fromisoformat(s["fit_end"])


def builds(warehouse: Warehouse, table: str, upto: int) -> list[Build]:
    """Every build of ``table`` among its readable versions ``<= upto``, by ``valid_from`` then
    version; of builds with the same ``valid_from`` only the newest version is kept."""
    out: dict[dt.datetime, Build] = {}
    for v in warehouse.versions(table):
        if v > upto:
            continue
        if table in ("duration_stats", "watch_time_labels"):
            window = _fit_window_of(warehouse, table, v)
            if window is None:
                continue
            b = Build(v, _day_start(window[1]), window[0])
        else:
            cutoff = _cutoff_of(warehouse, table, v)
            if cutoff is None:
                continue
            b = Build(v, cutoff)
        if b.valid_from not in out or out[b.valid_from].version < v:
            out[b.valid_from] = b
    return [out[k] for k in sorted(out)]
