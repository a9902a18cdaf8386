"""The label jobs (Spark tasks over Arrow) equal the pandas path exactly; the side output of
``write_from_spark_arrow`` that carries their counts."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.labels import math as lm
from pipelines.labels import LabelSettings
from tests.pipelines.test_labels import D0, edge_frame, random_events, write_events

SETTINGS = LabelSettings(fit_start=D0, fit_end=D0 + dt.timedelta(days=3), duration_max_s=120, d2q_bins=5)


def pandas_reference(ev: pd.DataFrame, settings: LabelSettings):
    params = settings.params()
    rows = lm.prepare_rows_pandas(ev, params, settings.fit_start, settings.fit_end)
    stats, table = lm.fit_stats_pandas(rows, params)
    return stats, lm.label_frame_pandas(rows, stats, table, params), rows


def long_rows() -> list[dict]:
    """Plays of 150-240 s videos in the fit window (e^{5w} is beyond float64 there)."""
    rng = np.random.default_rng(4)
    out = []
    for i in range(60):
        ts = pd.Timestamp(D0, tz="UTC") + pd.Timedelta(days=int(i % 4), minutes=i)
        d = int(rng.integers(150_000, 240_000))
        out.append({"event_id": f"l{i:03d}", "user_id": "ul", "item_id": "il", "event_ts": ts, "event_date": ts.date(),
                    "duration_ms": d, "play_time_ms": int(rng.integers(0, d + 20_000))})
    return out


@pytest.mark.parametrize(
    "update",
    [{}, {"alpha": 0.3, "smoothing": "seconds", "min_rows_policy": "drop", "long_view_cwm_completion": "raw_ms"},
     {"alpha": -2.0, "window_T": 1, "d2q_bins": 30}, {"alpha": 5.0}],  # α = 5: e^{αw} overflows float64 for w > 142 s
)
def test_the_jobs_equal_the_pandas_path_exactly(spark, warehouse, update):
    from pipelines.labels import build_duration_stats, build_watch_time_labels

    settings = SETTINGS.model_copy(update={"duration_max_s": 240, **update})
    extra = edge_frame() + long_rows()
    ev = pd.concat([random_events(seed=3, n=3000), pd.DataFrame(extra)], ignore_index=True)
    write_events(warehouse, random_events(seed=3, n=3000), extra)
    st = build_duration_stats(spark, warehouse, settings)
    lab = build_watch_time_labels(spark, warehouse, settings)
    ref_stats, ref, rows = pandas_reference(ev.astype({"duration_ms": "Int64", "play_time_ms": "Int64"}), settings)

    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    pd.testing.assert_frame_equal(stats[list(ref_stats.columns)], ref_stats.astype({"d2q_bin": np.int32}), check_exact=True)
    assert st.stats["duration_stats"]["training_rows"] == int(rows["is_in_fit_window"].sum())

    got = warehouse.read_arrow(WATCH_TIME_LABELS.name).to_pandas().sort_values("event_id").reset_index(drop=True)
    want = ref.sort_values("event_id").reset_index(drop=True)
    assert got["event_id"].tolist() == want["event_id"].tolist()
    for c in WATCH_TIME_LABELS.columns:
        if c in ("event_ts", "event_date", "user_id", "item_id"):
            continue
        a, b = got[c].to_numpy(), want[c].to_numpy()
        assert (a == b).all(), c  # bit for bit: the same functions on the same values
    counts = lab.stats["watch_time_labels"]
    assert counts["label_rows"] == len(want)
    assert counts["rows_censored"] == int(want["is_censored"].sum())
    assert json.loads(lab.manifest("watch_time_labels").producer["counts"]) == counts
    assert set(lab.manifest("watch_time_labels").producer) == {"job", "settings", "counts"}


def test_side_output_reaches_the_commit_once_per_task(spark, warehouse):
    from pipelines.warehouse import SIDE_OUTPUT

    df = spark.createDataFrame(spark.sparkContext.parallelize([(i,) for i in range(3)], 3), "i long")

    def kernel(batches):
        for b in batches:
            ids = b.column("i").to_pylist()
            yield DURATION_STATS.name, _stats_rows(ids)
            yield SIDE_OUTPUT, pa.table({"n": [len(ids)]})

    seen = []

    def gather(tables):
        seen.extend(tables)
        return {"tasks": str(len(tables)), "n": str(sum(t.column("n")[0].as_py() for t in tables))}

    m = warehouse.write_from_spark_arrow(df, kernel, [DURATION_STATS], producer={"job": "t"}, side_output=gather)
    manifest = m[DURATION_STATS.name]
    assert manifest.producer["tasks"] == "3" and manifest.producer["n"] == "3" and manifest.producer["job"] == "t"
    assert warehouse.read_arrow(DURATION_STATS.name).num_rows == 3  # side tables are not written
    assert len(seen) == 3


def test_side_output_misuse_commits_nothing(spark, warehouse):
    """A side output nobody merges, or a merge that would overwrite the job's producer keys,
    fails the write before anything is committed."""
    from pipelines.warehouse import SIDE_OUTPUT

    df = spark.createDataFrame(spark.sparkContext.parallelize([(i,) for i in range(2)], 2), "i long")

    def kernel(batches):
        for b in batches:
            yield DURATION_STATS.name, _stats_rows(b.column("i").to_pylist())
            yield SIDE_OUTPUT, pa.table({"n": [b.num_rows]})

    with pytest.raises(ValueError, match="no side_output was given"):
        warehouse.write_from_spark_arrow(df, kernel, [DURATION_STATS], producer={"job": "t"})
    with pytest.raises(ValueError, match=r"producer key\(s\) \['job'\]"):
        warehouse.write_from_spark_arrow(df, kernel, [DURATION_STATS], producer={"job": "t"},
                                         side_output=lambda tables: {"job": "overwritten"})
    assert not warehouse.exists(DURATION_STATS.name)


def _stats_rows(ids):
    n = len(ids)
    return pa.table({
        "duration_s": pa.array(ids, pa.int64()), "rows": pa.array([1] * n, pa.int64()),
        "wt_mean_s": [1.0] * n, "wt_std_s": [None] * n, "noise_wt_s": [None] * n, "interest_wt_s": [None] * n,
        "noise_wt_smoothed_s": [1.0] * n, "interest_wt_smoothed_s": [2.0] * n, "d2q_bin": pa.array([0] * n, pa.int32()),
        "fit_start": [D0] * n, "fit_end": [D0 + dt.timedelta(days=1)] * n, "fit_status": ["no_rows"] * n,
        "is_interpolated": [True] * n, "long_view_cwm_threshold_s": [1.0] * n,
    })
