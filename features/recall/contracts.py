"""Contracts of the recall family: ``item_neighbors`` and ``recall_items`` (docs/lookalike.md).

``cutoff_ts`` is a UTC timestamp: every row is built from events strictly before it.
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import WARNING, Param, TableContract, between, one_of, ordered, row_count_band
from features.events import TS_TYPE

ITEM_NEIGHBORS = TableContract(
    name="item_neighbors",
    schema=pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("neighbor_item_id", pa.string(), nullable=False),
            pa.field("similarity", pa.float64(), nullable=False),
            pa.field("co_users", pa.int64(), nullable=False),
            pa.field("window_start_ts", TS_TYPE, nullable=False),
            pa.field("cutoff_ts", TS_TYPE, nullable=False),
        ]
    ),
    column_docs={
        "item_id": "the item",
        "rank": "1-based; by similarity, then `co_users` descending, then `neighbor_item_id`",
        "neighbor_item_id": "a neighbour item (never `item_id`)",
        "similarity": "`cosine`: `co_users / sqrt(n_i · n_j)`, in (0, 1]; `swing`: the Swing score, > 0 (`recall.similarity`, docs/lookalike.md)",
        "co_users": "users with a positive on both items in the window",
        "window_start_ts": "start of the window, UTC: `cutoff_ts - window_days`",
        "cutoff_ts": "end of the window, UTC (exclusive)",
    },
    expectations=(
        between("rank", 1),
        between("similarity", 0, strict_min=True),
        between("similarity", 0, 1, strict_min=True, when=("similarity", "cosine")),
        between("co_users", Param("min_co_users")),
        ordered("window_start_ts", "cutoff_ts", strict=True),
        row_count_band("version", severity=WARNING),
    ),
    key=("item_id", "rank"),
    description="Each item's top-K co-occurrence neighbours (cosine or Swing over users) from positives in the window before the cutoff.",
    invariants=(
        "neighbor_item_id != item_id; similarity > 0 (and <= 1 for cosine); co_users >= min_co_users",
        "rank = 1..n contiguous per item, at most k rows per item",
    ),
)

RECALL_ITEMS = TableContract(
    name="recall_items",
    schema=pa.schema(
        [
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("cutoff_ts", TS_TYPE, nullable=False),
        ]
    ),
    column_docs={
        "user_id": "the user",
        "rank": "1-based; the `i2i` rows by score descending, then `item_id`; then the `popular` rows by popularity, then `item_id`",
        "item_id": "a candidate item the user had no event with before the cutoff",
        "score": "`i2i`: `Σ similarity(i, item) · decay^position(i)` over the user's recent positive items `i`; `popular`: the item's share of the window's users with a positive, in (0, 1]",
        "source": "`i2i`, or `popular` for the top-up of short pools (`recall.fill: popular`)",
        "cutoff_ts": "the cutoff, UTC",
    },
    expectations=(
        between("rank", 1),
        between("score", 0, strict_min=True),
        one_of("source", ("i2i", "popular")),
        row_count_band("version", severity=WARNING),
    ),
    key=("user_id", "rank"),
    description="Each user's recall pool: up to N unseen items from the i2i neighbours of the recent history before the cutoff (optionally topped up with popular items).",
    invariants=(
        "no item the user had an event with before the cutoff",
        "rank = 1..n contiguous per user, at most size rows per user, source in {i2i, popular}",
        "score > 0 and non-increasing with rank within a source; every popular row ranks after every i2i row",
    ),
)
