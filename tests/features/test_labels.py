"""The Spark label jobs: agreement with label_math, and parity with a plain pandas +
scikit-learn reference written here from the spec, on random logs and the KuaiRand slice."""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from features.labels import math as lm
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.labels.spark import prepare_rows

D0 = dt.date(2022, 4, 8)
LABELS = ["pcr", "wtg_gain", "wtg", "d2q", "d2q_dense", "d2co", "cwm_target"]
FLAGS = ["is_complete", "is_in_fit_window", "is_censored", "is_long_view_d2co", "is_long_view_cwm"]


def events_frame(rows) -> pd.DataFrame:
    """rows: (day offset, duration_ms, play_time_ms) -> events columns the labels read."""
    ts = [pd.Timestamp(D0, tz="UTC") + pd.Timedelta(days=r[0], seconds=i) for i, r in enumerate(rows)]
    return pd.DataFrame(
        {
            "event_id": [f"e{i:05d}" for i in range(len(rows))],
            "user_id": [f"u{i % 7}" for i in range(len(rows))],
            "item_id": [f"i{i % 11}" for i in range(len(rows))],
            "event_ts": ts,
            "event_date": [t.date() for t in ts],
            "duration_ms": pd.array([r[1] for r in rows], dtype="Int64"),
            "play_time_ms": pd.array([r[2] for r in rows], dtype="Int64"),
        }
    )


def commit_events(warehouse, ev: pd.DataFrame) -> None:
    """Commit ``ev`` (the columns :func:`events_frame` makes) as the ``events`` table."""
    import pyarrow as pa

    from features.events import EVENTS

    n = len(ev)
    fill = {"source": pa.array(["test"] * n), "source_file": pa.array(["f.csv"] * n),
            "source_line": pa.array(range(1, n + 1), type=pa.int64())}
    cols = {f.name: (pa.array(ev[f.name], type=f.type, from_pandas=True) if f.name in ev
                     else fill.get(f.name, pa.nulls(n, type=f.type))) for f in EVENTS.schema}
    warehouse.write_arrow(EVENTS, pa.table(cols))


def spark_labels(spark, ev: pd.DataFrame, params: lm.LabelParams, fit_start, fit_end):
    """The Spark jobs end to end (events committed to a scratch warehouse), returned as pandas:
    the labels sorted by event id, and the stats."""
    import dataclasses
    import tempfile

    from pipelines.labels import LabelSettings, build_duration_stats, build_watch_time_labels
    from pipelines.warehouse import Warehouse

    settings = LabelSettings(fit_start=fit_start, fit_end=fit_end, **dataclasses.asdict(params))
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(tmp)
        commit_events(wh, ev)
        build_duration_stats(spark, wh, settings)
        build_watch_time_labels(spark, wh, settings)
        stats = wh.read_arrow(DURATION_STATS.name).to_pandas()
        out = wh.read_arrow(WATCH_TIME_LABELS.name).to_pandas()
    assert list(out.columns) == WATCH_TIME_LABELS.columns
    return out.sort_values("event_id").reset_index(drop=True), stats


def test_prepare_rows_rounds_half_to_even_and_filters(spark):
    ev = events_frame(
        [
            (0, 4500, 4500),  # 4.5 s -> 4 s: below the 5 s minimum, dropped
            (0, 5500, 9000),  # 5.5 s -> 6 s; play beyond duration truncated: w = 6
            (0, 30400, 29600),  # near-complete play rounds into w == d (censored), not complete
            (0, 0, 1000),  # zero duration: no label row
            (0, None, 1000),  # no duration: no label row
            (0, 10000, None),  # no play time: no label row
            (9, 240499, 2500),  # 240 s, 2.5 s -> 2 s; day 9 is outside the fit window
            (0, 240500, 1000),  # 240.5 s -> 240 s (half to even)
            (0, 241500, 1000),  # 241.5 s -> 242 s: above the maximum, dropped
        ]
    )
    got = prepare_rows(spark.createDataFrame(ev), lm.LabelParams(), D0, D0 + dt.timedelta(days=9)).toPandas()
    got = got.sort_values("event_id")
    assert got["event_id"].tolist() == ["e00001", "e00002", "e00006", "e00007"]
    assert got["duration_s"].tolist() == [6, 30, 240, 240]
    assert got["watch_time_s"].tolist() == [6, 30, 2, 1]
    assert got["is_complete"].tolist() == [True, False, False, False]
    assert got["is_in_fit_window"].tolist() == [True, True, False, True]


def test_cwm_long_view_rounds_to_seconds_by_default(spark):
    """A row that rounds into a complete play: 29.6 s of a 30.4 s video (w = d = 30 s) and 10.4 s of a
    10.5 s video (10.5 s rounds half to even to 10 s). τ = 60 s (below), so d <= τ and the long view
    is "played to the end": yes in seconds (the official code), no in raw milliseconds."""
    log = [(0, 20000, p) for p in (1000, 5000, 15000, 20000)] + [(0, 60000, 60000)] * 10
    log += [(0, 30400, 29600), (0, 10500, 10400)]
    ev = events_frame(log)
    targets = ["e00014", "e00015"]
    for completion, expected in (("rounded_s", [True, True]), ("raw_ms", [False, False])):
        params = lm.LabelParams(long_view_cwm_completion=completion)
        got, stats = spark_labels(spark, ev, params, D0, D0 + dt.timedelta(days=1))
        # w over the fit window: 1, 5, 10, 15, 20, 30, 60 (x10): the 0.7 quantile is 60 s
        assert stats["long_view_cwm_threshold_s"].iloc[0] == 60.0
        row = got.set_index("event_id").loc[targets]
        assert row["duration_s"].tolist() == [30, 10] and row["watch_time_s"].tolist() == [30, 10]
        assert row["is_complete"].tolist() == [False, False] and row["is_censored"].tolist() == [True, True]
        assert row["is_long_view_cwm"].tolist() == expected, completion
        prows = lm.prepare_rows_pandas(ev, params, D0, D0 + dt.timedelta(days=1))
        pstats, table = lm.fit_stats_pandas(prows, params)
        ref = lm.label_frame_pandas(prows, pstats, table, params).set_index("event_id")
        assert ref.loc[targets, "is_long_view_cwm"].tolist() == expected, completion
    with pytest.raises(ValueError, match="long_view_cwm_completion"):
        spark_labels(spark, ev, lm.LabelParams(long_view_cwm_completion="floor_s"), D0, D0 + dt.timedelta(days=1))


# ---- Spark agrees with label_math on random logs ------------------------------------------
LOG = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from([5000, 6000, 6400, 8000, 30000, 31000, 100000]), st.integers(0, 120_000)),
    min_size=8,
    max_size=80,
)


def check_spark_equals_label_math(spark, log, alpha, mode, policy):
    params = lm.LabelParams(alpha=alpha, window_T=2, smoothing=mode, d2q_bins=3, duration_max_s=120, min_rows_policy=policy)
    ev = events_frame(log)
    fit_end = D0 + dt.timedelta(days=2)
    prows = lm.prepare_rows_pandas(ev, params, D0, fit_end)
    try:
        pstats, table = lm.fit_stats_pandas(prows, params)
    except ValueError:
        return  # nothing fittable: both paths refuse (the job raises with the reason)
    ref = lm.label_frame_pandas(prows, pstats, table, params).sort_values("event_id").reset_index(drop=True)
    got, stats = spark_labels(spark, ev, params, D0, fit_end)
    assert np.allclose(stats["noise_wt_smoothed_s"], pstats["noise_wt_smoothed_s"], rtol=0, atol=1e-9)
    assert got["event_id"].tolist() == ref["event_id"].tolist()
    for c in LABELS:
        assert np.allclose(got[c], ref[c], rtol=0, atol=1e-9), c
        assert np.isfinite(got[c]).all()
    for c in FLAGS + ["d2q_bin", "watch_time_s", "duration_s"]:
        assert (got[c].to_numpy() == ref[c].to_numpy()).all(), c


# No shrinking: each example runs Spark jobs (~8 s); a failure prints its unshrunk log.
NO_SHRINK = dict(deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture])
ARGS = dict(log=LOG, alpha=st.sampled_from([0.0, 0.3, -0.05]), mode=st.sampled_from(["positional", "seconds"]), policy=st.sampled_from(["borrow", "drop"]))


@settings(max_examples=2, **NO_SHRINK)
@given(**ARGS)
def test_spark_equals_label_math_on_random_logs(spark, log, alpha, mode, policy):
    check_spark_equals_label_math(spark, log, alpha, mode, policy)


@pytest.mark.slow
@settings(max_examples=12, **NO_SHRINK)
@given(**ARGS)
def test_spark_equals_label_math_on_more_random_logs(spark, log, alpha, mode, policy):
    check_spark_equals_label_math(spark, log, alpha, mode, policy)


# ---- parity with the spec's formulas on the KuaiRand slice --------------------------------
def read_kuairand(kuairand_dir) -> pd.DataFrame:
    logs = sorted(kuairand_dir.glob("log_standard_*.csv*"))
    df = pd.concat([pd.read_csv(p, usecols=["user_id", "video_id", "time_ms", "play_time_ms", "duration_ms"]) for p in logs])
    df = df.reset_index(drop=True)
    ts = pd.to_datetime(df["time_ms"], unit="ms", utc=True)
    return pd.DataFrame(
        {
            "event_id": [f"k{i:07d}" for i in range(len(df))],
            "user_id": df["user_id"].astype(str),
            "item_id": df["video_id"].astype(str),
            "event_ts": ts,
            "event_date": ts.dt.date,
            "duration_ms": df["duration_ms"].astype("Int64"),
            "play_time_ms": df["play_time_ms"].astype("Int64"),
        }
    )


def spec_reference(ev: pd.DataFrame, fit_start, fit_end, alpha: float, T: int, group_num: int, c_inv: float):
    """The official code's formulas, written from docs (spec §1-5), with plain pandas/sklearn.

    Training rows: fit window. The spec's loop (D²Co ``cal_gmm_label``) is applied to the
    durations with more than 2 training rows, as the spec says to drop the others first.
    """
    from scipy.stats import norm
    from sklearn.mixture import GaussianMixture

    df = ev[ev["duration_ms"].notna() & (ev["duration_ms"] > 0) & ev["play_time_ms"].notna()].copy()
    df["w"] = np.round(np.minimum(df["play_time_ms"].astype(float).clip(lower=0), df["duration_ms"].astype(float)) / 1000)
    df["d"] = np.round(df["duration_ms"].astype(float) / 1000)
    df = df[(df["d"] >= 5) & (df["d"] <= 240)]
    train = df[(df["event_date"] >= fit_start) & (df["event_date"] < fit_end)]
    # WTG: mean and sample std of w per duration second, over the training rows.
    mean = train.groupby("d")["w"].mean()
    std = train.groupby("d")["w"].std()
    m = df["d"].map(mean)
    s = df["d"].map(std)
    gain = ((df["w"] - m) / s).replace([np.inf, -np.inf], np.nan).fillna(0.0)
    df["wtg_gain"] = gain
    df["wtg"] = norm.cdf(gain)
    df["pcr"] = df["w"] / df["d"]
    # D2Q: equal-frequency bins of the training rows; average-rank and dense-rank percentiles.
    tr = train.copy()
    tr["bin"] = pd.qcut(tr["d"], group_num, labels=False, duplicates="drop")
    tr["d2q"] = tr.groupby("bin")["w"].rank(pct=True)
    dr = tr.groupby("bin")["w"].rank(method="dense")
    tr["d2q_dense"] = dr / dr.groupby(tr["bin"]).transform("max")
    # D²Co: GMM per duration second (> 2 rows), sorted by mean, frequency-weighted moving average by position.
    fits = []
    for d, g in train.groupby("d"):
        if len(g) > 2 and g["w"].nunique() > 1:
            gm = GaussianMixture(n_components=2, covariance_type="spherical", init_params="kmeans", max_iter=500, random_state=61)
            gm.fit(np.sort(g["w"].to_numpy()).reshape(-1, 1))
            lo, hi = np.sort(gm.means_.ravel())
            fits.append((d, len(g), lo, hi))
    f = pd.DataFrame(fits, columns=["d", "n", "nega", "posi"])
    for col in ("nega", "posi"):
        num = (f["n"] * f[col]).rolling(2 * T - 1, center=True, min_periods=1).sum()
        den = f["n"].rolling(2 * T - 1, center=True, min_periods=1).sum()
        f[col + "_s"] = num / den
    f = f.set_index("d")
    p = df["d"].map(f["posi_s"])
    q = df["d"].map(f["nega_s"])
    df["d2co"] = ((np.exp(alpha * df["w"]) - np.exp(alpha * q)) / (np.exp(alpha * p) - np.exp(alpha * q))).clip(0, 1)
    r = np.exp(-c_inv / (df["w"] + 1)).clip(1e-6, 1 - 1e-6)
    df["cwm_target"] = np.log(r / (1 - r))
    return df, tr, f


@pytest.mark.slow
def test_parity_with_the_spec_on_the_kuairand_slice(spark, kuairand_dir):
    ev = read_kuairand(kuairand_dir)
    fit_start, fit_end = dt.date(2022, 4, 25), dt.date(2022, 5, 2)
    alpha, T, bins, c_inv = 0.3, 3, 30, 40.0
    params = lm.LabelParams(alpha=alpha, window_T=T, d2q_bins=bins, cwm_c_inv=c_inv)
    got, stats = spark_labels(spark, ev, params, fit_start, fit_end)
    ref, tr, fits = spec_reference(ev, fit_start, fit_end, alpha, T, bins, c_inv)
    ref = ref.sort_values("event_id").reset_index(drop=True)
    assert got["event_id"].tolist() == ref["event_id"].tolist()
    assert len(got) > 190_000
    for c in ["pcr", "wtg_gain", "wtg", "cwm_target"]:
        assert np.abs(got[c].to_numpy() - ref[c].to_numpy()).max() <= 1e-9, c
    g = got.set_index("event_id")
    t = tr.set_index("event_id")
    assert (g.loc[t.index, "d2q_bin"].to_numpy() == t["bin"].to_numpy()).all()
    for c in ["d2q", "d2q_dense"]:
        assert np.abs(g.loc[t.index, c].to_numpy() - t[c].to_numpy()).max() <= 1e-9, c
    # D²Co where the GMM fits are identical: the durations the reference fitted.
    st_ = stats.set_index("duration_s").loc[fits.index.astype(int)]
    assert np.allclose(st_["interest_wt_s"], fits["posi"], rtol=0, atol=1e-9)
    assert np.allclose(st_["interest_wt_smoothed_s"], fits["posi_s"], rtol=0, atol=1e-9)
    both = ref["d2co"].notna().to_numpy()
    gap_ok = (ref["d"].map(fits["posi_s"] - fits["nega_s"]) >= 1.0).to_numpy()
    sel = both & gap_ok
    assert sel.mean() > 0.99
    assert np.abs(got["d2co"].to_numpy()[sel] - ref["d2co"].to_numpy()[sel]).max() <= 1e-6
    assert np.isfinite(got[LABELS].to_numpy(float)).all()


def test_contracts_are_catalogued_and_documented():
    from pipelines.catalog import contract as get_contract

    assert get_contract("duration_stats") is DURATION_STATS
    assert get_contract("watch_time_labels") is WATCH_TIME_LABELS
    assert WATCH_TIME_LABELS.partition_column == "event_date"
    assert DURATION_STATS.key == ("duration_s",)
    assert math.isclose(lm.CWM_EPS, 1e-6)
