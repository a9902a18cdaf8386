"""From items and their embedding to the rows of ``item_codes`` (pure; docs/fair.md)."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from features.item_codes.contracts import ITEM_CODES
from features.item_codes.quantize import codebook_digest, disambiguate, residual_kmeans, semantic_ids


@dataclass(frozen=True)
class CodeParams:
    """The quantiser's settings (the ``item_codes`` section's fields of the same names)."""

    levels: int = 4
    codebook_size: int = 256
    kmeans_iterations: int = 25
    backend: str = "auto"
    seed: int = 20220408


def assign_codes(item_ids, x: np.ndarray, params: CodeParams) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], str]:
    """(codes [n, levels], disambiguation [n], centroids, backend used) for items in a fixed order.

    Items are first sorted by ``item_id`` so the result does not depend on the input order.
    """
    ids = np.asarray(item_ids, dtype=object)
    order = np.argsort(ids.astype(str), kind="stable")
    codes_sorted, books, used = residual_kmeans(x[order], params.levels, params.codebook_size, params.seed,
                                                params.backend, params.kmeans_iterations)
    codes = np.empty_like(codes_sorted)
    codes[order] = codes_sorted
    return codes, disambiguate(ids, codes), books, used


def item_codes_table(item_ids, x: np.ndarray, params: CodeParams, embedding: str, cutoff_ts: dt.datetime,
                     record: dict | None = None) -> tuple[pa.Table, dict]:
    """The ``item_codes`` rows of ``item_ids`` with embedding rows ``x``, and build figures.

    ``record`` (inputs, versions, embedding settings) enters the codebook digest with ``params``
    and the cutoff, so two builds share a ``codebook_version`` only when they agree on all.
    """
    ids = np.asarray(item_ids, dtype=object)
    codes, dis, books, used = assign_codes(ids, x, params)
    version = codebook_digest(books, {**asdict(params), "backend": used, "embedding": embedding,
                                      "cutoff_ts": cutoff_ts.isoformat(), **(record or {})})
    n = len(ids)
    table = pa.table({
        "item_id": pa.array(list(ids), pa.string()),
        "codes": pa.array(codes.tolist(), pa.list_(pa.int32())),
        "disambiguation": pa.array(dis, pa.int32()),
        "semantic_id": pa.array(semantic_ids(codes, dis), pa.string()),
        "embedding": pa.array([embedding] * n, pa.string()),
        "codebook_version": pa.array([version] * n, pa.string()),
        "cutoff_ts": pa.array([cutoff_ts] * n, ITEM_CODES.schema.field("cutoff_ts").type),
    })
    prefixes = len({tuple(r) for r in codes.tolist()})
    stats = {
        "items": n, "backend": used, "codebook_version": version, "embedding_dim": int(x.shape[1]),
        "items_disambiguated": int((dis > 0).sum()),
        "distinct_code_prefixes": prefixes, "max_disambiguation": int(dis.max()) if n else 0,
        "codes_used_per_level": [int(len(np.unique(codes[:, j]))) for j in range(codes.shape[1])] if n else [],
    }
    return ITEM_CODES.conform(table), stats
