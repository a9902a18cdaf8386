"""Contract of ``synthetic_truth``: what the synthetic generator planted, per impression.

Real logs never have this table. It lets tests and evaluations measure methods against the
latent interest that generated each watch time (see ``docs/synthetic.md`` for the model).
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import WARNING, TableContract, between, row_count_band
from features.events import TS_TYPE

#: Columns of the generator's truth file, aligned with its log files by (source_file, source_line).
RAW_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int64(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("interest", pa.float64(), nullable=False),
        pa.field("is_noisy_play", pa.bool_(), nullable=False),
        pa.field("is_complete", pa.bool_(), nullable=False),
        pa.field("is_replay", pa.bool_(), nullable=False),
        pa.field("session_index", pa.int64(), nullable=False),
    ]
)

SYNTHETIC_TRUTH = TableContract(
    name="synthetic_truth",
    schema=pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("event_ts", TS_TYPE, nullable=False),
            pa.field("interest", pa.float64(), nullable=False),
            pa.field("is_noisy_play", pa.bool_(), nullable=False),
            pa.field("is_complete", pa.bool_(), nullable=False),
            pa.field("is_replay", pa.bool_(), nullable=False),
            pa.field("session_index", pa.int64(), nullable=False),
        ]
    ),
    column_docs={
        "event_id": "the event it describes (as in `events`)",
        "user_id": "the event's user (as in `events`)",
        "item_id": "the event's item (as in `events`)",
        "event_ts": "the event's time, UTC (as in `events`)",
        "interest": "latent interest of the user in the item, a probability in (0, 1)",
        "is_noisy_play": "a short \"deciding\" play whose length is unrelated to interest",
        "is_complete": "the play reached the end of the video (`play_time_ms >= duration_ms`)",
        "is_replay": "played beyond the end (`play_time_ms > duration_ms`)",
        "session_index": "the user's session number (0-based)",
    },
    expectations=(
        between("interest", 0, 1, strict_min=True, strict_max=True),
        between("session_index", 0),
        row_count_band("version", severity=WARNING),
    ),
    key=("event_id",),
    description=(
        "Ground truth of the synthetic source: the latent interest (probability in (0, 1)) "
        "behind each impression and how its play time was produced."
    ),
    invariants=(
        "one row per synthetic event, joined to events by (source_file, source_line)",
        "0 < interest < 1",
        "is_noisy_play rows have play times unrelated to interest",
    ),
)
