"""Contracts of the dimension tables ``users`` and ``items``.

Both are keyed by the source's own id (as a string) and carry the source name. Their other
columns depend on the source (KuaiRand's user and video features, MovieLens's profile and
movie attributes) and are documented per adapter in ``docs/tables.md``; the contracts are
therefore *open*: the required columns come first, source attributes follow.
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import WARNING, TableContract, row_count_band

USERS = TableContract(
    name="users",
    schema=pa.schema(
        [pa.field("user_id", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False)]
    ),
    column_docs={
        "user_id": "the source's user id",
        "source": "the source name",
        "<attribute>": "a profile attribute of the source's user file (KuaiRand/synthetic: `user_features*.csv`; MovieLens: `age`, `gender`, `occupation`, `zip_code`; generic: every column of the configured user file; docs/sources.md)",
    },
    open_column_types={"<attribute>": "per source"},
    expectations=(row_count_band("version", severity=WARNING),),
    key=("user_id",),
    open_columns=True,
    description="One row per user known to the source's user file, with its profile attributes.",
    invariants=("user_id is unique and never null",),
)

ITEMS = TableContract(
    name="items",
    schema=pa.schema(
        [pa.field("item_id", pa.string(), nullable=False), pa.field("source", pa.string(), nullable=False)]
    ),
    column_docs={
        "item_id": "the source's item id",
        "source": "the source name",
        "<attribute>": "an attribute of the source's item file (KuaiRand/synthetic: `video_features_basic*.csv`, with `duration_ms` from `video_duration`; MovieLens: title, release year, genres; generic: every column of the configured item file; docs/sources.md)",
    },
    open_column_types={"<attribute>": "per source"},
    expectations=(row_count_band("version", severity=WARNING),),
    key=("item_id",),
    open_columns=True,
    description="One row per item (video, movie) known to the source's item file, with its attributes.",
    invariants=("item_id is unique and never null",),
)
