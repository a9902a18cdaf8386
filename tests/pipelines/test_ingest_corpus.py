"""The bad-input corpus through the whole ingestion run, on both engines: every bad record is a
dead letter with its reason, every good one an event, overlapping files give `duplicate`
letters, and the counts balance. A property test does the same on random mixtures."""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import os
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.events import EVENTS, REPEATED_LINES
from pipelines.beam_ingest import run_stage
from pipelines.ingest import ingest_events
from pipelines.settings import IngestRules, SourceConfig
from pipelines.sources import adapter_for

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_inputs"
KUAIRAND_FILES = ["log_bad_a.csv", "log_bad_b.csv.gz"]
NOW = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
)


def expected_reasons() -> dict[tuple[str, int], str]:
    with open(CORPUS / "expected.csv", newline="") as fh:
        return {(r["file"], int(r["line"])): r["reason_code"] for r in csv.DictReader(fh) if r["file"] in KUAIRAND_FILES}


def data_line_count(path: Path) -> int:
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if path.name.endswith(".gz") else raw
    return sum(1 for x in re.split(rb"\r\n|\r|\n", raw)[1:] if x)


@pytest.mark.parametrize("engine", ["beam", "spark"])
@pytest.mark.parametrize("mode", REPEATED_LINES)
def test_corpus_through_the_pipeline(spark, warehouse, tmp_path, engine, mode):
    src = tmp_path / "src"
    src.mkdir()
    for name in KUAIRAND_FILES:
        shutil.copy(CORPUS / name, src / name)
    # An overlapping export: the first good line of log_bad_a.csv again, in another file.
    first_good = (CORPUS / "log_bad_a.csv").read_text().splitlines()[1]
    (src / "log_overlap.csv").write_text(f"{HEADER}\n{first_good}\n")
    adapter = adapter_for("corpus", SourceConfig(kind="kuairand", path=str(src)))

    result = ingest_events(spark, warehouse, adapter, rules=IngestRules(), engine=engine, now=NOW, repeated_lines=mode)

    # The adapter's own reading of the good lines, in file order.
    staged = {}
    for name in KUAIRAND_FILES:
        for conv in adapter.read_records(str(src / name), IngestRules(), now=NOW):
            for row in conv.staged.to_pylist():
                staged[(row["source_file"], row["source_line"])] = row
    # Good lines that repeat an earlier good line of their file byte for byte (log_bad_a.csv
    # line 19 repeats line 18): duplicates under `duplicate`, events under `distinct`.
    seen, repeats = set(), set()
    for place, row in sorted(staged.items()):
        if (place[0], row["record_key"]) in seen:
            repeats.add(place)
        seen.add((place[0], row["record_key"]))
    assert ("log_bad_a.csv", 19) in repeats
    if mode == "distinct":
        repeats = set()

    expected = expected_reasons()
    letters = {(r["source_file"], r["source_line"]): r for r in warehouse.read_arrow("rejected_events").to_pylist()}
    assert {k: r["reason_code"] for k, r in letters.items() if r["reason_code"] != "duplicate"} == expected
    assert {k for k, r in letters.items() if r["reason_code"] == "duplicate"} == {("log_overlap.csv", 1)} | repeats
    lines = {name: data_line_count(src / name) for name in KUAIRAND_FILES}
    good = {(name, i) for name, n in lines.items() for i in range(1, n + 1)} - set(expected) - repeats
    events = warehouse.read_arrow(EVENTS.name).to_pylist()
    assert {(e["source_file"], e["source_line"]) for e in events} == good
    assert result.records_in == sum(lines.values()) + 1
    assert (result.rejected, result.duplicates, result.new_events) == (len(expected), 1 + len(repeats), len(good))
    assert result.records_in == result.new_events + result.already_present + result.outside_window + result.rejected + result.duplicates
    # Good records arrive unchanged.
    for e in events:
        s = staged[(e["source_file"], e["source_line"])]
        assert (e["user_id"], e["item_id"], e["event_ts"], e["play_time_ms"], e["duration_ms"]) == (
            s["user_id"], s["item_id"], s["event_ts"], s["play_time_ms"], s["duration_ms"]
        )
    # Re-running adds nothing anywhere.
    before = (warehouse.read_arrow(EVENTS.name).num_rows, warehouse.read_arrow("rejected_events").num_rows)
    again = ingest_events(spark, warehouse, adapter, rules=IngestRules(), engine=engine, now=NOW, repeated_lines=mode)
    assert again.new_events == 0 and again.already_present == len(good)
    assert (warehouse.read_arrow(EVENTS.name).num_rows, warehouse.read_arrow("rejected_events").num_rows) == before


GOOD = st.tuples(st.integers(1, 50), st.integers(1, 30), st.integers(0, 86_400_000), st.integers(0, 90_000))
FAULTS = {
    "negative_play_time": lambda u, i, t: f"{u},{i},20220425,0,{1650812741436 + t},1,0,0,0,0,0,0,-7,9000,0,0,0,0,1",
    "wrong_column_count": lambda u, i, t: f"{u},{i},20220425,0,{1650812741436 + t}",
    "wrong_type": lambda u, i, t: f"{u},{i},20220425,0,soon,1,0,0,0,0,0,0,10,9000,0,0,0,0,1",
    "unknown_enum_value": lambda u, i, t: f"{u},{i},20220425,0,{1650812741436 + t},7,0,0,0,0,0,0,10,9000,0,0,0,0,1",
    "missing_required_field": lambda u, i, t: f",{i},20220425,0,{1650812741436 + t},1,0,0,0,0,0,0,10,9000,0,0,0,0,1",
}


def good_line(u, i, t, play) -> str:
    return f"{u},{i},20220425,0,{1650812741436 + t},1,0,0,0,0,0,0,{play},90000,0,0,0,0,1"


#: Exact repeats within log_a (and, with overlap 3, in log_b): pinned for both modes.
REPEATS = [("good", (1, 1, 0, 5)), ("good", (1, 1, 0, 5)), ("negative_play_time", (1, 1, 0, 5)), ("good", (2, 1, 0, 5)), ("good", (1, 1, 0, 5))]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mixture=st.lists(st.one_of(GOOD.map(lambda g: ("good", g)), st.tuples(st.sampled_from(sorted(FAULTS)), GOOD)), min_size=1, max_size=40),
    overlap=st.integers(0, 5),
    mode=st.sampled_from(REPEATED_LINES),
)
@example(mixture=REPEATS, overlap=3, mode="duplicate")
@example(mixture=REPEATS, overlap=3, mode="distinct")
def test_random_mixtures_balance_and_keep_good_records(tmp_path_factory, mixture, overlap, mode):
    src = tmp_path_factory.mktemp("mix")
    lines, expected_bad = [], {}
    for kind, (u, i, t, play) in mixture:
        if kind == "good":
            lines.append(good_line(u, i, t, play))
        else:
            lines.append(FAULTS[kind](u, i, t))
            expected_bad[len(lines)] = kind
    (src / "log_a.csv").write_text("\n".join([HEADER, *lines]) + "\n")
    good = [(n, text) for n, text in enumerate(lines, 1) if n not in expected_bad]
    # A second file repeats the first few good lines: the same records, so duplicates.
    repeated = [text for _, text in good[:overlap]]
    if repeated:
        (src / "log_b.csv").write_text("\n".join([HEADER, *repeated]) + "\n")
    adapter = adapter_for("mix", SourceConfig(kind="kuairand", path=str(src)))
    stage = src / "stage"
    counts = run_stage(
        adapter.event_files(), str(stage), "mix", adapter.config, IngestRules(), chunk_rows=7, now=NOW, repeated_lines=mode
    )

    assert counts.records_in == len(lines) + len(repeated)
    assert counts.records_in == counts.accepted + counts.rejected + counts.duplicates
    accepted = [r for f in sorted(os.listdir(stage / "accepted")) for r in pq.read_table(stage / "accepted" / f).to_pylist()]
    # distinct: identical good lines of log_a stay distinct events (occurrence numbering); a
    # repeat in log_b of the k-th copy is a duplicate of that copy. duplicate: only the first
    # copy of a text is an event, every later one (in log_a or log_b) a duplicate.
    expected_events = _expected_events(good, repeated, mode)
    assert sorted((r["source_file"], r["source_line"]) for r in accepted) == sorted(expected_events)
    by_place = {(r["source_file"], r["source_line"]): r for r in accepted}
    for n, text in good:
        if ("log_a.csv", n) not in by_place:
            continue
        fields = text.split(",")
        row = by_place[("log_a.csv", n)]
        assert (row["user_id"], row["item_id"], row["play_time_ms"]) == (fields[0], fields[1], int(fields[12]))
    rejected = [r for f in sorted(os.listdir(stage / "rejected")) for r in pq.read_table(stage / "rejected" / f).to_pylist()]
    repeats_in_a = {n: "duplicate" for n, _ in good if ("log_a.csv", n) not in expected_events}
    assert {r["source_line"]: r["reason_code"] for r in rejected if r["source_file"] == "log_a.csv"} == {**expected_bad, **repeats_in_a}
    assert counts.duplicates == len(good) + len(repeated) - len(expected_events)


def _expected_events(good, repeated, mode: str) -> list[tuple[str, int]]:
    """(file, line) of the accepted records: a reference of the repeated_lines rule."""
    if mode == "distinct":
        return [("log_a.csv", n) for n, _ in good] + _new_in_b(good, repeated)
    seen: set[str] = set()
    out = []
    for place, text in [(("log_a.csv", n), t) for n, t in good] + [(("log_b.csv", n), t) for n, t in enumerate(repeated, 1)]:
        if text not in seen:
            seen.add(text)
            out.append(place)
    return out


def _new_in_b(good, repeated) -> list[tuple[str, int]]:
    """Lines of log_b that are not duplicates: the k-th copy of a text in b beyond the copies in a."""
    in_a: dict[str, int] = {}
    for _, text in good:
        in_a[text] = in_a.get(text, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for n, text in enumerate(repeated, 1):
        seen[text] = seen.get(text, 0) + 1
        if seen[text] > in_a.get(text, 0):
            out.append(("log_b.csv", n))
    return out
