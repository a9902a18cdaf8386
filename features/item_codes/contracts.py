"""Contract of the item_codes family: ``item_codes``, each item's semantic ID (docs/fair.md).

A semantic ID is ``levels`` code tokens from residual k-means over an item embedding plus one
disambiguation token that makes the sequence unique. ``cutoff_ts`` is a UTC timestamp: the
embedding is fitted on events strictly before it (and, with ``item_codes.fit_on:
user_sequences_train``, on the training rows of ``user_sequences`` only).
"""
from __future__ import annotations

import pyarrow as pa

from features.contracts import WARNING, Param, TableContract, between, each_between, one_of, row_count_band
from features.events import TS_TYPE

#: What the item embedding is made of (``item_codes.embedding``).
EMBEDDINGS = ("cooccurrence", "content", "both")

ITEM_CODES = TableContract(
    name="item_codes",
    schema=pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("codes", pa.list_(pa.int32()), nullable=False),
            pa.field("disambiguation", pa.int32(), nullable=False),
            pa.field("semantic_id", pa.string(), nullable=False),
            pa.field("embedding", pa.string(), nullable=False),
            pa.field("codebook_version", pa.string(), nullable=False),
            pa.field("cutoff_ts", TS_TYPE, nullable=False),
        ]
    ),
    column_docs={
        "item_id": "the item (in the catalogue: `items` when committed, else the events' items)",
        "codes": "the `levels` code tokens, coarse to fine: level `l` is the nearest of `codebook_size` centroids to the residual left by levels `0 .. l - 1` (residual k-means)",
        "disambiguation": "the extra token: 0, or the item's 0-based rank by `item_id` among items sharing all of `codes` (a collision)",
        "semantic_id": "`codes` and `disambiguation` joined with `-` (unique per row)",
        "embedding": "what the quantised vector was made of: `cooccurrence`, `content` or `both`",
        "codebook_version": "digest of the settings, the cutoff, the input table versions and the centroids (the same for every row)",
        "cutoff_ts": "UTC; the embedding used only events strictly before it",
    },
    expectations=(
        each_between("codes", 0, Param("max_code")),
        between("disambiguation", 0, Param("max_disambiguation")),
        one_of("embedding", EMBEDDINGS),
        row_count_band("version", severity=WARNING),
    ),
    key=("item_id",),
    description="Each item's semantic ID: residual k-means code tokens of an item embedding fitted before the cutoff, plus a disambiguation token.",
    invariants=(
        "every (codes, disambiguation) sequence is unique; size(codes) = levels",
        "every code in [0, codebook_size); disambiguation in [0, max_disambiguation]",
        "every item_id is in the catalogue; one codebook_version and one cutoff_ts per build",
    ),
)
