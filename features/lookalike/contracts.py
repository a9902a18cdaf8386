"""Contracts of the look-alike family: ``user_vectors`` and ``lookalike_users`` (docs/lookalike.md).

``cutoff_ts`` is a UTC timestamp: every row is built from events strictly before it.
Similarities are cosines in [-1, 1], rounded to ``SIM_DECIMALS`` decimals.
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import WARNING, TableContract, between, ordered, row_count_band
from features.events import TS_TYPE

USER_VECTORS = TableContract(
    name="user_vectors",
    schema=pa.schema(
        [
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32()), nullable=False),
            pa.field("profile_dim", pa.int32(), nullable=False),
            pa.field("behaviour_dim", pa.int32(), nullable=False),
            pa.field("n_events", pa.int64(), nullable=False),
            pa.field("n_positive", pa.int64(), nullable=False),
            pa.field("cutoff_ts", TS_TYPE, nullable=False),
        ]
    ),
    column_docs={
        "user_id": "the user",
        "vector": "unit-norm profile block ++ behaviour block (weighted), cosine = dot product",
        "profile_dim": "width of the profile block (0 when left out)",
        "behaviour_dim": "width of the ALS behaviour block (`als_rank`, or 0)",
        "n_events": "the user's events before the cutoff",
        "n_positive": "of which positive (click, rating >= `min_rating`, or any event)",
        "cutoff_ts": "the cutoff, UTC: only events strictly before it were used",
    },
    expectations=(
        between("profile_dim", 0),
        between("behaviour_dim", 0),
        between("n_events", 1),
        between("n_positive", 0),
        ordered("n_positive", "n_events"),
        row_count_band("version", severity=WARNING),
    ),
    key=("user_id",),
    description="One unit-norm vector per user with an event before the cutoff: profile block + ALS behaviour block (RAR look-alikes).",
    invariants=(
        "every user has at least one event with event_ts < cutoff_ts; nothing at or after the cutoff is used",
        "size(vector) = profile_dim + behaviour_dim for every row; the vector has L2 norm 1 (or is all zeros)",
    ),
)

LOOKALIKE_USERS = TableContract(
    name="lookalike_users",
    schema=pa.schema(
        [
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("neighbor_user_id", pa.string(), nullable=False),
            pa.field("similarity", pa.float64(), nullable=False),
            pa.field("cutoff_ts", TS_TYPE, nullable=False),
        ]
    ),
    column_docs={
        "user_id": "the user",
        "rank": "1-based; by similarity descending, then `neighbor_user_id`",
        "neighbor_user_id": "a look-alike user (never `user_id`)",
        "similarity": "exact cosine of the two `user_vectors`, in [-1, 1]",
        "cutoff_ts": "the cutoff of the vectors, UTC",
    },
    expectations=(
        between("rank", 1),
        between("similarity", -1, 1),
        row_count_band("version", severity=WARNING),
    ),
    key=("user_id", "rank"),
    description="Each user's top-K look-alike users (HNSW or SimHash candidates, exact cosine re-ranking) as of the cutoff.",
    invariants=(
        "neighbor_user_id != user_id; (user_id, neighbor_user_id) unique",
        "rank = 1..n contiguous per user, similarity non-increasing with rank, in [-1, 1]",
        "min(K, users - 1) rows per user",
    ),
)
