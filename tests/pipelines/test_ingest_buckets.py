"""The bucketed Beam pipeline, and the Spark engine, against a brute-force Python reference of
the ingestion rules.

The reference reads every record with the source adapter (the same validation) and applies the
rules one record at a time: the occurrence of a record is its rank, in line order, among the
records of its file with the same raw text (``distinct``) or 0 (``duplicate``); its id is
``features.events.event_id``; among the records sharing an id the first by
``(source_file, source_line)`` is accepted and every other one is a ``duplicate`` dead letter
naming it. Generated files repeat lines within a file and across files, mix in bad lines, span
several read chunks and the pipeline runs with one and with several buckets; the result must
not depend on the bucket count nor on the DirectRunner's workers. The Spark engine
(``pipelines/spark_stage.py``) must give the same stage with its repeated ids broadcast to the
join and with Spark planning that join itself.
"""
from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from features.events import REPEATED_LINES, event_id
from pipelines.beam_ingest import id_buckets, occurrence0_ids, run_stage
from pipelines.settings import ConfigError, IngestRules, SourceConfig, load_settings
from pipelines.sources import adapter_for
from pipelines.spark_stage import run_stage_spark

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
)
T0 = 1650812741436


def good(u: int, i: int, t: int) -> str:
    return f"{u},{i},20220425,0,{T0 + t},1,0,0,0,0,0,0,{10 + t},90000,0,0,0,0,1"


def bad(u: int, i: int, t: int) -> str:
    return f"{u},{i},20220425,0,{T0 + t},1,0,0,0,0,0,0,-7,9000,0,0,0,0,1"  # negative_play_time


def read(stage: Path, part: str) -> list[dict]:
    folder = stage / part
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet")) if folder.is_dir() else []
    return [r for f in files for r in pq.read_table(folder / f).to_pylist()]


def reference(adapter, files: list[str], mode: str) -> tuple[dict, dict, dict, int]:
    """(accepted rows by place, duplicate letters by place, other letters by place, records in)."""
    staged, others, records = [], {}, 0
    for file in files:
        for conv in adapter.read_records(file, IngestRules(), now=NOW, on_file_error="reject"):
            records += conv.records
            staged.extend(conv.staged.to_pylist())
            for r in conv.rejected.to_pylist():
                others[(r["source_file"], r["source_line"])] = r
    lines_of = defaultdict(list)
    for row in staged:
        lines_of[(row["source_file"], row["record_key"])].append(row["source_line"])
    by_id = defaultdict(list)
    for row in staged:
        occurrence = sorted(lines_of[(row["source_file"], row["record_key"])]).index(row["source_line"])
        row = {**row, "event_id": event_id(row["source"], row["record_key"], occurrence if mode == "distinct" else 0)}
        by_id[row["event_id"]].append(row)
    accepted, duplicates = {}, {}
    for rows in by_id.values():
        rows.sort(key=lambda r: (r["source_file"], r["source_line"]))
        first = rows[0]
        accepted[(first["source_file"], first["source_line"])] = first
        for r in rows[1:]:
            if r["source_file"] == first["source_file"]:
                reason = f"exact repeat of line {first['source_line']} of the same file"
            else:
                reason = f"same event_id as {first['source_file']} line {first['source_line']}"
            duplicates[(r["source_file"], r["source_line"])] = {
                "source": r["source"], "source_file": r["source_file"], "source_line": r["source_line"],
                "raw_record": r["record_key"].replace("\x1f", ","), "reason_code": "duplicate", "reason": reason,
            }  # fmt: skip
    return accepted, duplicates, others, records


def check_against_reference(src: Path, stage: Path, mode: str, spark=None, **options) -> None:
    """The stage written by the Beam pipeline (or, given ``spark``, by the Spark engine) equals
    the reference: every accepted row, every dead letter with its reason, the counts."""
    adapter = adapter_for("gen", SourceConfig(kind="kuairand", path=str(src)))
    files = adapter.event_files()
    if spark is None:
        counts = run_stage(files, str(stage), "gen", adapter.config, IngestRules(), now=NOW, repeated_lines=mode, **options)
    else:
        counts = run_stage_spark(spark, files, str(stage), "gen", adapter.config, IngestRules(), now=NOW,
                                 repeated_lines=mode, **options)
        assert sorted(os.listdir(stage)) == ["accepted", "counts.json", "rejected"]  # no intermediate left
    accepted, duplicates, others, records = reference(adapter, files, mode)

    got = {(r["source_file"], r["source_line"]): r for r in read(stage, "accepted")}
    assert len(got) == len(read(stage, "accepted"))  # each place once
    assert got == accepted
    letters = read(stage, "rejected")
    assert {(r["source_file"], r["source_line"]): r for r in letters if r["reason_code"] == "duplicate"} == duplicates
    assert {(r["source_file"], r["source_line"]): r for r in letters if r["reason_code"] != "duplicate"} == others
    assert len(letters) == len(duplicates) + len(others)
    assert (counts.records_in, counts.accepted, counts.duplicates, counts.rejected) == (
        records, len(accepted), len(duplicates), len(others)
    )
    assert counts.records_in == counts.accepted + counts.rejected + counts.duplicates


#: A line: (good or bad, user, item, time offset). Few distinct values, so lines repeat.
LINE = st.tuples(st.booleans().map(lambda b: "bad" if b else "good"), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2))
#: Lines repeated within a file, across files, bad ones repeated too.
PINNED = [
    [("good", 1, 1, 0), ("good", 1, 1, 0), ("bad", 1, 1, 0), ("good", 2, 1, 0), ("good", 1, 1, 0), ("bad", 1, 1, 0)],
    [("good", 1, 1, 0), ("good", 2, 1, 0), ("good", 1, 1, 0), ("good", 1, 1, 0), ("good", 3, 2, 1)],
    [("good", 3, 2, 1), ("good", 2, 1, 0)],
]


def write_files(src: Path, files: list[list[tuple]]) -> None:
    for n, lines in enumerate(files):
        text = [good(u, i, t) if kind == "good" else bad(u, i, t) for kind, u, i, t in lines]
        # One gzipped copy: the same records read through another reader.
        name = f"log_{n}.csv.gz" if n == 2 else f"log_{n}.csv"
        data = ("\n".join([HEADER, *text]) + "\n").encode()
        if name.endswith(".gz"):
            import gzip

            data = gzip.compress(data)
        (src / name).write_bytes(data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(st.lists(LINE, min_size=0, max_size=25), min_size=1, max_size=3),
    mode=st.sampled_from(REPEATED_LINES),
    buckets=st.sampled_from([1, 2, 5]),
    chunk_rows=st.sampled_from([3, 1000]),
)
@example(files=PINNED, mode="duplicate", buckets=5, chunk_rows=3)
@example(files=PINNED, mode="distinct", buckets=5, chunk_rows=3)
@example(files=PINNED, mode="distinct", buckets=1, chunk_rows=1000)
def test_bucketed_pipeline_equals_a_brute_force_reference(tmp_path_factory, files, mode, buckets, chunk_rows):
    src = tmp_path_factory.mktemp("gen")
    write_files(src, files)
    check_against_reference(src, src / "stage", mode, buckets=buckets, chunk_rows=chunk_rows)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.lists(st.lists(LINE, min_size=0, max_size=25), min_size=1, max_size=3),
    mode=st.sampled_from(REPEATED_LINES),
    broadcast=st.booleans(),
    chunk_rows=st.sampled_from([3, 1000]),
)
@example(files=PINNED, mode="duplicate", broadcast=True, chunk_rows=3)
@example(files=PINNED, mode="duplicate", broadcast=False, chunk_rows=3)
@example(files=PINNED, mode="distinct", broadcast=False, chunk_rows=1000)
@example(files=[[], []], mode="duplicate", broadcast=True, chunk_rows=1000)  # nothing to stage
def test_the_spark_engine_equals_the_brute_force_reference(spark, tmp_path_factory, monkeypatch, files, mode, broadcast,
                                                           chunk_rows):
    import pipelines.spark_stage as spark_stage

    # Above the limit Spark plans the join that marks later copies itself: with its own
    # broadcast threshold off too, a shuffle join.
    monkeypatch.setattr(spark_stage, "BROADCAST_REPEATED_IDS", 2_000_000 if broadcast else 0)
    threshold = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", threshold if broadcast else "-1")
    try:
        src = tmp_path_factory.mktemp("gen")
        write_files(src, files)
        check_against_reference(src, src / "stage", mode, spark=spark, chunk_rows=chunk_rows)
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", threshold)


def test_the_pinned_case_has_repeats_within_and_across_files_in_several_buckets(tmp_path):
    # The example above exercises what it claims: duplicates of both kinds, in more than one bucket.
    write_files(tmp_path, PINNED)
    adapter = adapter_for("gen", SourceConfig(kind="kuairand", path=str(tmp_path)))
    accepted, duplicates, _, _ = reference(adapter, adapter.event_files(), "duplicate")
    reasons = {d["reason"].split(" ")[0] for d in duplicates.values()}
    assert reasons == {"exact", "same"}
    ids = pa.array(sorted({r["event_id"] for r in accepted.values()}))
    assert len(set(id_buckets(ids, 5).tolist())) > 1


def test_buckets_come_from_the_id_and_do_not_depend_on_the_process():
    # The bucket is int(event_id[:8], 16) mod B: the same in every worker process, unlike hash().
    table = pa.table({"source": ["s", "s", "t"], "record_key": ["a\x1fb", "a\x1fb", "a\x1fb"]})
    ids = occurrence0_ids(table)
    assert ids.to_pylist() == [event_id("s", "a\x1fb", 0)] * 2 + [event_id("t", "a\x1fb", 0)]
    assert id_buckets(ids, 7).tolist() == [int(i[:8], 16) % 7 for i in ids.to_pylist()]
    assert id_buckets(ids.slice(1), 7).tolist() == [int(i[:8], 16) % 7 for i in ids.to_pylist()[1:]]


def test_several_workers_give_the_same_stage_as_one(tmp_path):
    # multi_processing workers (separate Python processes) bucket and resolve the same way.
    write_files(tmp_path, PINNED)
    check_against_reference(tmp_path, tmp_path / "stage", "distinct", direct_num_workers=2, direct_running_mode="multi_processing")


@pytest.mark.parametrize(
    "yaml, field",
    [
        ("ingest:\n  direct_num_workers: 2\n", "ingest.direct_num_workers"),
        ("ingest:\n  direct_num_workers: -1\n  direct_running_mode: multi_processing\n", "ingest.direct_num_workers"),
        ("ingest:\n  direct_running_mode: threads\n", "ingest.direct_running_mode"),
        ("ingest:\n  buckets: 0\n", "ingest.buckets"),
    ],
)
def test_bad_worker_and_bucket_settings_fail_naming_the_field(tmp_path, monkeypatch, yaml, field):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "recfeat.yaml"
    config.write_text(yaml)
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_worker_and_bucket_settings_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "recfeat.yaml"
    config.write_text("ingest:\n  direct_num_workers: 2\n  direct_running_mode: multi_processing\n  buckets: 16\n")
    ingest = load_settings(config).ingest
    assert (ingest.direct_num_workers, ingest.direct_running_mode, ingest.buckets) == (2, "multi_processing", 16)
    config.write_text("{}\n")
    ingest = load_settings(config).ingest
    assert (ingest.direct_num_workers, ingest.direct_running_mode, ingest.buckets) == (1, "in_memory", None)


def test_bad_worker_arguments_fail_before_anything_is_staged(tmp_path):
    write_files(tmp_path, PINNED)
    adapter = adapter_for("gen", SourceConfig(kind="kuairand", path=str(tmp_path)))
    with pytest.raises(ValueError, match="ingest.direct_num_workers: 2 needs ingest.direct_running_mode"):
        run_stage(adapter.event_files(), str(tmp_path / "stage"), "gen", adapter.config, IngestRules(), direct_num_workers=2)
    with pytest.raises(ValueError, match="ingest.buckets must be a whole number >= 1"):
        run_stage(adapter.event_files(), str(tmp_path / "stage"), "gen", adapter.config, IngestRules(), buckets=0)
    assert not (tmp_path / "stage").exists()


def test_worker_flags_in_runner_args_are_the_ones_checked(tmp_path):
    """--direct_num_workers in ingest.runner_args wins over the setting, so it is what is
    validated (Beam would otherwise only log that in_memory runs one worker)."""
    write_files(tmp_path, PINNED)
    adapter = adapter_for("gen", SourceConfig(kind="kuairand", path=str(tmp_path)))
    for args in (["--direct_num_workers=4"], ["--direct_num_workers", "4"]):
        with pytest.raises(ValueError, match="ingest.direct_num_workers: 4 needs ingest.direct_running_mode"):
            run_stage(adapter.event_files(), str(tmp_path / "stage"), "gen", adapter.config, IngestRules(),
                      runner_args=args)
    with pytest.raises(ValueError, match="ingest.runner_args: --direct_num_workers='two'"):
        run_stage(adapter.event_files(), str(tmp_path / "stage"), "gen", adapter.config, IngestRules(),
                  runner_args=["--direct_num_workers=two"])
    assert not (tmp_path / "stage").exists()


def test_default_buckets_are_many_off_the_direct_runner():
    from pipelines.beam_ingest import BUCKETS_PER_WORKER, DISTRIBUTED_BUCKETS, default_buckets

    assert default_buckets(1) == BUCKETS_PER_WORKER and default_buckets(3) == 3 * BUCKETS_PER_WORKER
    assert DISTRIBUTED_BUCKETS >= 64  # a cluster runner's parallelism and per-worker memory


def test_worker_settings_become_direct_runner_options_and_runner_args_win():
    from apache_beam.options.pipeline_options import DirectOptions

    from pipelines.beam_ingest import pipeline_options

    direct = pipeline_options("DirectRunner", [], 2, "multi_processing").view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (2, "multi_processing")
    given = pipeline_options("DirectRunner", ["--direct_num_workers=3"], 2, "multi_threading").view_as(DirectOptions)
    assert (given.direct_num_workers, given.direct_running_mode) == (3, "multi_threading")
    other = pipeline_options("FlinkRunner", [], 2, "multi_processing").view_as(DirectOptions)
    assert other.direct_num_workers != 2 and other.direct_running_mode != "multi_processing"


def test_ingest_events_refuses_bad_worker_arguments_before_staging(tmp_path, warehouse):
    from pipelines.ingest import ingest_events

    write_files(tmp_path, PINNED)
    adapter = adapter_for("gen", SourceConfig(kind="kuairand", path=str(tmp_path)))
    with pytest.raises(ValueError, match="ingest.direct_num_workers: 0 needs"):
        ingest_events(None, warehouse, adapter, direct_num_workers=0)
    with pytest.raises(ValueError, match="ingest.buckets"):
        ingest_events(None, warehouse, adapter, buckets=-2)
    assert not os.path.exists(os.path.join(warehouse.root, "_tmp"))
