"""Label jobs: commits, counts of every fallback, fit-window leakage, stale stats, figures, checks."""
from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.events import EVENTS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from pipelines.labels import LabelSettings

D0 = dt.date(2022, 4, 8)
SETTINGS = LabelSettings(fit_start=D0, fit_end=D0 + dt.timedelta(days=3), duration_max_s=120, d2q_bins=5)


def random_events(seed: int = 0, n: int = 1500, days: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dur_s = rng.choice([5, 6, 7, 10, 20, 30, 45, 60, 90, 120], size=n)
    dur_ms = dur_s * 1000 + rng.integers(-400, 400, size=n)
    noisy = rng.random(n) < 0.3
    play = np.where(noisy, rng.integers(0, 3000, size=n), (dur_ms * rng.uniform(0.1, 1.6, size=n)).astype(np.int64))
    day = rng.integers(0, days, size=n)
    ts = [pd.Timestamp(D0, tz="UTC") + pd.Timedelta(days=int(d), seconds=i) for i, d in enumerate(day)]
    return pd.DataFrame(
        {
            "event_id": [f"e{i:06d}" for i in range(n)],
            "user_id": [f"u{i % 37}" for i in range(n)],
            "item_id": [f"i{i % 101}" for i in range(n)],
            "event_ts": ts,
            "play_time_ms": play.astype(np.int64),
            "duration_ms": dur_ms.astype(np.int64),
            "event_date": [t.date() for t in ts],
        }
    )


def write_events(warehouse, df: pd.DataFrame, extra: list[dict] | None = None):
    df = df.copy()
    if extra:
        df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
    n = len(df)
    cols = {}
    for f in EVENTS.schema:
        if f.name in df:
            vals = [None if (isinstance(v, float) and np.isnan(v)) else v for v in df[f.name].tolist()]
            if pa.types.is_integer(f.type):
                vals = [None if v is None else int(v) for v in vals]
            cols[f.name] = pa.array(vals, type=f.type)
        elif f.name == "source":
            cols[f.name] = pa.array(["test"] * n)
        elif f.name == "source_file":
            cols[f.name] = pa.array(["f.csv"] * n)
        elif f.name == "source_line":
            cols[f.name] = pa.array(range(1, n + 1), type=pa.int64())
        else:
            cols[f.name] = pa.nulls(n, type=f.type)
    return warehouse.write_arrow(EVENTS, pa.table(cols))


EDGE_ROWS = [
    # no duration, zero duration, no play time, out of range: no label rows
    {"event_id": "x1", "duration_ms": None, "play_time_ms": 1000},
    {"event_id": "x2", "duration_ms": 0, "play_time_ms": 1000},
    {"event_id": "x3", "duration_ms": 10000, "play_time_ms": None},
    {"event_id": "x4", "duration_ms": 3000, "play_time_ms": 1000},
    # a duration (8 s) with 2 training rows: too few for a GMM, borrows from neighbours
    {"event_id": "x5", "duration_ms": 8000, "play_time_ms": 1000},
    {"event_id": "x6", "duration_ms": 8000, "play_time_ms": 8000},
    # a duration (9 s) whose rows all have one value: degenerate mixture
    {"event_id": "x7", "duration_ms": 9000, "play_time_ms": 4000},
    {"event_id": "x8", "duration_ms": 9000, "play_time_ms": 4000},
    {"event_id": "x9", "duration_ms": 9000, "play_time_ms": 4000},
    # a duration (100 s) seen only outside the fit window
    {"event_id": "y1", "duration_ms": 100000, "play_time_ms": 50000, "day": 4},
]


def edge_frame() -> list[dict]:
    out = []
    for r in EDGE_ROWS:
        ts = pd.Timestamp(D0, tz="UTC") + pd.Timedelta(days=r.get("day", 0), hours=5)
        out.append({"event_id": r["event_id"], "user_id": "ux", "item_id": "ix", "event_ts": ts, "event_date": ts.date(),
                    "duration_ms": r["duration_ms"], "play_time_ms": r["play_time_ms"]})
    return out


@pytest.mark.slow
def test_jobs_commit_both_tables_with_every_fallback_counted(spark, warehouse, tmp_path):
    from pipelines.labels import build_duration_stats, build_watch_time_labels, check_duration_stats, check_watch_time_labels

    write_events(warehouse, random_events(), edge_frame())
    reports = str(tmp_path / "reports")
    st = build_duration_stats(spark, warehouse, SETTINGS, reports=reports)
    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas().set_index("duration_s")
    assert stats.index.tolist() == list(range(5, 121))
    assert stats.loc[8, "fit_status"] == "too_few_rows" and stats.loc[8, "rows"] == 2
    assert stats.loc[9, "fit_status"] == "single_value"
    assert stats.loc[100, "fit_status"] == "no_rows" and stats.loc[100, "rows"] == 0
    assert bool(stats.loc[8, "is_interpolated"]) and not bool(stats.loc[10, "is_interpolated"])
    assert np.isfinite(stats[["noise_wt_smoothed_s", "interest_wt_smoothed_s"]].to_numpy()).all()
    assert st.stats["duration_stats"]["durations_too_few_rows"] == 1 and st.stats["duration_stats"]["durations_single_value"] == 1
    assert os.path.getsize(st.figures["duration_stats"]["gmm_fits"]) > 10_000
    assert json.loads(st.manifest("duration_stats").producer["counts"]) == st.stats["duration_stats"]

    lab = build_watch_time_labels(spark, warehouse, SETTINGS, reports=reports)
    c = lab.stats["watch_time_labels"]
    assert (c["events_without_duration"], c["events_with_zero_duration"], c["events_without_play_time"]) == (1, 1, 1)
    assert c["events_out_of_duration_range"] == 1  # x4 (3 s)
    assert c["rows_dropped_min_rows_policy"] == 0
    assert c["label_rows"] == 1500 + 6
    assert c["rows_d2co_interpolated_fit"] >= 6  # 8 s, 9 s and 100 s rows
    assert c["rows_play_beyond_duration_truncated"] > 0 and c["rows_cwm_target_clamped"] > 0
    labels = warehouse.read_arrow(WATCH_TIME_LABELS.name).to_pandas()
    assert set(labels["event_id"]) >= {"x5", "x6", "x7", "y1"} and "x4" not in set(labels["event_id"])
    assert set(lab.figures["watch_time_labels"]) == {"watch_time_by_duration", "label_distributions"}
    assert check_duration_stats(spark, warehouse, SETTINGS) == {
        "rows": 116, "rows_outside_fit_window": 0, "fit_window_differs_from_settings": 0, "missing_or_extra_durations": 0,
        "smoothed_not_finite": 0, "noise_above_interest": 0, "negative_d2q_bin": 0,
    }
    bad = {k: v for k, v in check_watch_time_labels(spark, warehouse, SETTINGS).items() if k != "rows" and v}
    assert bad == {}

    # The drop policy: durations that could not be fitted get no label rows, counted.
    drop = SETTINGS.model_copy(update={"min_rows_policy": "drop"})
    dropped = build_watch_time_labels(spark, warehouse, drop).stats["watch_time_labels"]
    assert dropped["rows_dropped_min_rows_policy"] == 2 + 3 + 1


def test_labels_refuse_stats_of_another_window(spark, warehouse):
    from pipelines.labels import build_duration_stats, build_watch_time_labels, check_duration_stats

    write_events(warehouse, random_events(n=300))
    build_duration_stats(spark, warehouse, SETTINGS)
    other = SETTINGS.model_copy(update={"fit_end": D0 + dt.timedelta(days=2)})
    with pytest.raises(ValueError, match="fitted on"):
        build_watch_time_labels(spark, warehouse, other)
    # The check sees both the other window and training rows that no longer match.
    counts = check_duration_stats(spark, warehouse, other)
    assert counts["fit_window_differs_from_settings"] == 116 and counts["rows_outside_fit_window"] > 0


def test_changing_only_test_window_rows_leaves_training_labels_and_stats_unchanged(spark, warehouse, tmp_path):
    from pipelines.labels import build_duration_stats, build_watch_time_labels
    from pipelines.warehouse import Warehouse

    base = random_events(seed=5, n=1200)
    write_events(warehouse, base)
    build_duration_stats(spark, warehouse, SETTINGS)
    build_watch_time_labels(spark, warehouse, SETTINGS)
    stats1 = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    lab1 = warehouse.read_arrow(WATCH_TIME_LABELS.name).to_pandas().set_index("event_id").sort_index()

    # Only rows dated after fit_end change: other play times, new durations, more rows.
    changed = base.copy()
    test = pd.to_datetime(changed["event_date"]) >= pd.Timestamp(SETTINGS.fit_end)
    assert 0 < test.sum() < len(changed)
    rng = np.random.default_rng(9)
    changed.loc[test, "play_time_ms"] = rng.integers(0, 200_000, size=int(test.sum()))
    changed.loc[test, "duration_ms"] = rng.integers(5_000, 119_000, size=int(test.sum()))
    extra = random_events(seed=11, n=200)
    extra = extra[pd.to_datetime(extra["event_date"]) >= pd.Timestamp(SETTINGS.fit_end)].assign(
        event_id=lambda f: "n" + f["event_id"]
    )
    wh2 = Warehouse(str(tmp_path / "wh2"))
    write_events(wh2, pd.concat([changed, extra], ignore_index=True))
    build_duration_stats(spark, wh2, SETTINGS)
    build_watch_time_labels(spark, wh2, SETTINGS)
    stats2 = wh2.read_arrow(DURATION_STATS.name).to_pandas()
    lab2 = wh2.read_arrow(WATCH_TIME_LABELS.name).to_pandas().set_index("event_id").sort_index()

    pd.testing.assert_frame_equal(stats1, stats2)
    train = lab1.index[lab1["is_in_fit_window"]]
    assert len(train) > 500
    pd.testing.assert_frame_equal(lab1.loc[train], lab2.loc[train])
    # ... and the test rows did change (the test can fail).
    test_ids = lab1.index[~lab1["is_in_fit_window"]].intersection(lab2.index)
    assert (lab1.loc[test_ids, "d2co"] != lab2.loc[test_ids, "d2co"]).any()


@pytest.mark.parametrize(
    "yaml_text, field",
    [
        ("labels: {fit_start: 2022-04-10, fit_end: 2022-04-09}", "labels"),
        ("labels: {smoothing: gaussian}", "labels.smoothing"),
        ("labels: {min_rows: 2}", "labels.min_rows"),
        ("labels: {long_view_cwm_quantile: 1.5}", "labels.long_view_cwm_quantile"),
        ("labels: {duration_min_s: 0}", "labels.duration_min_s"),
        ("labels: {alhpa: 0.3}", "labels.alhpa"),
        ("labels: {long_view_cwm_completion: floor_s}", "labels.long_view_cwm_completion"),
    ],
)
def test_bad_label_settings_fail_at_load_naming_the_field(tmp_path, yaml_text, field):
    from pipelines.settings import ConfigError, load_settings

    path = tmp_path / "recfeat.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=rf": {field}[:.]"):
        load_settings(path)


def test_the_repository_yaml_holds_the_label_defaults():
    from pathlib import Path

    from pipelines.settings import load_settings

    s = load_settings(Path(__file__).resolve().parents[2] / "recfeat.yaml")
    assert s.labels == LabelSettings()


def test_cwm_long_view_follows_the_official_seconds_by_default(spark, warehouse):
    """The job labels a near-complete play (10.4 s of a 10.5 s video: both 10 s, half to even) as
    played to the end, as the official CWM code does; ``long_view_cwm_completion: raw_ms`` keeps
    the millisecond reading. The setting is recorded in the manifest."""
    from pipelines.labels import build_duration_stats, build_watch_time_labels

    assert LabelSettings().long_view_cwm_completion == "rounded_s"
    assert SETTINGS.params().long_view_cwm_completion == "rounded_s"
    extra = [{"event_id": "z1", "user_id": "uz", "item_id": "iz", "event_ts": pd.Timestamp(D0, tz="UTC"),
              "event_date": D0, "duration_ms": 10500, "play_time_ms": 10400}]
    write_events(warehouse, random_events(n=400), extra)
    build_duration_stats(spark, warehouse, SETTINGS)
    stats = warehouse.read_arrow(DURATION_STATS.name).to_pandas()
    assert stats["long_view_cwm_threshold_s"].iloc[0] >= 10  # d = 10 s <= τ: the completion decides
    got = {}
    for completion in ("rounded_s", "raw_ms"):
        settings = SETTINGS.model_copy(update={"long_view_cwm_completion": completion})
        res = build_watch_time_labels(spark, warehouse, settings)
        assert json.loads(res.manifest("watch_time_labels").producer["settings"])["long_view_cwm_completion"] == completion
        lab = warehouse.read_arrow(WATCH_TIME_LABELS.name).to_pandas().set_index("event_id")
        got[completion] = lab.loc["z1", ["duration_s", "watch_time_s", "is_complete", "is_censored", "is_long_view_cwm"]].tolist()
    assert got == {"rounded_s": [10, 10, False, True, True], "raw_ms": [10, 10, False, True, False]}
