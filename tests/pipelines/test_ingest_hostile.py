"""Hostile source files: a line without a line end, empty, truncated or corrupt files, symbolic
links. None of them may block the run or the other files, nothing is dropped silently, reading
stays bounded in memory and linear, and the counts balance.

Reader-level cases need no Spark; the last tests run whole ingestions on both engines.
"""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import re
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.events import EVENTS, record_key
from features.rejections import Reason
from pipelines.ingest import ingest_dimension, ingest_events
from pipelines.settings import IngestRules, IngestSettings, SourceConfig
from pipelines.sources import SourceError, adapter_for

HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
)
NOW = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
DAY0 = int(dt.datetime(2022, 4, 25, tzinfo=dt.timezone.utc).timestamp() * 1000)


def line(user: int, video: int = 10, ts_ms: int = DAY0 + 5) -> str:
    return f"{user},{video},20220425,0,{ts_ms},1,0,0,0,0,0,0,1000,9000,0,0,0,0,1"


def kuairand(path):
    return adapter_for("k", SourceConfig(kind="kuairand", path=str(path)))


def write(path, data: bytes) -> str:
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return str(path)


def read(adapter, file, rules=None, chunk_rows=1000, **kw):
    """Every chunk of one file, in reject mode (what ingestion uses): staged rows, letters, records."""
    convs = list(adapter.read_records(file, rules or IngestRules(), chunk_rows=chunk_rows, now=NOW, on_file_error="reject", **kw))
    staged = [r for c in convs for r in c.staged.to_pylist()]
    letters = [r for c in convs for r in c.rejected.to_pylist()]
    records = sum(c.records for c in convs)
    assert records == len(staged) + len(letters)
    return staged, letters, records


# ---- oversized lines --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["log_a.csv", "log_a.csv.gz"])
@pytest.mark.parametrize("chunk_rows", [1, 1000])
def test_a_line_longer_than_max_line_bytes_is_one_oversized_line_letter(tmp_path, name, chunk_rows):
    # Two long lines: one that fits in a read block (judged by the block parser) and one of
    # 3 MiB that does not (skipped by the reader as it is read). Both give the same letter.
    short_blob = b"7," + b"y" * 5_000
    long_blob = "é".encode() + b"z" * (3 << 20)
    data = "\n".join([HEADER, line(1), ""]).encode() + short_blob + b"\n" + long_blob + b"\r\n" + f"{line(2)}\n".encode()
    rules = IngestRules(max_line_bytes=4096)
    staged, letters, records = read(kuairand(tmp_path), write(tmp_path / name, data), rules, chunk_rows)

    assert records == 4
    assert [(r["source_line"], r["user_id"]) for r in staged] == [(1, "1"), (4, "2")]
    assert [(r["source_line"], r["reason_code"]) for r in letters] == [(2, "oversized_line"), (3, "oversized_line")]
    from features.rejections import OVERSIZED_LINE_KEPT_BYTES

    for letter, blob in zip(letters, [short_blob, long_blob]):
        assert letter["reason"] == (
            f"the line is {len(blob):,} bytes long, more than max_line_bytes 4,096 "
            f"(sha256 {hashlib.sha256(blob).hexdigest()}); skipped to its line end, "
            f"raw_record holds its first {OVERSIZED_LINE_KEPT_BYTES:,} bytes"
        )
        assert letter["raw_record"] == blob[:OVERSIZED_LINE_KEPT_BYTES].decode("utf-8", errors="backslashreplace")


def test_oversized_lines_in_double_colon_files_and_at_the_end_of_a_file(tmp_path):
    ml = tmp_path / "ml"
    ml.mkdir()
    blob = b"1::2::" + b"9" * 10_000  # the last line, without a line end
    write(ml / "ratings.dat", b"1::10::4::978300760\n" + blob)
    adapter = adapter_for("ml", SourceConfig(kind="movielens", path=str(ml)))
    staged, letters, records = read(adapter, str(ml / "ratings.dat"), IngestRules(max_line_bytes=100), chunk_rows=7)
    assert records == 2 and [r["item_id"] for r in staged] == ["10"]
    assert [(r["source_line"], r["reason_code"]) for r in letters] == [(2, "oversized_line")]
    assert f"is {len(blob):,} bytes long" in letters[0]["reason"]
    assert hashlib.sha256(blob).hexdigest() in letters[0]["reason"]


@pytest.mark.parametrize("name", ["log_a.csv", "log_a.csv.gz"])
def test_a_64_mib_line_without_a_line_end_is_read_in_bounded_memory(tmp_path, name):
    # Before: the reader kept appending to the unfinished line (quadratic copying, the whole
    # line held); a gzip bomb of one endless line took hours. Now the line is hashed as it is
    # read: peak memory stays a few blocks whatever the line's length.
    n = 64 << 20
    raw = f"{HEADER}\n{line(1)}\n".encode() + b"x" * n
    path = write(tmp_path / name, raw)
    del raw
    tracemalloc.start()
    try:
        convs = list(kuairand(tmp_path).read_records(path, IngestRules(), now=NOW))  # max_line_bytes: 1 MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak Python memory {peak / 2**20:.1f} MiB for a {n >> 20} MiB line"
    letters = [r for c in convs for r in c.rejected.to_pylist()]
    assert sum(c.records for c in convs) == 2 and sum(c.staged.num_rows for c in convs) == 1
    assert letters[0]["reason_code"] == "oversized_line" and f"is {n:,} bytes long" in letters[0]["reason"]


LINE_TEXT = st.text(alphabet=st.sampled_from("ab,é1"), min_size=0, max_size=120)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.tuples(LINE_TEXT, st.sampled_from(["\n", "\r\n", "\r"])), max_size=25),
    last_without_end=st.booleans(),
    header=st.booleans(),
    bom=st.booleans(),
    block_size=st.integers(1, 64),
    max_line_bytes=st.integers(1, 60),
)
def test_property_every_line_comes_out_once_whole_or_as_an_oversized_letter(
    lines, last_without_end, header, bom, block_size, max_line_bytes
):
    # The reader's blocks (cut anywhere by tiny reads) and the block parser together against a
    # plain split of the bytes: every non-blank line once, in order, its text if it fits, else
    # an oversized_line record with its length and sha256.
    import pyarrow as pa

    from pipelines.sources.csvio import _blocks, _text_lines, oversized_message

    raw = (b"\xef\xbb\xbf" if bom else b"") + (b"h1,h2\n" if header else b"")
    raw += b"".join(text.encode() + end.encode() for text, end in lines)
    if last_without_end and lines:
        raw = raw[: -len(lines[-1][1])]
    blocks = _blocks(pa.BufferReader(raw), header, block_size, "mem", lambda: 0, max_line_bytes)
    got = []
    for block in blocks:
        batch = _text_lines(block, max_line_bytes)
        for text, code, reason in zip(*(batch.column(i).to_pylist() for i in (1, 2, 3))):
            got.append((code, text.rstrip("\r\n"), reason))

    body = raw[3:] if bom else raw
    if header:
        body = body.split(b"\n", 1)[1]
    expected = []
    for piece in re.split(rb"\r\n|\r|\n", body):
        if not piece:
            continue
        if len(piece) > max_line_bytes:
            message = oversized_message(len(piece), hashlib.sha256(piece).hexdigest(), max_line_bytes)
            expected.append(("oversized_line", piece.decode(), message))
        else:
            expected.append((None, piece.decode(), None))
    assert got == expected


def test_max_line_bytes_is_a_documented_rule_with_a_sane_default():
    assert IngestRules().max_line_bytes == 1 << 20
    with pytest.raises(ValueError, match="max_line_bytes"):
        IngestRules(max_line_bytes=0)
    assert Reason("oversized_line").name == "OVERSIZED_LINE"


# ---- files that cannot be read ----------------------------------------------------------------


def test_empty_truncated_and_corrupt_files_are_one_letter_each(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    adapter = kuairand(src)
    good = "\n".join([HEADER, *[line(u) for u in range(1, 100_001)]]) + "\n"

    # 0 bytes: nothing read; the letter is the file (line 0, no raw text).
    empty = write(src / "log_empty.csv", b"")
    staged, letters, records = read(adapter, empty)
    assert (staged, records) == ([], 1)
    assert [(r["source_file"], r["source_line"], r["raw_record"], r["reason_code"]) for r in letters] == [
        ("log_empty.csv", 0, "", "unreadable_file")
    ]
    assert "no header line" in letters[0]["reason"] and "\n" not in letters[0]["reason"]

    # A truncated gzip stream: the complete lines read before the cut are records as usual,
    # then one letter at the data line where reading stopped (what the last, failing read of
    # the stream had decompressed is lost with it).
    packed = gzip.compress(good.encode())
    truncated = src / "log_cut.csv.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    staged, letters, records = read(adapter, str(truncated), chunk_rows=100)
    assert len(staged) > 0 and [r["source_line"] for r in staged] == list(range(1, len(staged) + 1))
    assert staged[-1]["record_key"] == record_key(line(len(staged)).split(","))  # whole lines only
    assert [(r["source_line"], r["reason_code"]) for r in letters] == [(len(staged) + 1, "unreadable_file")]
    assert f"cannot read after data line {len(staged)}" in letters[0]["reason"]
    assert records == len(staged) + 1

    # Not gzip at all, gzip of bytes that are not text, a missing column, a headerless file of 0 bytes.
    (src / "log_bad.csv.gz").write_bytes(b"\x1f\x8b\x08\x00not a gzip stream" * 10)
    write(src / "log_junk.csv.gz", bytes(range(255, -1, -1)) * 40)  # a first line that is not UTF-8
    write(src / "log_cols.csv", b"user_id,video_id\n1,2\n")
    for name, message in [
        ("log_bad.csv.gz", "cannot read the header"),
        ("log_junk.csv.gz", "unreadable header"),
        ("log_cols.csv", "columns ['time_ms'] are missing"),
    ]:
        staged, letters, records = read(adapter, str(src / name))
        assert (len(staged), records, letters[0]["reason_code"]) == (0, 1, "unreadable_file"), name
        assert message in letters[0]["reason"], letters[0]["reason"]
    ml = tmp_path / "ml"
    ml.mkdir()
    empty_dat = write(ml / "ratings.dat", b"")
    _, letters, _ = read(adapter_for("ml", SourceConfig(kind="movielens", path=str(ml))), empty_dat)
    assert letters[0]["reason_code"] == "unreadable_file" and "the file is empty (0 bytes)" in letters[0]["reason"]

    # The strict interface still raises for file-level problems.
    with pytest.raises(SourceError, match="no header line"):
        list(adapter.read_records(empty, IngestRules()))


# ---- symbolic links ---------------------------------------------------------------------------


def test_symlinks_are_refused_unless_follow_symlinks(tmp_path):
    assert IngestSettings().follow_symlinks is False
    outside = tmp_path / "secret.csv"
    outside.write_text("\n".join([HEADER, line(9)]) + "\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, line(1)]) + "\n")
    (src / "log_link.csv").symlink_to(outside)
    (src / "log_dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    adapter = kuairand(src)
    files = adapter.event_files()
    assert [os.path.basename(f) for f in files] == ["log_a.csv", "log_dangling.csv", "log_link.csv"]

    staged, letters, records = read(adapter, str(src / "log_link.csv"), follow_symlinks=False)
    assert staged == [] and records == 1
    assert [(r["source_line"], r["raw_record"], r["reason_code"]) for r in letters] == [(0, "", "symlink_refused")]
    assert "symbolic link" in letters[0]["reason"] and "ingest.follow_symlinks is false" in letters[0]["reason"]
    from features.rejections import FILE_REASONS

    assert Reason.SYMLINK_REFUSED in FILE_REASONS

    staged, letters, _ = read(adapter, str(src / "log_link.csv"), follow_symlinks=True)
    assert [r["user_id"] for r in staged] == ["9"] and letters == []
    _, letters, _ = read(adapter, str(src / "log_dangling.csv"), follow_symlinks=True)
    assert letters[0]["reason_code"] == "unreadable_file"

    # The configured path itself may be a link (the operator's choice).
    direct = tmp_path / "direct.csv"
    direct.symlink_to(outside)
    staged, letters, _ = read(kuairand(direct), str(direct), follow_symlinks=False)
    assert len(staged) == 1 and letters == []


def test_a_linked_users_file_is_refused_unless_follow_symlinks(tmp_path, warehouse):
    outside = tmp_path / "users_elsewhere.csv"
    outside.write_text("user_id,age\n1,30\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, line(1)]) + "\n")
    (src / "user_features_x.csv").symlink_to(outside)
    adapter = kuairand(src)
    with pytest.raises(SourceError, match=r"user_features_x\.csv: is a symbolic link .*ingest\.follow_symlinks is false"):
        ingest_dimension(warehouse, adapter, "users")
    assert not warehouse.exists("users")
    assert ingest_dimension(warehouse, adapter, "users", follow_symlinks=True).row_count == 1


# ---- whole runs -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["beam", "spark"])
def test_hostile_files_do_not_block_the_run(spark, warehouse, tmp_path, engine):
    src = tmp_path / "src"
    src.mkdir()
    (src / "log_a.csv").write_text("\n".join([HEADER, line(1), line(2)]) + "\n")
    (src / "log_b.csv").write_text("")  # 0 bytes
    packed = gzip.compress(("\n".join([HEADER, *[line(u) for u in range(100, 60_100)]]) + "\n").encode())
    (src / "log_c.csv.gz").write_bytes(packed[: len(packed) // 2])  # truncated
    (src / "log_d.csv").write_bytes(f"{HEADER}\n{line(3)}\n".encode() + b"q" * (2 << 20) + f"\n{line(4)}\n".encode())
    outside = tmp_path / "other.csv"
    outside.write_text("\n".join([HEADER, line(9)]) + "\n")
    (src / "log_e.csv").symlink_to(outside)
    adapter = kuairand(src)
    rules = IngestRules()  # max_line_bytes 1 MiB
    stage = tmp_path / "stage"
    options = {"rules": rules, "engine": engine, "now": NOW, "stage_root": f"file://{stage}"}  # a local directory

    r = ingest_events(spark, warehouse, adapter, **options)

    letters = {(x["source_file"], x["reason_code"]) for x in warehouse.read_arrow("rejected_events").to_pylist()}
    assert letters == {
        ("log_b.csv", "unreadable_file"),
        ("log_c.csv.gz", "unreadable_file"),
        ("log_d.csv", "oversized_line"),
        ("log_e.csv", "symlink_refused"),
    }
    users = set(warehouse.read_arrow(EVENTS.name, columns=["user_id"]).column("user_id").to_pylist())
    assert {"1", "2", "3", "4", "100"} <= users and "9" not in users  # the link's target is not read
    truncated_lines = len(users) - 4
    assert r.records_in == 2 + 1 + (truncated_lines + 1) + 3 + 1
    assert r.rejected == 4 and r.by_reason == {"unreadable_file": 2, "oversized_line": 1, "symlink_refused": 1}
    assert r.records_in == r.new_events + r.already_present + r.outside_window + r.rejected + r.duplicates
    run = warehouse.read_arrow("ingest_runs").to_pylist()[-1]
    assert run["records_in"] == run["new_events"] + run["already_present"] + run["outside_window"] + run["rejected"] + run["duplicates"]

    # The same files again: nothing new anywhere, and every letter has a stable id.
    version = warehouse.current_version(EVENTS.name)
    again = ingest_events(spark, warehouse, adapter, **options)
    assert (again.new_events, again.rejected) == (0, 4)
    assert warehouse.current_version(EVENTS.name) == version
    assert warehouse.read_arrow("rejected_events").num_rows == 4
    assert [p.name for p in stage.iterdir()] == []  # each run removed its stage directory
