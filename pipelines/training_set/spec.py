"""What a training set asks for: feature names, TTLs, and the output column of each feature.

Features are named ``table.column``; a bare table name (or ``table.*``) asks for the whole group:

| feature | output columns |
|---|---|
| ``user_sequences`` (or ``user_sequences.<col>``) | ``hist_item_ids``, ``hist_ts``, ``hist_play_time_ms``, ``hist_len`` and the RoTE columns of ``features.sequences.rote.rote_batch`` (``hist_days_f``, ``hist_<level>_id``, ``gap_prev_s``, ``query_ts_s``, ...) |
| ``users.*`` / ``users.<col>`` | ``users__<col>`` |
| ``items.*`` / ``items.<col>`` | ``items__<col>`` (needs ``item_id`` in the spine) |
| ``lookalike_users`` | ``lookalike_users__neighbor_user_id``, ``__similarity`` (lists by rank), ``__cutoff_ts`` |
| ``recall_items`` | ``recall_items__item_id``, ``__score``, ``__source`` (lists by rank), ``__cutoff_ts`` |
| ``watch_time_labels.<label>`` | ``watch_time_labels__<label>`` and ``watch_time_labels__fit_end`` |
| ``duration_stats.<col>`` | ``duration_stats__<col>`` and ``duration_stats__fit_end`` |
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

HISTORY = "user_sequences"
DIMENSIONS = ("users", "items")
CUTOFF_TABLES = {
    "lookalike_users": ("neighbor_user_id", "similarity"),
    "recall_items": ("item_id", "score", "source"),
}
FIT_TABLES = ("watch_time_labels", "duration_stats")
GROUPS = (HISTORY, *DIMENSIONS, *CUTOFF_TABLES, *FIT_TABLES)
HISTORY_BASE = ("hist_item_ids", "hist_ts", "hist_play_time_ms", "hist_len")
#: Separator between a table and a column in output column names (dots are awkward in Spark).
SEP = "__"


class FeatureError(ValueError):
    """A feature name, TTL or spine that cannot be served (one line)."""


@dataclass
class FeatureSpec:
    """The parsed request: per table, the columns asked for (``None``: the whole group)."""

    columns: dict[str, list[str] | None] = field(default_factory=dict)
    ttl: dict[str, dt.timedelta] = field(default_factory=dict)

    @property
    def tables(self) -> list[str]:
        return [t for t in GROUPS if t in self.columns]

    def wants(self, table: str) -> bool:
        return table in self.columns


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(value) -> dt.timedelta:
    """A TTL: a ``timedelta``, seconds (a number), or text such as ``30d``, ``12h``, ``90s``."""
    if isinstance(value, dt.timedelta):
        out = value
    elif isinstance(value, (int, float)):
        out = dt.timedelta(seconds=float(value))
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise FeatureError(f"bad ttl {value!r}: use a number of seconds or <n>s|m|h|d|w, e.g. 30d")
        out = dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    if out <= dt.timedelta(0):
        raise FeatureError(f"ttl must be positive, got {value!r}")
    return out


def parse_features(features, ttl: dict | None = None) -> FeatureSpec:
    """Parse feature names (a list, or one comma-separated string) and TTLs keyed by table."""
    if isinstance(features, str):
        features = [f for f in features.split(",") if f.strip()]
    spec = FeatureSpec()
    for raw in features:
        name = raw.strip()
        table, _, column = name.partition(".")
        if table not in GROUPS:
            raise FeatureError(f"unknown feature {name!r}: the table must be one of {', '.join(GROUPS)}")
        if column in ("", "*"):
            spec.columns[table] = None
        elif table not in spec.columns:
            spec.columns[table] = [column]
        elif spec.columns[table] is not None and column not in spec.columns[table]:
            spec.columns[table].append(column)
    for table, value in (ttl or {}).items():
        if table not in GROUPS:
            raise FeatureError(f"ttl for unknown table {table!r}: one of {', '.join(GROUPS)}")
        if table in DIMENSIONS:
            raise FeatureError(f"ttl for {table!r}: the table is a snapshot without time, a ttl cannot apply")
        if table not in spec.columns:
            raise FeatureError(f"ttl for {table!r}, which is not among the features")
        spec.ttl[table] = parse_ttl(value)
    if not spec.columns:
        raise FeatureError("no features asked for")
    return spec


def out_name(table: str, column: str) -> str:
    """The output column of ``table.column`` (history columns keep their own names)."""
    return column if table == HISTORY else f"{table}{SEP}{column}"
