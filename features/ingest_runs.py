"""Contract of ``ingest_runs``: one row per ingestion run with its counts by outcome and reason.

The balance ``records_in = new_events + already_present + outside_window + rejected +
duplicates`` holds for every row (the ingestion job refuses to commit otherwise).
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import TableContract, register
from features.events import TS_TYPE

INGEST_RUNS = register(
    TableContract(
        name="ingest_runs",
        schema=pa.schema(
            [
                pa.field("run_id", pa.string(), nullable=False),
                pa.field("source", pa.string(), nullable=False),
                pa.field("started_at", TS_TYPE, nullable=False),
                pa.field("finished_at", TS_TYPE, nullable=False),
                pa.field("window_start", pa.date32()),
                pa.field("window_end", pa.date32()),
                pa.field("runner", pa.string(), nullable=False),
                pa.field("files", pa.int64(), nullable=False),
                pa.field("records_in", pa.int64(), nullable=False),
                pa.field("new_events", pa.int64(), nullable=False),
                pa.field("already_present", pa.int64(), nullable=False),
                pa.field("outside_window", pa.int64(), nullable=False),
                pa.field("rejected", pa.int64(), nullable=False),
                pa.field("duplicates", pa.int64(), nullable=False),
                pa.field("counts_by_reason", pa.string(), nullable=False),
                pa.field("events_version", pa.int64(), nullable=False),
            ]
        ),
        key=("run_id",),
        description="One row per ingestion run: what it read, accepted, rejected (by reason) and committed.",
        invariants=(
            "records_in = new_events + already_present + outside_window + rejected + duplicates",
        ),
    )
)


def balance_holds(row: dict) -> bool:
    """Whether a run's counts account for every record read."""
    return row["records_in"] == (
        row["new_events"] + row["already_present"] + row["outside_window"] + row["rejected"] + row["duplicates"]
    )
