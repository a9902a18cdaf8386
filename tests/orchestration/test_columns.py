"""``column_schema``: a contract's columns as Dagster's ``dagster/column_schema``."""
from __future__ import annotations

import pyarrow as pa

from features.contracts import TableContract
from orchestration.columns import column_schema


def test_every_column_with_its_arrow_type_and_description():
    contract = TableContract(
        name="toy",
        schema=pa.schema([
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("event_ts", pa.timestamp("us", tz="UTC")),
            pa.field("play_time_ms", pa.int64()),
            pa.field("hist_item_ids", pa.list_(pa.string())),
        ]),
        key=("user_id", "event_ts"),
        description="a toy table",
        partition_column="event_ts",
        column_docs={"user_id": "the user (string id)", "play_time_ms": "time played, in milliseconds"},
    )
    schema = column_schema(contract)
    assert [(c.name, c.type, c.description) for c in schema.columns] == [
        ("user_id", "string", "the user (string id)"),
        ("event_ts", "timestamp[us, tz=UTC]", ""),
        ("play_time_ms", "int64", "time played, in milliseconds"),
        ("hist_item_ids", "list<item: string>", ""),
    ]
    assert [c.constraints.nullable for c in schema.columns] == [False, True, True, True]
    assert schema.constraints.other == ["key: user_id, event_ts", "partitioned by event_ts"]


def test_a_real_contract():
    from features.events import EVENTS

    schema = column_schema(EVENTS)
    assert [c.name for c in schema.columns] == EVENTS.columns
    assert all(c.type == str(EVENTS.schema.field(c.name).type) for c in schema.columns)
    assert all(c.description == EVENTS.column_description(c.name) for c in schema.columns)
