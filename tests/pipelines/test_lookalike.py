"""Jobs on a real warehouse: tables committed with their cutoff, invariants hold, the future changes nothing."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from features.events import EVENTS
from pipelines.settings import LookalikeSettings

T0 = dt.datetime(2022, 4, 8, tzinfo=dt.timezone.utc)
CUTOFF = T0 + dt.timedelta(days=5)


def events_table(n: int, seed: int, start_h: int, end_h: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = {
        "event_id": [f"{seed}-{i}" for i in range(n)],
        "source": ["test"] * n,
        "user_id": [f"u{rng.integers(40)}" for _ in range(n)],
        "item_id": [f"i{rng.integers(30)}" for _ in range(n)],
        "event_ts": [T0 + dt.timedelta(hours=int(h)) for h in rng.integers(start_h, end_h, n)],
        "is_click": [bool(b) for b in rng.integers(0, 2, n)],
        "source_file": ["f.csv"] * n,
        "source_line": list(range(1, n + 1)),
    }
    rows["event_date"] = [t.date() for t in rows["event_ts"]]
    cols = {f.name: pa.array(rows.get(f.name, [None] * n), type=f.type) for f in EVENTS.schema}
    return pa.table(cols)


def build_all(spark, wh, s):
    from pipelines.lookalike import build_lookalike_table, build_user_vectors_table
    from pipelines.recall import build_item_neighbors_table, build_recall_table

    build_user_vectors_table(spark, wh, s)
    build_lookalike_table(spark, wh, s)
    build_item_neighbors_table(spark, wh, s)
    build_recall_table(spark, wh, s)
    return {t: wh.read_arrow(t) for t in ("user_vectors", "lookalike_users", "item_neighbors", "recall_items")}


@pytest.mark.slow
def test_tables_ignore_events_after_the_cutoff(spark, warehouse):
    from pipelines.lookalike import check_lookalike, check_user_vectors
    from pipelines.recall import check_item_neighbors, check_recall

    s = LookalikeSettings(cutoff_ts=CUTOFF, k=5, lsh_window=4, lsh_bands=4, als_rank=4, als_iterations=4, min_co_users=1, recall_size=10)
    past = events_table(600, 1, 0, 120)
    warehouse.write_arrow(EVENTS, past)
    first = build_all(spark, warehouse, s)
    for check in (check_user_vectors, check_lookalike, check_item_neighbors, check_recall):
        counts = check(spark, warehouse, s)
        assert counts["rows"] > 0 and all(v == 0 for k, v in counts.items() if k != "rows"), counts
    assert warehouse.manifest("lookalike_users").producer["cutoff_ts"] == CUTOFF.isoformat()
    assert set(first["lookalike_users"].column("cutoff_ts").to_pylist()) == {CUTOFF}
    # New users, items and clicks after the cutoff: every table is the same.
    warehouse.write_arrow(EVENTS, pa.concat_tables([past, events_table(400, 2, 120, 200)]))
    second = build_all(spark, warehouse, s)
    for name, table in first.items():
        key = [(c, "ascending") for c in table.column_names if c in ("user_id", "item_id", "rank")]
        assert table.sort_by(key).equals(second[name].sort_by(key)), name
