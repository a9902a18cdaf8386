"""Contract of ``synthetic_truth``: what the synthetic generator planted, per impression.

Real logs never have this table. It lets tests and evaluations measure methods against the
latent interest that generated each watch time (see ``docs/synthetic.md`` for the model).
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import TableContract, register
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

SYNTHETIC_TRUTH = register(
    TableContract(
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
)
