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
    # Default ingest.repeated_lines: duplicate. The slice repeats 5,460 lines byte for byte
    # within their files (2,750 + 2,710): each repeat is a `duplicate` dead letter.
    adapter = kuairand_adapter(kuairand_dir)
    first = ingest_events(spark, warehouse, adapter, chunk_rows=100_000)
    assert first.records_in == 228_329
    assert first.manifest.row_count == 222_869
    assert (first.new_events, first.duplicates, first.rejected) == (222_869, 5_460, 0)
    assert first.by_reason == {"duplicate": 5_460}
    # Beijing-time days 04-25 .. 05-08 cover UTC days 04-24 .. 05-08.
    assert sorted(first.manifest.partitions) == [
        (dt.date(2022, 4, 24) + dt.timedelta(days=i)).isoformat() for i in range(15)
    ]
    assert first.manifest.partitions["2022-04-24"].row_count == 2_408
    table = sorted_events(warehouse)
    assert pc.count_distinct(table.column("event_id")).as_py() == 222_869
    assert pc.count_distinct(table.column("user_id")).as_py() == 25_156
    assert pc.count_distinct(table.column("item_id")).as_py() == 6_361
    letters = warehouse.read_arrow("rejected_events")
    assert letters.num_rows == 5_460 and set(letters.column("reason_code").to_pylist()) == {"duplicate"}
    counts = letters.group_by("source_file").aggregate([("source_line", "count")]).to_pylist()
    assert {r["source_file"]: r["source_line_count"] for r in counts} == {
        "log_standard_4_25_to_4_30_pure.csv.gz": 2_750,
        "log_standard_5_01_to_5_08_pure.csv.gz": 2_710,
    }

    again = ingest_events(spark, warehouse, adapter, chunk_rows=100_000)
    assert (again.new_events, again.already_present, again.duplicates, again.rejected) == (0, 222_869, 5_460, 0)
    assert again.manifest.row_count == 222_869
    assert sorted_events(warehouse).equals(table)
    assert warehouse.read_arrow("rejected_events").num_rows == 5_460

    users = ingest_dimension(warehouse, adapter, "users")
    items = ingest_dimension(warehouse, adapter, "items")
    assert users.row_count == 27_285
    assert items.row_count == 7_583


@pytest.mark.slow
def test_kuairand_slice_with_distinct_repeats_keeps_every_row(spark, tmp_path, kuairand_dir):
    # ingest.repeated_lines: distinct (configs/kuairand.yaml): parity with the published code,
    # every log row an event; the first copies have the same ids as under `duplicate`.
    from pipelines.warehouse import Warehouse

    warehouse = Warehouse(str(tmp_path / "distinct"))
    result = ingest_events(spark, warehouse, kuairand_adapter(kuairand_dir), chunk_rows=100_000, repeated_lines="distinct")
    assert (result.records_in, result.new_events, result.duplicates, result.rejected) == (228_329, 228_329, 0, 0)
    assert result.manifest.row_count == 228_329
    assert result.manifest.partitions["2022-04-24"].row_count == 2_452
    assert result.manifest.producer["repeated_lines"] == "distinct"
    assert warehouse.read_arrow("rejected_events").num_rows == 0


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
    # The two identical lines of log_a are distinct impressions here (ingest.repeated_lines:
    # distinct); test_exact_repeats_follow_repeated_lines_on_both_engines covers both modes.
    distinct = {"repeated_lines": "distinct"}

    # A window of the first day only: the second day's record is not taken.
    r1 = ingest_events(spark, warehouse, adapter, window=DateWindow(dt.date(2022, 4, 25), dt.date(2022, 4, 26)), **distinct)
    assert r1.records_in == 3 and r1.in_window == 2 and r1.new_events == 2
    assert sorted(r1.manifest.partitions) == ["2022-04-25"]

    # An overlapping file (one shared record, one new, gzipped) over a two-day window.
    b = [kuairand_line(1, 10, DAY0 + 5), kuairand_line(3, 12, DAY0 + DAY + 9)]
    with gzip.open(src / "log_b.csv.gz", "wt") as fh:
        fh.write("\n".join([HEADER, *b]) + "\n")
    r2 = ingest_events(spark, warehouse, adapter, window=DateWindow(dt.date(2022, 4, 25), dt.date(2022, 4, 27)), **distinct)
    assert r2.manifest.row_count == 4  # two repeats of (1,10) in a + (2,11) + (3,12); b's (1,10) collapses
    assert {k: p.row_count for k, p in r2.manifest.partitions.items()} == {"2022-04-25": 2, "2022-04-26": 2}
    before = sorted_events(warehouse)

    # Re-running the same window changes nothing.
    r3 = ingest_events(spark, warehouse, adapter, window=DateWindow(dt.date(2022, 4, 25), dt.date(2022, 4, 27)), **distinct)
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


def test_a_corrupt_file_is_a_dead_letter_and_a_failing_run_keeps_the_last_good_table(spark, warehouse, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, kuairand_line(1, 10, DAY0 + 5)]) + "\n")
    adapter = kuairand_adapter(src)
    ingest_events(spark, warehouse, adapter)
    # A source file that cannot be read at all (a corrupt gzip stream) is one dead letter; the
    # run goes on, and with nothing new it commits no events version.
    (src / "log_b.csv.gz").write_bytes(b"\x1f\x8b\x08\x00not a gzip stream" * 10)
    r = ingest_events(spark, warehouse, adapter)
    assert (r.records_in, r.already_present, r.rejected, r.by_reason) == (2, 1, 1, {"unreadable_file": 1})
    assert not r.events_committed and warehouse.current_version(EVENTS.name) == 1
    letter = warehouse.read_arrow("rejected_events").to_pylist()[0]
    assert (letter["source_file"], letter["source_line"], letter["reason_code"]) == ("log_b.csv.gz", 0, "unreadable_file")

    # A run that fails while committing leaves the last good tables as they were.
    (src / "log_c.csv").write_text("\n".join([HEADER, kuairand_line(2, 11, DAY0 + 6)]) + "\n")
    before = {t: warehouse.current_version(t) for t in (EVENTS.name, "rejected_events", "ingest_runs")}

    def failing_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(warehouse, "write_spark", failing_write)
    with pytest.raises(OSError, match="disk full"):
        ingest_events(spark, warehouse, adapter)
    assert {t: warehouse.current_version(t) for t in before} == before
    assert warehouse.read_arrow(EVENTS.name).num_rows == 1
    shutil.rmtree(src)


@pytest.mark.parametrize("engine", ["beam", "spark"])
@pytest.mark.parametrize("mode", ["duplicate", "distinct"])
def test_exact_repeats_follow_repeated_lines_on_both_engines(spark, warehouse, tmp_path, engine, mode):
    from features.events import event_id, record_key

    src = tmp_path / "src"
    src.mkdir()
    x, y = kuairand_line(1, 10, DAY0 + 5), kuairand_line(2, 11, DAY0 + 6)
    (src / "log_a.csv").write_text("\n".join([HEADER, x, x, y, x]) + "\n")  # x repeated twice, byte for byte
    (src / "log_b.csv").write_text("\n".join([HEADER, x, y]) + "\n")  # an overlapping export
    adapter = kuairand_adapter(src)

    r = ingest_events(spark, warehouse, adapter, engine=engine, repeated_lines=mode)

    events = {(e["source_file"], e["source_line"]): e["event_id"] for e in warehouse.read_arrow(EVENTS.name).to_pylist()}
    letters = {
        (x["source_file"], x["source_line"]): (x["reason_code"], x["reason"], x["raw_record"])
        for x in warehouse.read_arrow("rejected_events").to_pylist()
    }
    key = {x: record_key(x.split(",")), y: record_key(y.split(","))}
    if mode == "duplicate":
        assert events == {("log_a.csv", 1): event_id("kuairand", key[x], 0), ("log_a.csv", 3): event_id("kuairand", key[y], 0)}
        assert letters == {
            ("log_a.csv", 2): ("duplicate", "exact repeat of line 1 of the same file", x),
            ("log_a.csv", 4): ("duplicate", "exact repeat of line 1 of the same file", x),
            ("log_b.csv", 1): ("duplicate", "same event_id as log_a.csv line 1", x),
            ("log_b.csv", 2): ("duplicate", "same event_id as log_a.csv line 3", y),
        }
        assert (r.records_in, r.new_events, r.duplicates, r.rejected) == (6, 2, 4, 0)
    else:
        assert events == {
            ("log_a.csv", 1): event_id("kuairand", key[x], 0),
            ("log_a.csv", 2): event_id("kuairand", key[x], 1),
            ("log_a.csv", 3): event_id("kuairand", key[y], 0),
            ("log_a.csv", 4): event_id("kuairand", key[x], 2),
        }
        assert letters == {
            ("log_b.csv", 1): ("duplicate", "same event_id as log_a.csv line 1", x),
            ("log_b.csv", 2): ("duplicate", "same event_id as log_a.csv line 3", y),
        }
        assert (r.records_in, r.new_events, r.duplicates, r.rejected) == (6, 4, 2, 0)
    assert r.by_reason == {"duplicate": r.duplicates}
    assert r.manifest.producer["repeated_lines"] == mode
    run = warehouse.read_arrow("ingest_runs").to_pylist()[-1]
    assert run["records_in"] == run["new_events"] + run["already_present"] + run["outside_window"] + run["rejected"] + run["duplicates"]

    # Re-ingesting the same files is idempotent: nothing new in events or rejected_events.
    before = (sorted_events(warehouse), warehouse.read_arrow("rejected_events").num_rows)
    again = ingest_events(spark, warehouse, adapter, engine=engine, repeated_lines=mode)
    assert (again.new_events, again.already_present, again.duplicates) == (0, r.new_events, r.duplicates)
    assert sorted_events(warehouse).equals(before[0])
    assert warehouse.read_arrow("rejected_events").num_rows == before[1]


def test_switching_repeated_lines_for_an_ingested_source_is_refused(spark, warehouse, tmp_path):
    from pipelines.ingest import IngestModeError

    src = tmp_path / "src"
    src.mkdir()
    x = kuairand_line(1, 10, DAY0 + 5)
    (src / "log_a.csv").write_text("\n".join([HEADER, x, x]) + "\n")
    adapter = kuairand_adapter(src)
    ingest_events(spark, warehouse, adapter, repeated_lines="distinct")
    with pytest.raises(IngestModeError, match="ingested into .* with ingest.repeated_lines: distinct; this run uses duplicate"):
        ingest_events(spark, warehouse, adapter, repeated_lines="duplicate")
    assert warehouse.current_version(EVENTS.name) == 1 and warehouse.read_arrow(EVENTS.name).num_rows == 2
    with pytest.raises(ValueError, match="repeated_lines must be one of duplicate, distinct"):
        ingest_events(spark, warehouse, adapter, repeated_lines="keep")
