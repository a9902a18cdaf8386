"""The user_sequences invariants counted on Arrow (small tables) equal the Spark counts.

Real tables are built by the Spark job once per settings case, then hypothesis injects defects
into ``user_sequences`` (moved, duplicated and dropped rows, wrong lengths, future history, null
keys, shifted days, late events) and both counters must give the same counts, key for key; the
rote_features view check picks the same sample on both engines.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from features.events import EVENTS
from features.sequences import USER_SEQUENCES
from pipelines.sequences import (
    SequenceSettings,
    build_sequences_table,
    check_rote_view,
    check_rote_view_arrow,
    check_sequences,
    check_sequences_arrow,
)
from pipelines.warehouse import Warehouse
from pipelines.settings import Settings
from tests.pipelines.test_check_engine import assert_counter_runs_where_its_check_validates
from tests.pipelines.test_sequences import events_table

UTC = dt.timezone.utc

CASES = {
    "temporal": dict(max_len=3, split="temporal", valid_from=dt.datetime(2022, 4, 9, tzinfo=UTC),
                     test_from=dt.datetime(2022, 4, 10, tzinfo=UTC)),
    "leave_one_out_k_core": dict(max_len=4, split="leave_one_out", k_core={"min_user_events": 20, "min_item_events": 10}),
    "flags_incremental": dict(max_len=2, require_flags=["is_click"], build="incremental", split="temporal",
                              valid_from=dt.datetime(2022, 4, 9, tzinfo=UTC), test_from=dt.datetime(2022, 4, 10, tzinfo=UTC)),
}


def _events() -> pa.Table:
    events = events_table()
    clicks = pa.array([i % 3 != 0 for i in range(events.num_rows)])
    return events.set_column(events.schema.get_field_index("is_click"), "is_click", clicks)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    out = {}
    for name, kw in CASES.items():
        wh = Warehouse(str(tmp_path_factory.mktemp(name) / "w"))
        wh.write_arrow(EVENTS, _events())
        settings = SequenceSettings(**kw)
        if settings.build == "incremental":
            day0 = dt.date(2022, 4, 8)
            build_sequences_table(spark, wh, settings, day0, day0 + dt.timedelta(days=2))
        else:
            build_sequences_table(spark, wh, settings)
        out[name] = (wh, settings, wh.read_arrow(USER_SEQUENCES.name))
    return out


def _defect(rows: list[dict], kind: str, i: int, schema: pa.Schema) -> list[dict]:
    i %= len(rows)
    r = dict(rows[i])
    if kind == "drop":
        return rows[:i] + rows[i + 1:]
    if kind == "duplicate":
        return rows + [r]
    if kind == "seq_pos":
        r["seq_pos"] = r["seq_pos"] + 1
    elif kind == "null_seq_pos":
        r["seq_pos"] = None
    elif kind == "hist_len":
        r["hist_len"] = r["hist_len"] + 1
    elif kind == "future":
        r["hist_ts"] = list(r["hist_ts"]) + [r["target_ts"] + dt.timedelta(seconds=1)]
    elif kind == "null_user":
        r["user_id"] = None
    elif kind == "day":
        r["target_date"] = r["target_date"] + dt.timedelta(days=1)
    elif kind == "split":
        r["split"] = "test" if r["split"] != "test" else "train"
    elif kind == "event_id":
        r["event_id"] = r["event_id"] + "-x"
    elif kind == "null_event_id":
        r["event_id"] = None
    return rows[:i] + [r] + rows[i + 1:]


KINDS = ["drop", "duplicate", "seq_pos", "null_seq_pos", "hist_len", "future", "null_user", "day",
         "split", "event_id", "null_event_id"]


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(sorted(CASES)),
       defects=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 10_000)), min_size=0, max_size=4),
       sample=st.sampled_from([10, 37, 100_000]))
def test_arrow_counts_equal_spark_counts(spark, built, tmp_path_factory, case, defects, sample):
    base_wh, settings, seqs = built[case]
    rows = seqs.to_pylist()
    for kind, i in defects:
        rows = _defect(rows, kind, i, seqs.schema)
    wh = Warehouse(str(tmp_path_factory.mktemp("defects") / "w"))
    wh.write_arrow(EVENTS, base_wh.read_arrow(EVENTS.name))
    wh.write_arrow(USER_SEQUENCES, pa.Table.from_pylist(rows, schema=seqs.schema))
    arrow, on_spark = check_sequences_arrow(wh, settings), check_sequences(spark, wh, settings)
    assert arrow == on_spark, {k: (v, on_spark.get(k)) for k, v in arrow.items() if v != on_spark.get(k)}
    if all(r["event_id"] is not None for r in rows):  # the view derives rows only for keyed ones
        assert check_rote_view_arrow(wh, settings, sample_rows=sample) == check_rote_view(spark, wh, settings, sample_rows=sample)


def test_a_clean_table_has_no_violation_on_either_engine(spark, built):
    for wh, settings, _ in built.values():
        counts = check_sequences_arrow(wh, settings)
        assert counts["rows"] > 0 and not {k: v for k, v in counts.items() if k != "rows" and v}
        assert counts == check_sequences(spark, wh, settings)


def test_known_defects_are_counted_on_arrow(spark, built, tmp_path):
    """Hand-made: one row moved to the next day, one user's position repeated."""
    base_wh, settings, seqs = built["temporal"]
    rows = seqs.to_pylist()
    first = next(k for k, r in enumerate(rows) if r["seq_pos"] == 1)
    rows[first] = dict(rows[first], seq_pos=0)
    wh = Warehouse(str(tmp_path / "w"))
    wh.write_arrow(EVENTS, base_wh.read_arrow(EVENTS.name))
    wh.write_arrow(USER_SEQUENCES, pa.Table.from_pylist(rows, schema=seqs.schema))
    counts = check_sequences_arrow(wh, settings)
    assert counts["seq_pos_duplicated"] == 2 and counts["users_with_seq_pos_gaps"] == 1
    assert counts["hist_len_not_min_seq_pos_max_len"] == 1
    assert counts["events_without_target_row"] == 0


def test_the_view_sample_is_the_same_rows_on_both_engines(spark, built):
    """The sample rule (sha256(user_id)'s first 20 bits plus a multiple of seq_pos, mod 2^20)
    picks the same rows in Spark and in Python, by a hand-written reference of the rule too; the
    sampled fraction is about what was asked, and it takes rows of most users, not a few
    users' whole histories."""
    import hashlib

    from pipelines.sequences.checks import (
        SAMPLE_HEX_DIGITS,
        SAMPLE_POS_MULTIPLIER,
        _sample_below,
        sample_bucket_arrow,
        sample_bucket_spark,
    )

    wh, settings, seqs = built["temporal"]
    below = _sample_below(seqs.num_rows // 3, seqs.num_rows)
    rows = seqs.select(["event_id", "user_id", "seq_pos"]).to_pylist()
    by_hand = {r["event_id"] for r in rows
               if (int(hashlib.sha256(r["user_id"].encode()).hexdigest()[:SAMPLE_HEX_DIGITS], 16)
                   + r["seq_pos"] * SAMPLE_POS_MULTIPLIER) % 2 ** 20 < below}
    keep = sample_bucket_arrow(seqs) < below
    mine = set(seqs.column("event_id").filter(pa.array(keep)).to_pylist())
    df = wh.read_spark(spark, USER_SEQUENCES.name)
    theirs = {r[0] for r in df.where(sample_bucket_spark() < below).select("event_id").collect()}
    assert mine == theirs == by_hand
    assert seqs.num_rows // 6 <= len(mine) <= seqs.num_rows // 2
    users = {r["user_id"] for r in rows}
    sampled_users = {r["user_id"] for r in rows if r["event_id"] in mine}
    assert len(sampled_users) >= len(users) // 2


def test_the_view_sample_skips_rows_without_a_user_or_a_position():
    from pipelines.sequences.checks import sample_bucket_arrow

    t = pa.table({"user_id": pa.array(["u1", None, "u2", "u1"]), "seq_pos": pa.array([0, 1, None, 3], pa.int32())})
    bucket = sample_bucket_arrow(t)
    assert [b != b for b in bucket] == [False, True, True, False]  # NaN: never below any bound
    assert all(0 <= b < 2 ** 20 for b in bucket[[0, 3]])


def test_the_counter_runs_where_its_check_validates(spark, built):
    wh, settings, _ = built["leave_one_out_k_core"]
    assert_counter_runs_where_its_check_validates(spark, wh, Settings(sequences=settings), "user_sequences")
