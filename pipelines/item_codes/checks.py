"""Invariant counter of the item_codes family (docs/fair.md): all zero when ``item_codes`` holds.

Reads the table with Arrow (it has one row per item); the catalogue is ``items`` when committed,
else the items of ``events``.
"""
from __future__ import annotations

from features.dimensions import ITEMS
from features.events import EVENTS
from features.item_codes import ITEM_CODES
from pipelines.cutoffs import cutoff_provenance_violations
from pipelines.item_codes.params import ItemCodeSettings
from pipelines.warehouse import Warehouse


def check_item_codes(warehouse: Warehouse, settings: ItemCodeSettings) -> dict[str, int]:
    """Count violations: duplicate semantic IDs, codes out of range, items outside the catalogue, ..."""
    t = warehouse.read_arrow(ITEM_CODES.name).to_pydict()
    n = len(t["item_id"])
    sequences = [tuple(c) + (d,) for c, d in zip(t["codes"], t["disambiguation"])]
    source = ITEMS.name if warehouse.exists(ITEMS.name) else EVENTS.name
    catalogue = set(warehouse.read_arrow(source, columns=["item_id"]).column("item_id").to_pylist())
    out = {
        "rows": n,
        "duplicate_code_sequences": n - len(set(sequences)),
        "semantic_id_mismatch": sum(s != "-".join(map(str, q)) for s, q in zip(t["semantic_id"], sequences)),
        "codes_wrong_length": sum(len(c) != settings.levels for c in t["codes"]),
        "codes_out_of_range": sum(any(v < 0 or v >= settings.codebook_size for v in c) for c in t["codes"]),
        "disambiguation_out_of_range": sum(d < 0 or d > settings.max_disambiguation for d in t["disambiguation"]),
        "items_outside_catalogue": sum(i not in catalogue for i in t["item_id"]),
        "extra_codebook_versions": max(len(set(t["codebook_version"])) - 1, 0),
        "rows_with_other_cutoff": sum(c != settings.cutoff_ts for c in t["cutoff_ts"]),
    }
    out.update(cutoff_provenance_violations(warehouse, ITEM_CODES.name, settings.cutoff_ts))
    return {k: int(v) for k, v in out.items()}
