"""The user_sequences and rote_features jobs: full and incremental builds, k-core, invariants."""
from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pytest

from features.events import EVENTS, FEEDBACK_FLAGS
from features.rote import ROTE_FEATURES, rote_features, to_epoch_seconds
from features.sequences import USER_SEQUENCES
from pipelines.sequences import build_sequences_table, check_rote, check_sequences
from pipelines.settings import SequenceSettings
from pipelines.warehouse import Warehouse

UTC = dt.timezone.utc
DAY0 = dt.date(2022, 4, 8)


def events_table(n_days: int = 3, per_day: int = 40, seed: int = 7) -> pa.Table:
    """A small log over ``n_days`` UTC days: 5 users, 6 items, many ties in time."""
    rnd = random.Random(seed)
    rows = []
    for d in range(n_days):
        day = dt.datetime.combine(DAY0 + dt.timedelta(days=d), dt.time(), UTC)
        for i in range(per_day):
            ts = day + dt.timedelta(minutes=rnd.choice([0, 0, 5, 30, 600, 1439]))
            rows.append(
                {
                    "event_id": f"e{d}-{i:03d}",
                    "source": "test",
                    "user_id": f"u{rnd.randrange(5)}",
                    "item_id": f"i{rnd.randrange(6)}",
                    "event_ts": ts,
                    "play_time_ms": 1000 * i,
                    "duration_ms": 60_000,
                    "rating": None,
                    **{f: None for f in FEEDBACK_FLAGS},
                    "event_date": ts.date(),
                    "source_file": f"log{d}.csv",
                    "source_line": i + 1,
                }
            )
    return pa.Table.from_pylist(rows, schema=pa.schema([pa.field(f.name, f.type) for f in EVENTS.schema]))


def temporal(**kw) -> SequenceSettings:
    return SequenceSettings(
        max_len=3,
        split="temporal",
        valid_from=dt.datetime(2022, 4, 9, tzinfo=UTC),
        test_from=dt.datetime(2022, 4, 10, tzinfo=UTC),
        **kw,
    )


def rows_by_id(wh: Warehouse, table: str) -> dict[str, dict]:
    return {r["event_id"]: r for r in wh.read_arrow(table).to_pylist()}


def test_incremental_days_equal_the_full_build_and_leave_earlier_partitions_untouched(spark, tmp_path):
    full_wh = Warehouse(str(tmp_path / "full"))
    full_wh.write_arrow(EVENTS, events_table())
    build_sequences_table(spark, full_wh, temporal())

    wh = Warehouse(str(tmp_path / "incremental"))
    wh.write_arrow(EVENTS, events_table())
    settings = temporal(build="incremental")
    entries = {}
    for d in range(3):
        day = DAY0 + dt.timedelta(days=d)
        manifest = build_sequences_table(spark, wh, settings, day, day + dt.timedelta(days=1))[USER_SEQUENCES.name]
        assert manifest.written_partitions == (day.isoformat(),)
        for earlier, entry in entries.items():
            assert manifest.partitions[earlier] == entry, f"partition {earlier} was rewritten by the build of {day}"
        entries = dict(manifest.partitions)
    assert rows_by_id(wh, USER_SEQUENCES.name) == rows_by_id(full_wh, USER_SEQUENCES.name)
    assert all(v == 0 for k, v in check_sequences(spark, wh, settings).items() if k != "rows")

    # Re-running a day gives the same rows; the other partitions keep their files.
    before = rows_by_id(wh, USER_SEQUENCES.name)
    again = build_sequences_table(spark, wh, settings, DAY0 + dt.timedelta(days=2), DAY0 + dt.timedelta(days=3))[USER_SEQUENCES.name]
    assert again.partitions["2022-04-08"] == entries["2022-04-08"]
    assert rows_by_id(wh, USER_SEQUENCES.name) == before


def test_incremental_build_needs_a_window(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    wh.write_arrow(EVENTS, events_table(n_days=1))
    with pytest.raises(ValueError, match="window"):
        build_sequences_table(spark, wh, temporal(build="incremental"))


def test_full_build_with_k_core_and_rote_features(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    events = events_table()
    wh.write_arrow(EVENTS, events)
    settings = SequenceSettings(max_len=4, k_core={"min_user_events": 20, "min_item_events": 10})
    manifest = build_sequences_table(spark, wh, settings)[USER_SEQUENCES.name]
    assert manifest.producer["k_core_passes"] != "0"
    seqs = wh.read_arrow(USER_SEQUENCES.name)
    # Every remaining user and item meets its bound within the kept rows.
    users = seqs.group_by("user_id").aggregate([("event_id", "count")]).to_pylist()
    items = seqs.group_by("target_item_id").aggregate([("event_id", "count")]).to_pylist()
    assert users and all(u["event_id_count"] >= 20 for u in users)
    assert all(i["event_id_count"] >= 10 for i in items)
    assert seqs.num_rows < events.num_rows
    assert all(v == 0 for k, v in check_sequences(spark, wh, settings).items() if k != "rows")

    rote = rows_by_id(wh, ROTE_FEATURES.name)
    assert set(rote) == {r["event_id"] for r in seqs.to_pylist()}
    assert all(v == 0 for k, v in check_rote(spark, wh, settings).items() if k != "rows")
    # The stored lists equal features/rote.py applied to the row's own history.
    for row in [r for r in seqs.to_pylist() if r["hist_len"]][:40]:
        hist = to_epoch_seconds(pa.array(row["hist_ts"], pa.timestamp("us", tz="UTC")))
        target = to_epoch_seconds(pa.array([row["target_ts"]], pa.timestamp("us", tz="UTC")))
        ref = rote_features(hist[None, :], target)
        got = rote[row["event_id"]]
        assert got["hist_len"] == row["hist_len"]
        assert got["hist_day_id"] == list(ref["hist_day_id"][0])
        assert got["hist_month_id_rel"] == list(ref["hist_month_id_rel"][0])
        assert got["gap_to_target_s"] == list(ref["gap_to_target_s"][0])
        assert got["target_year_id"] == int(ref["target_year_id"][0])
        assert got["query_ts_s"] == int(ref["query_ts_s"][0])


def test_incremental_rote_features_cover_only_the_window(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    wh.write_arrow(EVENTS, events_table(n_days=2))
    settings = temporal(build="incremental", rote_levels=["day", "hour"])
    for d in range(2):
        day = DAY0 + dt.timedelta(days=d)
        manifest = build_sequences_table(spark, wh, settings, day, day + dt.timedelta(days=1))[ROTE_FEATURES.name]
        assert manifest.written_partitions == (day.isoformat(),)
    names = wh.read_arrow(ROTE_FEATURES.name).schema.names
    assert "hist_hour_id" in names and "hist_year_id" not in names
    assert all(v == 0 for k, v in check_rote(spark, wh, settings).items() if k != "rows")
