"""Contract of ``ingest_runs``: one row per ingestion run with its counts by outcome and reason.

The balance ``records_in = new_events + already_present + outside_window + rejected +
duplicates`` holds for every row (the ingestion job refuses to commit otherwise).
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import TableContract, between, ordered
from features.events import TS_TYPE

INGEST_RUNS = TableContract(
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
    column_docs={
        "run_id": "the run (Dagster run id, or a random id from the CLI)",
        "source": "the source name",
        "started_at": "when the run started, UTC",
        "finished_at": "when its commits finished, UTC",
        "window_start": "first UTC date of the run's window (null: every date in the source)",
        "window_end": "end of the window, a UTC date (exclusive)",
        "runner": "`beam:<runner>` or `spark`",
        "files": "source files read",
        "records_in": "records read from them",
        "new_events": "accepted records added to `events`",
        "already_present": "accepted records whose `event_id` was already committed",
        "outside_window": "accepted records dated outside the run's window (not committed by this run)",
        "rejected": "records rejected by validation (dead letters other than `duplicate`)",
        "duplicates": "records with the same `event_id` as another record of the run (dead letters `duplicate`: the same record in overlapping files, and exact repeats within a file under `ingest.repeated_lines: duplicate`)",
        "counts_by_reason": "JSON object: reason code → count",
        "events_version": "the `events` version the run left current (a run that brought nothing new commits nothing: `new_events` 0 and the version it read)",
    },
    expectations=(
        *(between(c, 0) for c in ("files", "records_in", "new_events", "already_present", "outside_window", "rejected", "duplicates", "events_version")),
        ordered("started_at", "finished_at"),
        ordered("window_start", "window_end", strict=True),
    ),
    key=("run_id",),
    description="One row per ingestion run: what it read, accepted, rejected (by reason) and committed.",
    invariants=(
        "records_in = new_events + already_present + outside_window + rejected + duplicates",
    ),
)


def balance_holds(row: dict) -> bool:
    """Whether a run's counts account for every record read."""
    return row["records_in"] == (
        row["new_events"] + row["already_present"] + row["outside_window"] + row["rejected"] + row["duplicates"]
    )
