"""Parity: a training set's history for a spine of the events equals the ``user_sequences`` rows
the SASRec trainer reads (same items, times, play times, RoTE columns), because both run the one
history kernel (``features.sequences.histories.history_gather``) on the same total order.

With ``history_ties="log_order"`` a spine row naming an event gets exactly that event's
``user_sequences`` history; with the default (``"exclude"``) the same-time events that come
before it in the log are left out, and nothing else differs (docs/python-api.md, "Same inputs
as the built-in trainers").
"""
from __future__ import annotations

import datetime as dt
import random

import pandas as pd
import pyarrow as pa
import pytest

from features.events import EVENTS, FEEDBACK_FLAGS
from features.sequences import ROTE_FEATURES, USER_SEQUENCES
from pipelines.training_set.history import rote_columns

UTC = dt.timezone.utc
T0 = dt.datetime(2022, 4, 8, tzinfo=UTC)
EVENT_SCHEMA = pa.schema([pa.field(f.name, f.type) for f in EVENTS.schema])
HIST = ("hist_item_ids", "hist_ts", "hist_play_time_ms", "hist_len")


def _events(seed: int = 5, users: int = 12) -> list[dict]:
    """Events over three days with many exact ties in time (ordered by source line and file)."""
    rnd = random.Random(seed)
    rows, i = [], 0
    for u in range(users):
        for _ in range(rnd.randint(0, 14)):
            ts = T0 + dt.timedelta(hours=rnd.choice([1, 2, 2, 3, 30, 30, 55]), seconds=rnd.choice([0, 0, 1]))
            rows.append({
                "event_id": f"e{i:04d}", "source": "test", "user_id": f"u{u}", "item_id": f"i{rnd.randint(0, 9)}",
                "event_ts": ts, "play_time_ms": rnd.choice([None, 1000 * i]), "duration_ms": 60_000, "rating": None,
                **{f: None for f in FEEDBACK_FLAGS}, "event_date": ts.date(), "source_file": rnd.choice(["a.csv", "b.csv"]),
                "source_line": rnd.randint(1, 40),
            })
            i += 1
    return rows


def _sequences_as_read(wh, columns) -> dict[str, dict]:
    """``user_sequences`` and ``rote_features`` rows as the trainers read them (trainers.tables), by event."""
    from trainers.tables import open_table

    out: dict[str, dict] = {}
    for contract in (USER_SEQUENCES, ROTE_FEATURES):
        snap = open_table(wh.uri, contract)
        cols = [c for c in columns if c in snap.columns]
        for b in snap.batches(["event_id", *cols]):
            for r in b.to_pylist():
                out.setdefault(r.pop("event_id"), {}).update(r)
    return out


def _rows(ts) -> dict[str, dict]:
    """A training set's rows by ``event_id`` (through Arrow: times stay aware UTC datetimes)."""
    return {r["event_id"]: r for r in ts.to_arrow().to_pylist()}


def _compare(got: dict[str, dict], want: dict[str, dict], columns) -> None:
    assert set(got) == set(want)
    for c in columns:
        bad = [e for e in want if got[e][c] != want[e][c]]
        assert not bad, f"{c}: {len(bad)} rows differ, e.g. {[(e, got[e][c], want[e][c]) for e in bad[:2]]}"


def _build(spark, wh, max_len: int):
    from pipelines.sequences import build_sequences_table
    from pipelines.sequences.params import SequenceSettings

    settings = SequenceSettings(max_len=max_len, rote_storage="table")  # compared with the stored rote_features
    build_sequences_table(spark, wh, settings)
    return settings


def test_log_order_histories_equal_user_sequences_and_exclude_drops_only_same_time_events(spark, tmp_path):
    from pipelines.training_set import training_set
    from pipelines.warehouse import Warehouse

    events = _events()
    wh = Warehouse(str(tmp_path / "wh"))
    wh.write_arrow(EVENTS, pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
    settings = _build(spark, wh, max_len=4)
    columns = [*HIST, *[f.name for f in rote_columns(settings.rote_levels)]]
    want = _sequences_as_read(wh, columns)
    assert len(want) == len(events)
    spine = pd.DataFrame(events)[["event_id", "user_id", "item_id", "event_ts"]]

    logged = training_set(spark, wh, spine, ["user_sequences"], max_len=4, history_ties="log_order")
    _compare(_rows(logged), want, columns)

    # the default leaves out the same-time events that come before the example in the log: a
    # history is the user_sequences one minus its events at the example's time, re-truncated
    # from the full order (the reference below), and nothing else differs
    strict = _rows(training_set(spark, wh, spine, ["user_sequences.hist_item_ids", "user_sequences.hist_ts"], max_len=4))
    order = sorted(events, key=lambda e: (e["user_id"], e["event_ts"], e["source_file"], e["source_line"], e["event_id"]))
    differ = 0
    for e in events:
        before = [x for x in order if x["user_id"] == e["user_id"] and x["event_ts"] < e["event_ts"]][-4:]
        row = strict[e["event_id"]]
        assert row["hist_item_ids"] == [x["item_id"] for x in before]
        assert row["hist_ts"] == [x["event_ts"] for x in before]
        differ += row["hist_item_ids"] != want[e["event_id"]]["hist_item_ids"]
    assert differ > 0  # the data has same-time events before some examples: the rules differ there

    # DIN's point-in-time windows (trainers.din.data.history_windows, the order load_din_data sorts
    # its pool in) follow the default rule: the same items for every impression
    import numpy as np

    from trainers.din.data import history_windows

    users, code = np.unique([e["user_id"] for e in order], return_inverse=True)
    us = np.array([int(e["event_ts"].timestamp() * 1e6) for e in order], np.int64)
    start, stop = history_windows(code, us, code, us, 4)
    for j, e in enumerate(order):
        assert strict[e["event_id"]]["hist_item_ids"] == [x["item_id"] for x in order[start[j]:stop[j]]]


def test_log_order_needs_event_ids(spark, tmp_path):
    from pipelines.training_set import FeatureError, training_set
    from pipelines.warehouse import Warehouse

    wh = Warehouse(str(tmp_path / "wh"))
    wh.write_arrow(EVENTS, pa.Table.from_pylist(_events(users=2), schema=EVENT_SCHEMA))
    spine = pd.DataFrame({"user_id": ["u0"], "event_ts": [T0]})
    with pytest.raises(FeatureError, match="event_id"):
        training_set(spark, wh, spine, ["user_sequences"], history_ties="log_order")
    with pytest.raises(FeatureError, match="history_ties"):
        training_set(spark, wh, spine, ["user_sequences"], history_ties="sometimes")


@pytest.mark.slow
@pytest.mark.shared_data
def test_ml100k_histories_equal_the_user_sequences_sasrec_reads(spark, tmp_path, ml100k_dir):
    """ML-100K (half of the consecutive gaps are 0 s): the log-order history of every event of
    200 users equals its ``user_sequences`` and ``rote_features`` row (built from all 943 users),
    column by column in Arrow, and SASRec's time levels from either side are equal."""
    import numpy as np
    import pyarrow.compute as pc

    from pipelines.ingest import ingest_events
    from pipelines.settings import SourceConfig
    from pipelines.sources import adapter_for
    from pipelines.training_set import training_set
    from pipelines.warehouse import Warehouse
    from trainers.sasrec.data import time_levels
    from trainers.tables import open_table

    wh = Warehouse(str(tmp_path / "ml100k"))
    ingest_events(spark, wh, adapter_for("ml-100k", SourceConfig(kind="movielens", path=str(ml100k_dir))))
    settings = _build(spark, wh, max_len=50)
    columns = [*HIST, *[f.name for f in rote_columns(settings.rote_levels)]]
    events = wh.read_arrow(EVENTS.name, columns=["event_id", "user_id", "item_id", "event_ts"])
    users = sorted(set(events.column("user_id").to_pylist()))[:200]
    spine = events.filter(pc.is_in(events.column("user_id"), pa.array(users))).to_pandas()
    got = training_set(spark, wh, spine, ["user_sequences"], max_len=50, history_ties="log_order",
                       out=str(tmp_path / "ts")).to_arrow()
    got = got.sort_by("event_id")
    ids = got.column("event_id")
    assert got.num_rows == len(spine) > 15_000

    def table_of(contract):
        snap = open_table(wh.uri, contract)
        cols = [c for c in columns if c in snap.columns]
        t = pa.concat_tables([pa.Table.from_batches([b]) for b in snap.batches(["event_id", *cols])],
                             promote_options="permissive")
        return t.filter(pc.is_in(t.column("event_id"), ids)).sort_by("event_id")

    tables = [table_of(USER_SEQUENCES), table_of(ROTE_FEATURES)]
    for want in tables:
        assert want.column("event_id").cast(pa.string()).to_pylist() == ids.cast(pa.string()).to_pylist()
        for c in want.column_names[1:]:
            mine = got.column(c).combine_chunks()
            theirs = want.column(c).combine_chunks().cast(mine.type)
            if not mine.equals(theirs):
                bad = [ids[i].as_py() for i in range(len(mine)) if mine[i] != theirs[i]]
                pytest.fail(f"{c}: {len(bad)} rows differ, e.g. {bad[:3]}")

    # SASRec's time levels from either side's times (left-padded as the trainer pads)
    def padded(col):
        rows = col.slice(0, 2000).to_pylist()
        ts = np.zeros((len(rows), 50))
        mask = np.zeros((len(rows), 50), bool)
        for i, v in enumerate(rows):
            if v:
                ts[i, -len(v):], mask[i, -len(v):] = [t.timestamp() for t in v], True
        return ts, mask

    a, b = padded(got.column("hist_ts")), padded(tables[0].column("hist_ts"))
    assert a[1].any()
    for k, v in time_levels(*a, "finer").items():
        np.testing.assert_array_equal(v, time_levels(*b, "finer")[k], err_msg=k)
