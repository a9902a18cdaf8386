"""The event-id rule: the Python reference and the Spark expression agree; ids are stable."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from features.events import EVENTS, STAGED_EVENT_SCHEMA, assign_event_ids, deduplicate_events, event_id, record_key


def staged_rows(records: list[tuple[str, int, list[str]]]) -> pa.Table:
    """records: (source_file, source_line, raw fields)."""
    n = len(records)
    base = dt.datetime(2022, 4, 8, tzinfo=dt.timezone.utc)
    cols = {
        "source": ["kuairand"] * n,
        "source_file": [r[0] for r in records],
        "source_line": [r[1] for r in records],
        "record_key": [record_key(r[2]) for r in records],
        "user_id": [r[2][0] for r in records],
        "item_id": [r[2][1] for r in records],
        "event_ts": [base + dt.timedelta(seconds=int(r[2][2])) for r in records],
    }
    for f in STAGED_EVENT_SCHEMA:
        if f.name not in cols:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols).cast(STAGED_EVENT_SCHEMA)


def test_reference_is_stable_and_sensitive():
    key = record_key(["712", "5239", "1650812741436"])
    assert event_id("kuairand", key, 0) == event_id("kuairand", key, 0)
    assert len(event_id("kuairand", key, 0)) == 24
    assert event_id("kuairand", key, 0) != event_id("kuairand", key, 1)
    assert event_id("kuairand", key, 0) != event_id("ml", key, 0)
    assert event_id("kuairand", key, 0) != event_id("kuairand", record_key(["712", "5239", "1650812741437"]), 0)
    # A null field and an empty field are the same raw text.
    assert record_key(["a", None, "b"]) == record_key(["a", "", "b"])


def test_spark_matches_reference_with_repeats_and_overlap(spark):
    records = [
        ("a.csv", 1, ["1", "10", "5"]),
        ("a.csv", 2, ["1", "10", "5"]),  # a repeated line: a second, distinct event
        ("a.csv", 3, ["2", "11", "86400"]),
        ("b.csv", 1, ["1", "10", "5"]),  # the same record in an overlapping file
    ]
    df = assign_event_ids(spark.createDataFrame(staged_rows(records).to_pandas()), "distinct")
    got = {(r.source_file, r.source_line): r.event_id for r in df.collect()}
    k = record_key(["1", "10", "5"])
    assert got[("a.csv", 1)] == event_id("kuairand", k, 0)
    assert got[("a.csv", 2)] == event_id("kuairand", k, 1)
    assert got[("b.csv", 1)] == got[("a.csv", 1)]
    deduped = deduplicate_events(df).collect()
    assert len(deduped) == 3
    assert {(r.source_file, r.source_line) for r in deduped} == {("a.csv", 1), ("a.csv", 2), ("a.csv", 3)}
    assert df.columns == EVENTS.columns
    dates = {r.source_line: r.event_date for r in df.where("source_file = 'a.csv'").collect()}
    assert dates == {1: dt.date(2022, 4, 8), 2: dt.date(2022, 4, 8), 3: dt.date(2022, 4, 9)}


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a.csv", "b.csv"]), st.sampled_from(["1", "2"]), st.sampled_from(["7", "8"])),
        min_size=1,
        max_size=30,
    )
)
def test_ids_count_occurrences_per_file(spark_session_for_hypothesis, draws):
    # Python reference: occurrence = how many identical records came earlier in the same file.
    seen: dict[tuple[str, str], int] = {}
    records, expected = [], {}
    lines: dict[str, int] = {}
    for file, user, item in draws:
        lines[file] = lines.get(file, 0) + 1
        fields = [user, item, "60"]
        k = record_key(fields)
        occ = seen.get((file, k), 0)
        seen[(file, k)] = occ + 1
        records.append((file, lines[file], fields))
        expected[(file, lines[file])] = event_id("kuairand", k, occ)
    df = assign_event_ids(spark_session_for_hypothesis.createDataFrame(staged_rows(records).to_pandas()), "distinct")
    got = {(r.source_file, r.source_line): r.event_id for r in df.collect()}
    assert got == expected
    # After de-duplication, the number of events is the largest per-file count of each record.
    distinct = {}
    for (file, k), n in seen.items():
        distinct[k] = max(distinct.get(k, 0), n)
    assert deduplicate_events(df).count() == sum(distinct.values())
