"""Tests of the synthetic generator (pipelines/synthetic/, docs/synthetic.md)."""
from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.synthetic_truth import RAW_TRUTH_SCHEMA
from pipelines.settings import SyntheticSettings
from pipelines.synthetic import (
    LOG_COLUMNS,
    USER_COLUMNS,
    VIDEO_COLUMNS,
    GeneratedSource,
    SimulationModel,
    generate,
    n_items,
    n_users,
)

SLICE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kuairand-pure-slice"
DAY_MS = 86_400_000


def _official_header(name: str, fallback: tuple[str, ...]) -> list[str]:
    """The header of an official KuaiRand file when ../shared/data is present, else the constant."""
    path = SLICE / name
    if not path.exists():
        return list(fallback)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.readline().rstrip("\n").split(",")


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load(src: GeneratedSource) -> pd.DataFrame:
    """Logs joined to the truth by (source_file, source_line)."""
    frames = []
    for f in src.log_files:
        df = pd.read_csv(f)
        df["source_file"] = f.name
        df["source_line"] = np.arange(1, len(df) + 1)
        frames.append(df)
    logs = pd.concat(frames, ignore_index=True)
    truth = pd.read_parquet(src.truth_file).rename(columns={"user_id": "truth_user_id", "item_id": "truth_item_id"})
    joined = logs.merge(truth, on=["source_file", "source_line"], how="outer", validate="one_to_one", indicator=True)
    assert (joined["_merge"] == "both").all(), "log and truth rows do not match one to one"
    return joined.drop(columns="_merge")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> GeneratedSource:
    return generate(tmp_path_factory.mktemp("synthetic"), SyntheticSettings(events=60_000))


@pytest.fixture(scope="module")
def joined(source) -> pd.DataFrame:
    return _load(source)


# ---- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files_whatever_the_chunking(tmp_path):
    params = SyntheticSettings(events=20_000, seed=11)
    a = _hashes(generate(tmp_path / "a", params).root)
    b = _hashes(generate(tmp_path / "b", params, users_per_chunk=1).root)
    c = _hashes(generate(tmp_path / "c", params, users_per_chunk=123_456).root)
    assert len(a) == 14 + 3
    assert a == b == c


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="SIMD feature names are x86-64 ones")
def test_same_files_whatever_simd_code_path_numpy_takes(tmp_path):
    """Stand-in for "another machine": numpy with its AVX2/AVX-512 kernels disabled (SSE baseline)."""
    script = (
        "import sys; from pipelines.settings import SyntheticSettings; from pipelines.synthetic import generate; "
        "generate(sys.argv[1], SyntheticSettings(events=20_000, seed=5))"
    )
    disable = "X86_V3 X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disable}
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "baseline")], env=env, cwd=repo, check=True)
    native = generate(tmp_path / "native", SyntheticSettings(events=20_000, seed=5))
    assert _hashes(tmp_path / "baseline") == _hashes(native.root)


def test_different_seed_gives_different_files(tmp_path):
    a = _hashes(generate(tmp_path / "a", SyntheticSettings(events=20_000, seed=11)).root)
    b = _hashes(generate(tmp_path / "b", SyntheticSettings(events=20_000, seed=12)).root)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a)


def test_rerun_replaces_files_and_removes_stale_days(tmp_path):
    generate(tmp_path, SyntheticSettings(events=5_000, days=5))
    src = generate(tmp_path, SyntheticSettings(events=5_000, days=2, start_date=dt.date(2022, 4, 9)))
    logs = sorted(p.name for p in tmp_path.glob("log_standard_*"))
    assert logs == ["log_standard_20220409_synthetic.csv", "log_standard_20220410_synthetic.csv"]
    assert [p.name for p in src.log_files] == logs
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")], "temporary files left behind"
    assert sum(len(pd.read_csv(f)) for f in src.log_files) == 5_000


# ---- format --------------------------------------------------------------------------------


def test_headers_match_the_official_kuairand_files(source):
    log_header = _official_header("log_standard_4_25_to_4_30_pure.csv.gz", LOG_COLUMNS)
    assert list(LOG_COLUMNS) == log_header
    for f in source.log_files:
        assert f.read_text().split("\n", 1)[0].split(",") == log_header
    assert source.user_file.read_text().split("\n", 1)[0].split(",") == _official_header(
        "user_features_pure.csv.gz", USER_COLUMNS
    )
    assert source.item_file.read_text().split("\n", 1)[0].split(",") == _official_header(
        "video_features_basic_pure.csv", VIDEO_COLUMNS
    )


def test_exact_count_ints_and_files(source, joined):
    assert source.events == 60_000
    assert len(joined) == 60_000
    assert [f.name for f in source.log_files] == [f"log_standard_202204{d:02d}_synthetic.csv" for d in range(8, 22)]
    text = source.log_files[0].read_text()
    assert '"' not in text and ".0" not in text  # plain integers, no quotes
    for col in LOG_COLUMNS:
        assert pd.api.types.is_integer_dtype(joined[col]), col
    assert (joined["is_rand"] == 0).all()
    assert joined["tab"].between(0, 14).all()
    assert joined["user_id"].between(0, 60_000 // 50 - 1).all()
    assert joined["video_id"].between(0, 60_000 // 100 - 1).all()


def test_user_and_video_files(source):
    users = pd.read_csv(source.user_file)
    videos = pd.read_csv(source.item_file)
    assert users["user_id"].tolist() == list(range(1_200))
    assert videos["video_id"].tolist() == list(range(600))
    assert users["user_active_degree"].isin(
        ["full_active", "high_active", "middle_active", "2_14_day_new", "low_active", "single_low_active",
         "30day_retention", "day_new", "UNKNOWN"]
    ).all()  # fmt: skip
    assert (videos["video_duration"].dropna() >= 1_000).all()
    assert videos["video_type"].isin(["NORMAL", "AD"]).all()


def test_timestamps_inside_window_and_local_fields_in_utc8(joined):
    start = int(pd.Timestamp("2022-04-08", tz="UTC").value // 1_000_000)
    t = joined["time_ms"]
    assert t.min() >= start and t.max() < start + 14 * DAY_MS
    utc_day = pd.to_datetime(t, unit="ms", utc=True).dt.strftime("%Y%m%d")
    assert (("log_standard_" + utc_day + "_synthetic.csv") == joined["source_file"]).all()
    local = pd.to_datetime(t, unit="ms") + pd.Timedelta(hours=8)
    assert (local.dt.strftime("%Y%m%d").astype(int) == joined["date"]).all()
    assert (local.dt.hour * 100 == joined["hourmin"]).all()  # KuaiRand's hourmin is a whole hour


def test_rows_sorted_by_time_within_generation_batches(source):
    # each file holds batches of consecutive users, each sorted by (time_ms, user_id)
    df = pd.read_csv(source.log_files[3])
    key = df["time_ms"].to_numpy()
    drops = np.flatnonzero(np.diff(key) < 0)
    assert len(drops) < 10  # one per batch at most (60,000 events make one batch per 1,000 users)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.integers(1_000, 4_000),
    days=st.integers(1, 4),
    seed=st.integers(0, 2**32),
    users=st.one_of(st.none(), st.integers(10, 200)),
)
def test_invariants_hold_for_any_small_source(tmp_path_factory, events, days, seed, users):
    out = tmp_path_factory.mktemp("prop")
    src = generate(out, SyntheticSettings(events=events, days=days, seed=seed, users=users))
    df = _load(src)
    start = int(pd.Timestamp("2022-04-08", tz="UTC").value // 1_000_000)
    assert len(df) == events == src.events
    assert len(src.log_files) == days
    assert df["time_ms"].between(start, start + days * DAY_MS - 1).all()
    assert df["interest"].between(0, 1, inclusive="neither").all()
    assert (df["user_id"].astype(str) == df["truth_user_id"]).all()
    assert (df["video_id"].astype(str) == df["truth_item_id"]).all()
    assert (df["play_time_ms"] >= 0).all() and (df["duration_ms"] >= 0).all()


def test_days_without_events_get_header_only_files(tmp_path):
    src = generate(tmp_path, SyntheticSettings(events=1_000, days=366))
    assert len(src.log_files) == 366
    sizes = [len(pd.read_csv(f)) for f in src.log_files]
    assert sum(sizes) == 1_000
    assert sizes.count(0) > 0


def test_truth_schema_and_flags_agree_with_the_log(source, joined):
    assert pq.read_schema(source.truth_file).remove_metadata() == RAW_TRUTH_SCHEMA.remove_metadata()
    assert (joined["user_id"].astype(str) == joined["truth_user_id"]).all()
    assert (joined["video_id"].astype(str) == joined["truth_item_id"]).all()
    assert joined["interest"].between(0, 1, inclusive="neither").all()
    timed = joined[joined["duration_ms"] > 0]
    assert (timed["is_complete"] == (timed["play_time_ms"] >= timed["duration_ms"])).all()
    assert (timed["is_replay"] == (timed["play_time_ms"] > timed["duration_ms"])).all()
    long_view = np.where(
        joined["duration_ms"] > 0,
        joined["play_time_ms"] >= np.minimum(joined["duration_ms"], 18_000),
        joined["play_time_ms"] >= 18_000,
    )
    assert (joined["long_view"] == long_view).all()


# ---- the planted effects -------------------------------------------------------------------


def _mean_play_by_duration(df: pd.DataFrame, buckets: int = 5) -> pd.Series:
    return df.groupby(pd.qcut(df["duration_ms"], buckets, duplicates="drop"), observed=True)["play_time_ms"].mean()


def test_duration_bias_watch_time_rises_with_duration_at_fixed_interest(joined):
    band = joined[joined["interest"].between(0.45, 0.55) & (joined["duration_ms"] > 0)]
    engaged = band[~band["is_noisy_play"]]
    assert len(engaged) > 2_000
    means = _mean_play_by_duration(engaged)
    assert means.is_monotonic_increasing, means
    assert means.iloc[-1] > 3 * means.iloc[0]
    assert engaged["play_time_ms"].corr(engaged["duration_ms"], method="spearman") > 0.4
    # also visible in all plays (noisy ones included) at fixed interest
    assert _mean_play_by_duration(band).is_monotonic_increasing
    assert band["play_time_ms"].corr(band["duration_ms"], method="spearman") > 0.2


def test_noisy_plays_are_short_and_unrelated_to_interest(joined):
    share = joined["is_noisy_play"].mean()
    assert abs(share - SimulationModel().noisy_play_share) < 0.01
    noisy = joined[joined["is_noisy_play"]]
    assert noisy["play_time_ms"].median() < 3_000
    assert abs(noisy["play_time_ms"].corr(noisy["interest"])) < 0.05
    assert abs(noisy["play_time_ms"].corr(noisy["interest"], method="spearman")) < 0.05
    # being a noisy play does not depend on interest either
    assert abs(joined["is_noisy_play"].astype(float).corr(joined["interest"])) < 0.03
    engaged = joined[~joined["is_noisy_play"] & (joined["duration_ms"] > 0)]
    watch_fraction = np.minimum(engaged["play_time_ms"], engaged["duration_ms"]) / engaged["duration_ms"]
    assert watch_fraction.corr(engaged["interest"]) > 0.3
    # seen from the log alone: short plays (< 3 s) include many of interesting videos
    short = joined[joined["play_time_ms"] < 3_000]
    assert (short["interest"] > 0.5).mean() > 0.15


def test_complete_plays_and_replays_occur(joined):
    timed = joined[joined["duration_ms"] > 0]
    exact = (timed["play_time_ms"] == timed["duration_ms"]).mean()
    replays = (timed["play_time_ms"] > timed["duration_ms"]).mean()
    assert exact > 0.01 and replays > 0.05
    # replays are more likely on interesting videos
    complete = joined[joined["is_complete"] & ~joined["is_noisy_play"]]
    assert complete.groupby("is_replay")["interest"].mean().diff().iloc[-1] > 0


def test_feedback_flags_rise_with_interest(joined):
    high = joined[joined["interest"] > 0.7]
    low = joined[joined["interest"] < 0.3]
    for flag in ("is_click", "is_like", "long_view"):
        assert high[flag].mean() > low[flag].mean(), flag
    assert high["is_hate"].mean() < low["is_hate"].mean()


def test_sessions_bursts_within_and_gaps_of_hours_between(joined):
    df = joined.sort_values(["user_id", "time_ms", "source_line"])
    gaps_s = df.groupby("user_id")["time_ms"].diff().dropna() / 1_000
    assert (gaps_s < 300).mean() > 0.6
    assert (gaps_s > 3_600).mean() > 0.05
    assert ((gaps_s >= 300) & (gaps_s <= 3_600)).mean() < 0.1  # few in between: bimodal
    same_session = df.groupby("user_id")["session_index"].diff().dropna() == 0
    assert (gaps_s[same_session.to_numpy()] < 3_600).mean() > 0.99
    assert (gaps_s[~same_session.to_numpy()] >= 1_800).all()  # session_min_gap_s


def test_zero_duration_videos_are_pictures(tmp_path):
    src = generate(tmp_path, SyntheticSettings(events=10_000), model=SimulationModel(zero_duration_share=0.05))
    videos = pd.read_csv(src.item_file)
    pictures = set(videos.loc[videos["video_duration"].isna(), "video_id"])
    assert pictures
    assert videos.loc[videos["video_id"].isin(pictures), "upload_type"].isin(["LongPicture", "PictureSet"]).all()
    logs = pd.concat(pd.read_csv(f) for f in src.log_files)
    assert set(logs.loc[logs["duration_ms"] == 0, "video_id"]) <= pictures
    assert (logs.loc[logs["video_id"].isin(pictures), "duration_ms"] == 0).all()


# ---- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("noisy_play_share", 1.5),
        ("duration_min_s", 0.0),
        ("duration_max_s", 2.0),
        ("session_length_mean", 0.5),
        ("replay_prob_max", 0.1),
        ("hourly_activity", (1.0,) * 23),
        ("tab_shares", (0.0, 0.0)),
        ("taste_dim", 0),
        ("activity_sigma", float("nan")),
    ],
)
def test_bad_model_params_raise_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        SimulationModel(**{field: value})


@pytest.mark.parametrize(
    "field, value",
    [("events", 999), ("events", 100_000_001), ("days", 0), ("days", 367), ("users", 5), ("items", 9)],
)
def test_bad_size_settings_are_refused_by_the_settings_model(field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        SyntheticSettings(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    "field, settings",
    [
        ("users", SyntheticSettings(events=1_000, users=2_000)),
        ("items", SyntheticSettings(events=1_000, items=2_000)),
        ("users", SyntheticSettings(events=1_000_000, users=10)),  # too few users for the events
        ("seed", SyntheticSettings(events=1_000, seed=-1)),
    ],
)
def test_size_checks_across_fields_raise_value_error_naming_the_field(tmp_path, field, settings):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        generate(tmp_path / "never-written", settings)
    assert not (tmp_path / "never-written").exists()


def test_generate_takes_the_settings_model_only(tmp_path):
    with pytest.raises(TypeError):
        generate(tmp_path, {"events": 1_000})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="^model:"):
        generate(tmp_path, SyntheticSettings(events=1_000), model={"taste_dim": 4})  # type: ignore[arg-type]


def test_defaults_follow_the_settings():
    s = SyntheticSettings(events=5_000, seed=3, days=2)
    assert (n_users(s), n_items(s)) == (100, 50)
    assert s.start_date == dt.date(2022, 4, 8)
    assert n_users(SyntheticSettings(events=1_000)) == 20 and n_items(SyntheticSettings(events=1_000)) == 10
    assert n_users(s.model_copy(update={"events": 50_000})) == 1_000  # defaults follow events
    m = SimulationModel()
    assert SimulationModel(**m.__dict__) == m
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.taste_dim = 2  # type: ignore[misc]


def test_bad_users_per_chunk():
    with pytest.raises(ValueError, match="^users_per_chunk:"):
        generate("/nonexistent-never-created", SyntheticSettings(events=1_000), users_per_chunk=0)
