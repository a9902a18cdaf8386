"""Acceptance on the KuaiRand slice: a training set for a spine of every test-day impression
reproduces exactly the inputs the watch-time trainer uses (docs/python-api.md, "Same inputs as
the built-in trainers").

The warehouse is built as ``configs/kuairand.yaml`` says (events with ``repeated_lines:
distinct``, users and items, then ``duration_stats`` and ``watch_time_labels`` fitted on
2022-04-25 .. 05-03); the trainer's data are ``load_watch_time_data`` with the default split
(9 / 2 / 3 days). Row by row, for the trainer's test rows: the raw field values (text, before
integer encoding), every label column, the duration statistics of the row's duration, and the
encoded matrix the trainer's ``FieldEncoder`` makes from the training-set rows are equal to the
trainer's. The impressions the labels job dropped (no duration, or out of range) and a spine row
whose ``event_id`` is no event get no labels.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest

REPO = Path(__file__).resolve().parents[2]


def _build_warehouse(spark, root: Path, data: Path):
    from pipelines.ingest import ingest_dimension, ingest_with_settings
    from pipelines.labels import build_duration_stats, build_watch_time_labels
    from pipelines.settings import SourceConfig, load_settings
    from pipelines.sources import adapter_for
    from pipelines.warehouse import Warehouse

    project = load_settings(REPO / "configs" / "kuairand.yaml")
    source = next((c for c in project.sources.values() if c.kind == "kuairand"), SourceConfig(kind="kuairand", path=""))
    adapter = adapter_for("kuairand", source.model_copy(update={"path": str(data.resolve())}))
    wh = Warehouse(str(root / "kuairand"))
    ingest_with_settings(spark, wh, adapter, project)
    for table in ("users", "items"):
        ingest_dimension(wh, adapter, table)
    build_duration_stats(spark, wh, project.labels)
    build_watch_time_labels(spark, wh, project.labels)
    return wh


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_spine_of_every_test_day_impression_reproduces_the_watch_time_trainers_inputs(spark, tmp_path, kuairand_dir):
    check_trainer_inputs(spark, _build_warehouse(spark, tmp_path, kuairand_dir))


def check_trainer_inputs(spark, wh) -> None:
    """The comparison (module docstring) on a KuaiRand warehouse with labels."""
    import pyarrow as pa

    from features.events import EVENTS
    from pipelines.training_set import training_set
    from trainers.config import DateSplit
    from trainers.watch_time.data import DEFAULT_FIELDS, FLAGS, LABELS_TABLE, NUMERIC, STATS_TABLE, load_watch_time_data

    data = load_watch_time_data(wh.uri, DateSplit(), keep_raw=True)
    test0, end = data.windows["test"]
    assert (test0, end) == (dt.date(2022, 5, 6), dt.date(2022, 5, 9))

    # the spine: every impression of the test days, as a user would take it from events
    events = wh.read_arrow(EVENTS.name, columns=["event_id", "user_id", "item_id", "event_ts", "event_date", "duration_ms"])
    days = pc.and_(pc.greater_equal(events.column("event_date"), pa.scalar(test0, pa.date32())),
                   pc.less(events.column("event_date"), pa.scalar(end, pa.date32())))
    spine = events.filter(days).drop_columns(["event_date"]).to_pandas()
    # and one example that is no event (an id the labels do not know): it must get no label
    spine = pd.concat([spine, spine.iloc[[0]].assign(event_id="not-an-event")], ignore_index=True)

    encoder = data.encoder
    assert encoder.fields == list(DEFAULT_FIELDS)  # the slice has every column of the default fields
    features = [f"{f.table}.{f.column}" for f in encoder.fields if f.table != LABELS_TABLE]
    features += [f"{LABELS_TABLE}.{c}" for c in NUMERIC + FLAGS]
    features += [f"{STATS_TABLE}.{c}" for c in ("rows", "wt_mean_s", "wt_std_s", "noise_wt_s", "interest_wt_s",
                                                 "noise_wt_smoothed_s", "interest_wt_smoothed_s")]
    got = training_set(spark, wh, spine, features).to_pandas()
    assert len(got) == len(spine)
    assert got.spine_row.tolist() == list(range(len(spine)))

    # the trainer's test rows are exactly the spine rows with a label; the others got none
    ids = data.event_ids["test"]
    labelled = got[LABELS_TABLE + "__duration_s"].notna()
    assert set(got.loc[labelled, "event_id"]) == set(ids)
    assert len(ids) == len(set(ids)) and labelled.sum() == len(ids) and len(ids) > 30_000
    # impressions the labels job dropped (duration missing or out of range) and the made-up one
    assert "not-an-event" in set(got.loc[~labelled, "event_id"]) and (~labelled).sum() > 1_000
    assert got.loc[~labelled, [f"{LABELS_TABLE}__{c}" for c in NUMERIC + FLAGS]].isna().all().all()
    rows = got.set_index("event_id").loc[ids].reset_index()

    # raw values before encoding, field by field, row by row
    columns = {f.name: (f.column if f.table == LABELS_TABLE else f"{f.table}__{f.column}") for f in encoder.fields}
    raw = encoder.raw_fields_attached(rows, columns)
    trainer_raw = data.raw["test"]
    assert trainer_raw.event_id.tolist() == list(ids)
    for f in encoder.fields:
        mine, theirs = raw[f.name].tolist(), trainer_raw[f.name].tolist()
        assert mine == theirs, f"field {f.name}: {sum(a != b for a, b in zip(mine, theirs))} rows differ"

    # label columns: exactly the trainer's
    split = data.splits["test"]
    for c in NUMERIC:
        want = split.columns[c]
        have = rows[f"{LABELS_TABLE}__{c}"].to_numpy(dtype=want.dtype)
        np.testing.assert_array_equal(have, want, err_msg=c)
    for c in FLAGS:
        np.testing.assert_array_equal(rows[f"{LABELS_TABLE}__{c}"].to_numpy(dtype=bool), split.columns[c], err_msg=c)
    assert set(rows[f"{LABELS_TABLE}__fit_end"]) == {dt.date(2022, 5, 4)}

    # duration statistics: those of the row's duration, as the trainer looks them up
    d = split.columns["duration_s"].astype(np.int64)
    for c in ("rows", "wt_mean_s", "wt_std_s", "noise_wt_s", "interest_wt_s", "noise_wt_smoothed_s", "interest_wt_smoothed_s"):
        want = data.stats[c].reindex(d).to_numpy(dtype=np.float64)
        np.testing.assert_array_equal(rows[f"{STATS_TABLE}__{c}"].to_numpy(dtype=np.float64), want, err_msg=c)
    assert set(rows[f"{STATS_TABLE}__fit_end"]) == {dt.date(2022, 5, 4)}

    # the encoded matrix the trainer's encoder makes from the training-set rows is the trainer's
    x = encoder.encode_attached(rows, columns)
    assert x.shape == split.x.shape
    np.testing.assert_array_equal(x, split.x)
    assert (split.x == 0).any() and (split.x > 0).mean() > 0.5  # unseen values map to 0, most do not
