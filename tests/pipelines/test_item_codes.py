"""The item_codes job and its checks: a build from events before the cutoff, the training-rows
fit, the blocking invariants (a planted collision, codes out of range, an item outside the
catalogue), the settings section and the Dagster asset with its checks."""
from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from features.dimensions import ITEMS
from features.events import EVENTS
from features.item_codes import ITEM_CODES
from features.sequences import USER_SEQUENCES
from pipelines.item_codes import FAMILY, ItemCodeSettings, build_item_codes_table, check_item_codes

UTC = dt.timezone.utc
T0 = dt.datetime(2022, 4, 8, tzinfo=UTC)
CUTOFF = dt.datetime(2022, 4, 11, tzinfo=UTC)


def events(n_users: int = 40, n_items: int = 30, seed: int = 0) -> pa.Table:
    """Users with 8 events each over 5 days; items ``i00``..; the last days are after the cutoff."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 3  # three taste groups: items of one residue class mod 3
        for j in range(8):
            item = int(rng.choice([i for i in range(n_items) if i % 3 == group]))
            ts = T0 + dt.timedelta(days=int(rng.integers(0, 5)), seconds=u * 100 + j)
            rows.append((f"e{u}_{j}", f"u{u}", f"i{item:02d}", ts))
    rows.append(("late", "u0", "late_item", CUTOFF + dt.timedelta(hours=1)))  # after the cutoff: no code
    cols = {"event_id": [r[0] for r in rows], "user_id": [r[1] for r in rows], "item_id": [r[2] for r in rows],
            "event_ts": [r[3] for r in rows], "source": ["test"] * len(rows), "source_file": ["log.csv"] * len(rows),
            "source_line": list(range(len(rows))), "event_date": [r[3].date() for r in rows]}
    return pa.table({f.name: pa.array(cols.get(f.name, [None] * len(rows)), type=f.type) for f in EVENTS.schema})


def settings(**kw) -> ItemCodeSettings:
    base = dict(cutoff_ts=CUTOFF, levels=2, codebook_size=4, dim=4, backend="numpy")
    base.update(kw)
    return ItemCodeSettings(**base)


@pytest.fixture
def built(spark, warehouse):
    warehouse.write_arrow(EVENTS, events())
    s = settings()
    result = build_item_codes_table(spark, warehouse, s)
    return warehouse, s, result


def test_build_codes_every_item_seen_before_the_cutoff_uniquely(built, spark):
    wh, s, result = built
    table = wh.read_arrow(ITEM_CODES.name)
    ids = set(table.column("item_id").to_pylist())
    seen_before = {e["item_id"] for e in wh.read_arrow(EVENTS.name).to_pylist() if e["event_ts"] < CUTOFF}
    assert ids == seen_before and "late_item" not in ids
    assert check_item_codes(wh, s) == {k: (table.num_rows if k == "rows" else 0) for k in check_item_codes(wh, s)}
    stats = result.stats[ITEM_CODES.name]
    assert stats["items"] == table.num_rows and stats["backend"] == "numpy"
    producer = wh.manifest(ITEM_CODES.name).producer
    assert producer["cutoff_ts"] == CUTOFF.isoformat() and producer["codebook_version"] == stats["codebook_version"]
    # a rebuild with the same settings is the same table (deterministic for the seed)
    again = build_item_codes_table(spark, wh, s)
    assert wh.read_arrow(ITEM_CODES.name).equals(table)
    assert again.stats[ITEM_CODES.name]["codebook_version"] == stats["codebook_version"]
    # items of one taste group share their first code more often than items of different groups
    codes = {r["item_id"]: r["codes"][0] for r in table.to_pylist()}
    same = [codes[a] == codes[b] for a in codes for b in codes if a < b and int(a[1:]) % 3 == int(b[1:]) % 3]
    diff = [codes[a] == codes[b] for a in codes for b in codes if int(a[1:]) % 3 != int(b[1:]) % 3]
    assert np.mean(same) > np.mean(diff)


def _plant(wh, s, change):
    rows = wh.read_arrow(ITEM_CODES.name).to_pylist()
    change(rows)
    producer = dict(wh.manifest(ITEM_CODES.name).producer)  # the same build record: only the rows differ
    wh.write_arrow(ITEM_CODES, pa.Table.from_pylist(rows, schema=ITEM_CODES.schema), producer=producer)
    return check_item_codes(wh, s)


def test_a_planted_collision_fails_the_checks(built):
    wh, s, _ = built

    def collide(rows):
        rows[1]["codes"], rows[1]["disambiguation"] = rows[0]["codes"], rows[0]["disambiguation"]
        rows[1]["semantic_id"] = rows[0]["semantic_id"]

    counts = _plant(wh, s, collide)
    assert counts["duplicate_code_sequences"] == 1
    assert sum(v for k, v in counts.items() if k != "rows") == 1


def test_codes_out_of_range_and_items_outside_the_catalogue_fail_the_checks(built):
    wh, s, _ = built

    def spoil(rows):
        rows[0]["codes"] = [s.codebook_size, 0]
        rows[0]["semantic_id"] = f"{s.codebook_size}-0-{rows[0]['disambiguation']}"
        rows[1]["item_id"] = "not_in_catalogue"
        rows[2]["codes"] = [0]
        rows[2]["semantic_id"] = f"0-{rows[2]['disambiguation']}"

    counts = _plant(wh, s, spoil)
    assert counts["codes_out_of_range"] == 1 and counts["items_outside_catalogue"] == 1
    assert counts["codes_wrong_length"] == 1


def test_the_catalogue_is_the_items_table_when_committed(built, spark):
    wh, s, _ = built
    wh.write_arrow(ITEMS, pa.table({"item_id": ["i00", "i01"], "source": ["test", "test"]}))
    assert check_item_codes(wh, s)["items_outside_catalogue"] > 0
    build_item_codes_table(spark, wh, s)  # rebuilt against the catalogue: only its items
    assert sorted(wh.read_arrow(ITEM_CODES.name).column("item_id").to_pylist()) == ["i00", "i01"]
    assert check_item_codes(wh, s)["items_outside_catalogue"] == 0


def test_fit_on_training_rows_codes_only_training_items(spark, warehouse):
    ts = [T0 + dt.timedelta(hours=h) for h in range(5)]
    rows = {"event_id": [f"e{i}" for i in range(5)], "user_id": ["u"] * 5, "target_item_id": ["a", "b", "c", "d", "e"],
            "target_ts": ts, "target_play_time_ms": [0] * 5, "hist_item_ids": [[]] * 5, "hist_ts": [[]] * 5,
            "hist_play_time_ms": [[]] * 5, "hist_len": [0] * 5, "seq_pos": list(range(5)),
            "split": ["train", "train", "train", "valid", "test"], "target_date": [t.date() for t in ts]}
    warehouse.write_arrow(USER_SEQUENCES, pa.table(rows, schema=USER_SEQUENCES.schema))
    warehouse.write_arrow(EVENTS, events(n_users=2, n_items=6))
    s = settings(fit_on="user_sequences_train", cutoff_ts=dt.datetime(2100, 1, 1, tzinfo=UTC))
    with pytest.raises(Exception):
        check_item_codes(warehouse, s)  # no table yet
    warehouse.write_arrow(EVENTS, pa.table({f.name: pa.array(
        {"event_id": ["x"] * 5, "user_id": ["u"] * 5, "item_id": list("abcde"), "event_ts": ts, "source": ["t"] * 5,
         "source_file": ["f"] * 5, "source_line": list(range(5)), "event_date": [t.date() for t in ts]}.get(f.name, [None] * 5),
        type=f.type) for f in EVENTS.schema}))
    build_item_codes_table(spark, warehouse, s)
    assert sorted(warehouse.read_arrow(ITEM_CODES.name).column("item_id").to_pylist()) == ["a", "b", "c"]
    assert warehouse.manifest(ITEM_CODES.name).producer["fit_on"] == "user_sequences_train"


def test_the_settings_section(tmp_path):
    from pipelines.config import ConfigError
    from pipelines.settings import load_settings

    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text("item_codes: {levels: 3, codebook_size: 64}\n")
    s = load_settings(cfg)
    section = FAMILY.section(s)
    assert section.levels == 3 and section.cutoff_ts == s.lookalike.cutoff_ts  # null: lookalike.cutoff_ts
    assert FAMILY.expectation_params(s) == {"max_code": 63, "max_disambiguation": 255}
    bad = tmp_path / "bad.yaml"
    bad.write_text("item_codes: {level: 3}\n")
    with pytest.raises(ConfigError, match="item_codes.level: unknown key"):
        load_settings(bad)
    bad.write_text("item_codes: {backend: cuda}\n")
    with pytest.raises(ConfigError, match="item_codes.backend"):
        load_settings(bad)


def test_the_asset_and_its_blocking_checks_are_in_the_graph(tmp_path):
    from orchestration.definitions import build_definitions
    from pipelines.settings import load_settings

    config = tmp_path / "recfeat.yaml"
    config.write_text(f"warehouse: {{root: {tmp_path}/warehouse}}\n")
    defs = build_definitions(load_settings(config), str(config))
    node = defs.resolve_asset_graph().get(dg.AssetKey("item_codes"))
    assert {dg.AssetKey("events"), dg.AssetKey("user_sequences")} <= set(node.parent_keys)
    specs = {s.name: s for c in defs.asset_checks for s in c.check_specs if s.asset_key == dg.AssetKey("item_codes")}
    assert {"item_codes_quality", "item_codes_invariants"} <= set(specs) and all(s.blocking for s in specs.values())
    fair = defs.resolve_asset_graph().get(dg.AssetKey("fair"))
    assert {dg.AssetKey("user_sequences"), dg.AssetKey("item_codes")} <= set(fair.parent_keys)
