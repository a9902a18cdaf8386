"""Contracts of the sequences family: ``user_sequences`` and ``rote_features`` (docs/sequences.md).

Units and time: every ``*_ts`` column is a UTC timestamp (microseconds), every ``*_s`` column
whole seconds since the Unix epoch (or a gap in seconds), ``*_date`` the UTC date.
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import WARNING, Param, TableContract, between, each_between, one_of, ordered, row_count_band, utc_date_of
from features.events import TS_TYPE

USER_SEQUENCES = TableContract(
    name="user_sequences",
    schema=pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("target_item_id", pa.string(), nullable=False),
            pa.field("target_ts", TS_TYPE, nullable=False),
            pa.field("target_play_time_ms", pa.int64()),
            pa.field("hist_item_ids", pa.list_(pa.string())),
            pa.field("hist_ts", pa.list_(TS_TYPE)),
            pa.field("hist_play_time_ms", pa.list_(pa.int64())),
            pa.field("hist_len", pa.int32(), nullable=False),
            pa.field("seq_pos", pa.int32(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("target_date", pa.date32(), nullable=False),
        ]
    ),
    column_docs={
        "event_id": "the target event",
        "user_id": "its user",
        "target_item_id": "the target's item",
        "target_ts": "the target's time, UTC",
        "target_play_time_ms": "the target's play time in milliseconds (null where the source has none)",
        "hist_item_ids": "items of the earlier events, oldest first",
        "hist_ts": "their times, UTC (each <= `target_ts`)",
        "hist_play_time_ms": "their play times in milliseconds (null elements where the source has none)",
        "hist_len": "number of history positions, `min(seq_pos, max_len)`",
        "seq_pos": "0-based position of the target in the user's whole order (the untruncated history length)",
        "split": "`train`, `valid` or `test` by the configured protocol",
        "target_date": "UTC date of `target_ts` (the partition)",
    },
    expectations=(
        between("hist_len", 0, Param("max_len")),
        ordered("hist_len", "seq_pos"),
        between("target_play_time_ms", 0),
        each_between("hist_play_time_ms", 0),
        one_of("split", ("train", "valid", "test")),
        utc_date_of("target_date", "target_ts"),
        row_count_band("version", severity=WARNING),
    ),
    key=("event_id",),
    partition_column="target_date",
    description="One row per target event with the user's strictly earlier events (point in time) and its split.",
    invariants=(
        "every hist_ts[i] <= target_ts, and ties sort before the target by (source_file, source_line, event_id)",
        "hist_len = size(hist_item_ids) = size(hist_ts) = size(hist_play_time_ms) <= max_len",
        "seq_pos counts the user's earlier events (0 for the first); hist_len = min(seq_pos, max_len)",
        "leave_one_out: per user with >= 4 events exactly one test and one valid row",
    ),
)


def _rote_contract():
    i64, f64 = pa.int64(), pa.float64()
    fields = [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("hist_len", pa.int32(), nullable=False),
        pa.field("hist_ts_s", pa.list_(i64)),
        pa.field("hist_days_f", pa.list_(f64)),
        pa.field("hist_months_f", pa.list_(f64)),
        pa.field("hist_years_f", pa.list_(f64)),
        pa.field("gap_prev_s", pa.list_(i64)),
        pa.field("gap_to_target_s", pa.list_(i64)),
        pa.field("query_ts_s", i64, nullable=False),
        pa.field("target_ts_s", i64, nullable=False),
        pa.field("target_days_f", f64, nullable=False),
        pa.field("target_months_f", f64, nullable=False),
        pa.field("target_years_f", f64, nullable=False),
        pa.field("target_date", pa.date32(), nullable=False),
    ]
    return TableContract(
        name="rote_features",
        schema=pa.schema(fields),
        column_docs={
            "event_id": "the target event (as in `user_sequences`)",
            "user_id": "its user",
            "hist_len": "number of history positions (equals `user_sequences.hist_len`)",
            "hist_ts_s": "history times, seconds since the epoch",
            "hist_days_f": "SASRec form: days since the epoch, `ts / 86400`",
            "hist_months_f": "SASRec form: 30.4375-day months since the epoch, `days_f / 30.4375`",
            "hist_years_f": "SASRec form: 365.25-day years since the epoch, `days_f / 365.25`",
            "gap_prev_s": "seconds since the previous history event (0 for the first)",
            "gap_to_target_s": "seconds from each history event to the target, `target_ts - ts`",
            "query_ts_s": "RoTE's query time: seconds of the last history event (0 for an empty history)",
            "target_ts_s": "the target's time, seconds since the epoch",
            "target_days_f": "SASRec form of the target: days since the epoch",
            "target_months_f": "SASRec form of the target: 30.4375-day months since the epoch",
            "target_years_f": "SASRec form of the target: 365.25-day years since the epoch",
            "target_date": "UTC date of the target (the partition)",
            "hist_<level>_id": "RPG calendar id of each history position at a configured level (`sequences.rote_levels`): years since 1970, months since 1970-01, or days / hours / minutes / seconds since the epoch",
            "hist_<level>_id_rel": "each history position's `<level>` id minus the first history position's",
            "target_<level>_id": "the target's RPG calendar id at the level",
            "target_<level>_id_rel": "the target's id minus the first history position's (0 for an empty history)",
        },
        open_column_types={
            "hist_<level>_id": "list<int64>",
            "hist_<level>_id_rel": "list<int64>",
            "target_<level>_id": "int64",
            "target_<level>_id_rel": "int64",
        },
        expectations=(
            between("hist_len", 0, Param("max_len")),
            between("query_ts_s", 0),
            ordered("query_ts_s", "target_ts_s"),
            each_between("gap_prev_s", 0),
            each_between("gap_to_target_s", 0),
            row_count_band("version", severity=WARNING),
        ),
        key=("event_id",),
        partition_column="target_date",
        open_columns=True,
        description="RoTE time features of every user_sequences row: per history position and for the target, "
        "SASRec-form levels, RPG calendar ids of the configured levels (open columns), gaps; UTC.",
        invariants=(
            "one row per user_sequences row (same event_id, user_id, target_date); hist_len equals its hist_len",
            "every hist_* list has hist_len elements, in the history's order (oldest first)",
            "for each configured level: hist_<level>_id, hist_<level>_id_rel (lists), target_<level>_id, "
            "target_<level>_id_rel (int64)",
            "query_ts_s = the last history event's seconds (0 for an empty history); gap_prev_s >= 0; gap_to_target_s >= 0",
        ),
    )


ROTE_FEATURES = _rote_contract()
