"""Contracts of the dimension tables ``users`` and ``items``.

Both are keyed by the source's own id (as a string) and carry the source name. Their other
columns depend on the source (KuaiRand's user and video features, MovieLens's profile and
movie attributes) and are documented per adapter in ``docs/tables.md``; the contracts are
therefore *open*: the required columns come first, source attributes follow.
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import TableContract, register

USERS = register(
    TableContract(
        name="users",
        schema=pa.schema(
            [pa.field("user_id", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False)]
        ),
        key=("user_id",),
        open_columns=True,
        description="One row per user known to the source's user file, with its profile attributes.",
        invariants=("user_id is unique and never null",),
    )
)

ITEMS = register(
    TableContract(
        name="items",
        schema=pa.schema(
            [pa.field("item_id", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False)]
        ),
        key=("item_id",),
        open_columns=True,
        description="One row per item (video, movie) known to the source's item file, with its attributes.",
        invariants=("item_id is unique and never null",),
    )
)
