"""Ingestion into events/users/items: counts on real data, idempotent re-runs, windows, overlap."""
from __future__ import annotations

import datetime as dt
import gzip
import shutil

import pyarrow.compute as pc
import pytest

from features.events import EVENTS
from pipelines.ingest import DateWindow, ingest_dimension, ingest_events
from pipelines.settings import SourceConfig
from pipelines.sources import adapter_for


def kuairand_adapter(path):
    return adapter_for("kuairand", SourceConfig(kind="kuairand", path=str(path)))


def sorted_events(warehouse):
    return warehouse.read_arrow(EVENTS.name).sort_by([("event_id", "ascending")])


@pytest.mark.slow
def test_kuairand_slice_ingests_every_record_and_reruns_add_nothing(spark, warehouse, kuairand_dir):
    adapter = kuairand_adapter(kuairand_dir)
    first = ingest_events(spark, warehouse, adapter, chunk_rows=100_000)
    assert first.records_in == 228_329
    assert first.manifest.row_count == 228_329
    assert first.new_events == 228_329 and first.duplicates == 0 and first.rejected == 0
    # Beijing-time days 04-25 .. 05-08 cover UTC days 04-24 .. 05-08.
    assert sorted(first.manifest.partitions) == [
        (dt.date(2022, 4, 24) + dt.timedelta(days=i)).isoformat() for i in range(15)
    ]
    assert first.manifest.partitions["2022-04-24"].row_count == 2_452
    table = sorted_events(warehouse)
    assert pc.count_distinct(table.column("event_id")).as_py() == 228_329
    assert pc.count_distinct(table.column("user_id")).as_py() == 25_156
    assert pc.count_distinct(table.column("item_id")).as_py() == 6_361

    again = ingest_events(spark, warehouse, adapter, chunk_rows=100_000)
    assert again.new_events == 0 and again.already_present == 228_329 and again.rejected == 0
    assert again.manifest.row_count == 228_329
    assert sorted_events(warehouse).equals(table)

    users = ingest_dimension(warehouse, adapter, "users")
    items = ingest_dimension(warehouse, adapter, "items")
    assert users.row_count == 27_285
    assert items.row_count == 7_583


@pytest.mark.shared_data
def test_ml100k_ingests_100k_events(spark, warehouse, ml100k_dir):
    adapter = adapter_for("ml-100k", SourceConfig(kind="movielens", path=str(ml100k_dir)))
    result = ingest_events(spark, warehouse, adapter)
    assert result.records_in == 100_000
    assert result.manifest.row_count == 100_000
    table = warehouse.read_arrow(EVENTS.name, columns=["user_id", "item_id", "rating", "event_ts"])
    assert pc.count_distinct(table.column("user_id")).as_py() == 943
    assert pc.count_distinct(table.column("item_id")).as_py() == 1_682
    assert pc.min(table.column("rating")).as_py() == 1 and pc.max(table.column("rating")).as_py() == 5
    assert ingest_dimension(warehouse, adapter, "users").row_count == 943
    assert ingest_dimension(warehouse, adapter, "items").row_count == 1_682


HEADER = "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"


def kuairand_line(user: int, video: int, ts_ms: int, play: int = 1000, duration: int = 9000) -> str:
    return f"{user},{video},20220425,0,{ts_ms},1,0,0,0,0,0,0,{play},{duration},0,0,0,0,1"


DAY0 = int(dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc).timestamp() * 1000)
DAY = 86_400_000


def test_overlapping_files_repeats_and_windows(spark, warehouse, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = [kuairand_line(1, 10, DAY0 + 5), kuairand_line(1, 10, DAY0 + 5), kuairand_line(2, 11, DAY0 + DAY + 7)]
    (src / "log_a.csv").write_text("\n".join([HEADER, *a]) + "\n")
    adapter = kuairand_adapter(src)

    # A window of the first day only: the second day's record is not taken.
    r1 = ingest_events(spark, warehouse, adapter, window=DateWindow(dt.date(2022, 4, 25), dt.date(2022, 4, 26)))
    assert r1.records_in == 3 and r1.in_window == 2 and r1.new_events == 2
    assert sorted(r1.manifest.partitions) == ["2022-04-25"]

    # An overlapping file (one shared record, one new, gzipped) over a two-day window.
    b = [kuairand_line(1, 10, DAY0 + 5), kuairand_line(3, 12, DAY0 + DAY + 9)]
    with gzip.open(src / "log_b.csv.gz", "wt") as fh:
        fh.write("\n".join([HEADER, *b]) + "\n")
    r2 = ingest_events(spark, warehouse, adapter, window=DateWindow(dt.date(2022, 4, 25), dt.date(2022, 4, 27)))
    assert r2.manifest.row_count == 4  # two repeats of (1,10) in a + (2,11) + (3,12); b's (1,10) collapses
    assert {k: p.row_count for k, p in r2.manifest.partitions.items()} == {"2022-04-25": 2, "2022-04-26": 2}
    before = sorted_events(warehouse)

    # Re-running the same window changes nothing.
    r3 = ingest_events(spark, warehouse, adapter, window=DateWindow(dt.date(2022, 4, 25), dt.date(2022, 4, 27)))
    assert r3.new_events == 0
    assert sorted_events(warehouse).equals(before)
    # Events are traceable to their file and line.
    rows = {(r["source_file"], r["source_line"]) for r in before.select(["source_file", "source_line"]).to_pylist()}
    assert rows == {("log_a.csv", 1), ("log_a.csv", 2), ("log_a.csv", 3), ("log_b.csv.gz", 2)}


def test_bad_records_become_dead_letters_and_reruns_add_nothing(spark, warehouse, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lines = [kuairand_line(1, 10, DAY0 + 5), "1,2,x,y,not-a-time", kuairand_line(2, 11, DAY0 + 6, play=-5)]
    (src / "log_a.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    adapter = kuairand_adapter(src)
    r = ingest_events(spark, warehouse, adapter)
    assert (r.records_in, r.new_events, r.rejected, r.duplicates) == (3, 1, 2, 0)
    letters = warehouse.read_arrow("rejected_events").sort_by("source_line").to_pylist()
    assert [(x["source_line"], x["reason_code"]) for x in letters] == [(2, "wrong_column_count"), (3, "negative_play_time")]
    assert letters[0]["raw_record"] == "1,2,x,y,not-a-time"
    again = ingest_events(spark, warehouse, adapter)
    assert (again.new_events, again.already_present, again.rejected) == (0, 1, 2)
    assert warehouse.read_arrow("rejected_events").num_rows == 2
    runs = warehouse.read_arrow("ingest_runs").to_pylist()
    assert [x["records_in"] for x in runs] == [3, 3]
    assert all(x["records_in"] == x["new_events"] + x["already_present"] + x["outside_window"] + x["rejected"] + x["duplicates"] for x in runs)


def test_a_failing_ingest_keeps_the_last_good_table(spark, warehouse, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, kuairand_line(1, 10, DAY0 + 5)]) + "\n")
    adapter = kuairand_adapter(src)
    ingest_events(spark, warehouse, adapter)
    # A source file that cannot be read at all (a corrupt gzip stream) fails the run.
    (src / "log_b.csv.gz").write_bytes(b"\x1f\x8b\x08\x00not a gzip stream" * 10)
    with pytest.raises(Exception):
        ingest_events(spark, warehouse, adapter)
    assert warehouse.current_version(EVENTS.name) == 1
    assert warehouse.read_arrow(EVENTS.name).num_rows == 1
    shutil.rmtree(src)
