"""Point-in-time sequences: Spark output equals a brute-force Python reference; no leakage."""
from __future__ import annotations

import datetime as dt

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.sequences import ORDER_COLUMNS, assign_split, build_user_sequences

T0 = dt.datetime(2022, 4, 8, tzinfo=dt.timezone.utc)


def events_frame(rows) -> pd.DataFrame:
    """rows: (user, item, seconds after T0, file, line)."""
    return pd.DataFrame(
        {
            "event_id": [f"e{i:04d}" for i in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_ts": [T0 + dt.timedelta(seconds=r[2]) for r in rows],
            "source_file": [r[3] for r in rows],
            "source_line": [r[4] for r in rows],
            "play_time_ms": [float(i * 10) for i in range(len(rows))],
        }
    )


def reference(df: pd.DataFrame, max_len: int) -> dict[str, dict]:
    """Brute force: for each event, every event of the same user before it in the total order."""
    out = {}
    keyed = [tuple(r[c] for c in ORDER_COLUMNS) for _, r in df.iterrows()]
    for i, row in df.iterrows():
        mine = keyed[i]
        earlier = sorted(
            (keyed[j], j) for j in range(len(df)) if df.at[j, "user_id"] == row["user_id"] and keyed[j] < mine
        )
        hist = [j for _, j in earlier][-max_len:] if max_len else []
        out[row["event_id"]] = {
            "hist_item_ids": [df.at[j, "item_id"] for j in hist],
            "hist_event_ids": [df.at[j, "event_id"] for j in hist],
            "hist_play_time_ms": [df.at[j, "play_time_ms"] for j in hist],
            "seq_pos": len(earlier),
        }
    return out


ROWS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from([0, 0, 5, 60, 3600]),  # many ties in time
        st.sampled_from(["f1.csv", "f2.csv"]),
        st.integers(1, 5),  # ties in source order too
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS, max_len=st.integers(1, 6))
def test_histories_match_the_brute_force_reference(spark, rows, max_len):
    df = events_frame(rows)
    got = build_user_sequences(spark.createDataFrame(df), max_len=max_len, side_columns=("play_time_ms",)).collect()
    ref = reference(df, max_len)
    # Spark returns naive datetimes in the session zone (UTC).
    ts = {eid: t.tz_convert(None).to_pydatetime() for eid, t in zip(df["event_id"], df["event_ts"])}
    order = {r["event_id"]: tuple(r[c] for c in ORDER_COLUMNS) for _, r in df.iterrows()}
    assert len(got) == len(df)
    for row in got:
        expected = ref[row.event_id]
        assert list(row.hist_item_ids) == expected["hist_item_ids"]
        assert list(row.hist_play_time_ms) == expected["hist_play_time_ms"]
        assert row.seq_pos == expected["seq_pos"]
        assert row.hist_len == len(row.hist_item_ids) == len(row.hist_ts) <= max_len
        # No history event at or after its target in the total order.
        for eid in expected["hist_event_ids"]:
            assert order[eid] < order[row.event_id]
            assert ts[eid] <= row.target_ts


def test_leave_one_out_and_temporal_splits(spark):
    rows = [("u1", "a", s, "f", i) for i, s in enumerate([0, 10, 20, 30, 40], 1)] + [("u2", "b", 0, "f", 9), ("u2", "c", 5, "f", 10)]
    seqs = build_user_sequences(spark.createDataFrame(events_frame(rows)), max_len=50)
    loo = {(r.user_id, r.seq_pos): r.split for r in assign_split(seqs).collect()}
    assert [loo[("u1", p)] for p in range(5)] == ["train", "train", "train", "valid", "test"]
    assert [loo[("u2", p)] for p in range(2)] == ["train", "train"]  # fewer than 4 events
    temporal = assign_split(seqs, "temporal", T0 + dt.timedelta(seconds=15), T0 + dt.timedelta(seconds=35)).collect()
    by_pos = {(r.user_id, r.seq_pos): r.split for r in temporal}
    assert [by_pos[("u1", p)] for p in range(5)] == ["train", "train", "valid", "valid", "test"]


def test_ml100k_leave_one_out_counts(spark, ml100k_dir):
    """On ML-100K every user has at least 20 ratings: 943 test rows, 943 validation rows."""
    import pyarrow as pa

    from features.events import assign_event_ids
    from pipelines.settings import SourceConfig
    from pipelines.sources import adapter_for

    adapter = adapter_for("ml-100k", SourceConfig(kind="movielens", path=str(ml100k_dir)))
    staged = pa.concat_tables([t for f in adapter.event_files() for t in adapter.read_events(f)])
    events = assign_event_ids(spark.createDataFrame(staged.to_pandas()))
    seqs = assign_split(build_user_sequences(events, max_len=50))
    counts = {r["split"]: r["count"] for r in seqs.groupBy("split").count().collect()}
    assert counts == {"test": 943, "valid": 943, "train": 100_000 - 2 * 943}
    assert seqs.agg({"hist_len": "max"}).collect()[0][0] == 50
