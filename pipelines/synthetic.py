"""The synthetic source: KuaiRand-format logs with a known ground truth (see ``docs/synthetic.md``).

:func:`generate` writes, into one directory,

* ``log_standard_YYYYMMDD_synthetic.csv``: one plain CSV per UTC day of the window, in the
  official KuaiRand log format (:data:`LOG_COLUMNS`);
* ``user_features_synthetic.csv`` and ``video_features_basic_synthetic.csv``: user and video
  attributes with the headers of KuaiRand's ``user_features_pure.csv`` and
  ``video_features_basic_pure.csv``;
* ``truth/ground_truth.parquet``: what real logs never have, one row per impression
  (:data:`features.synthetic_truth.RAW_TRUTH_SCHEMA`): its latent interest and how its play time
  was produced, joined to the logs by ``(source_file, source_line)``.

The simulated model (users, videos, latent interest, noisy and engaged plays with duration
bias, truncation and replays, sessions) is documented with every parameter in
``docs/synthetic.md``; :class:`GeneratorParams` holds the parameters and their defaults.

Determinism: every random draw comes from a PCG64 generator derived with ``SeedSequence`` from
``(seed, stream, block)``, where a block is a fixed-size range of users (:data:`USER_BLOCK`) or
videos (:data:`ITEM_BLOCK`); the same parameters give byte-identical files, whatever
``users_per_chunk`` (which only sets how many users are buffered before a write).

Memory: per-user event counts (O(users)) and video attributes (O(videos)) are held; events are
simulated in batches of at most :data:`BATCH_EVENTS` events (one user with more events is a
batch of its own; a user has at most :data:`MAX_EVENTS_PER_USER`) and written as they are made.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from features.synthetic_truth import RAW_TRUTH_SCHEMA

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.settings import SyntheticSettings

# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------

#: Columns of the official KuaiRand standard log, in order.
LOG_COLUMNS = (
    "user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
    "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
    "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab",
)  # fmt: skip

#: Columns of KuaiRand's ``user_features_pure.csv``.
USER_COLUMNS = (
    "user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
    "follow_user_num", "follow_user_num_range", "fans_user_num", "fans_user_num_range",
    "friend_user_num", "friend_user_num_range", "register_days", "register_days_range",
    *[f"onehot_feat{i}" for i in range(18)],
)  # fmt: skip

#: Columns of KuaiRand's ``video_features_basic_pure.csv``.
VIDEO_COLUMNS = (
    "video_id", "author_id", "video_type", "upload_dt", "upload_type", "visible_status",
    "video_duration", "server_width", "server_height", "music_id", "music_type", "tag",
)  # fmt: skip

LOG_FILE_PATTERN = "log_standard_{yyyymmdd}_synthetic.csv"
LOG_FILE_RE = re.compile(r"^log_standard_\d{8}_synthetic\.csv$")
USER_FILE = "user_features_synthetic.csv"
ITEM_FILE = "video_features_basic_synthetic.csv"
TRUTH_DIR = "truth"
TRUTH_FILE = "ground_truth.parquet"


def truth_path(source_dir: str | Path) -> Path:
    """Where :func:`generate` writes the ground-truth file of a source directory."""
    return Path(source_dir) / TRUTH_DIR / TRUTH_FILE

# --------------------------------------------------------------------------------------------
# Fixed constants (part of the output definition: changing one changes the files)
# --------------------------------------------------------------------------------------------

#: Users per random-number block: block ``b`` (users ``b*USER_BLOCK ..``) draws from its own
#: generator, so the output does not depend on how many users are processed at once.
USER_BLOCK = 1_000
#: Videos per random-number block (video attributes).
ITEM_BLOCK = 65_536
#: Events simulated at once: the users of a block are cut, in order, into batches of at most
#: this many events (a user with more is a batch alone). Rows of a batch are sorted by
#: (time_ms, user_id); files hold batches in generation order.
BATCH_EVENTS = 65_536
#: Hard cap on one user's events (bounds the memory of one batch); excess is redistributed.
MAX_EVENTS_PER_USER = 200_000
#: ``events / users`` may not exceed this (so the cap above is far from binding).
MAX_MEAN_EVENTS_PER_USER = 50_000
#: Rows per row group of the truth file (fixed, so row groups do not depend on chunking).
TRUTH_ROW_GROUP_ROWS = 131_072
#: A user's sessions (with their breaks) may fill at most this share of the window; beyond it
#: the user's timeline is compressed (only with extreme events / users / days ratios).
MAX_BUSY_FRACTION = 0.5
#: Interest logits are clipped to [-LOGIT_BOUND, LOGIT_BOUND], so interest is strictly in (0, 1).
LOGIT_BOUND = 15.0
#: Replays last at most this many extra loops of the video.
MAX_EXTRA_LOOPS = 4.0
#: Beijing time (KuaiRand's ``date`` and ``hourmin``) is UTC+8 (no daylight saving).
LOCAL_OFFSET_MS = 8 * 3_600_000
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Random streams: SeedSequence(seed, spawn_key=(stream, block)).
_STREAM_COUNTS = 0
_STREAM_ITEMS = 1
_STREAM_EVENTS = 2
_STREAM_USER_FEATURES = 3
_STREAM_ITEM_FEATURES = 4

#: Relative activity by Beijing hour 0..23: the hour-of-day histogram of the KuaiRand-Pure
#: slice (2022-04-25 .. 05-08), divided by its mean.
KUAIRAND_HOURLY_ACTIVITY = (
    0.98, 0.59, 0.39, 0.24, 0.19, 0.21, 0.39, 0.61, 0.78, 0.94, 1.09, 1.22,
    1.39, 1.36, 1.24, 1.23, 1.32, 1.43, 1.37, 1.28, 1.34, 1.39, 1.55, 1.49,
)  # fmt: skip
#: Share of impressions per ``tab`` value 0..14 in the KuaiRand-Pure slice.
KUAIRAND_TAB_SHARES = (
    0.0887, 0.7577, 0.0303, 0.0015, 0.0598, 0.0029, 0.0491, 0.0006,
    0.0047, 0.0006, 0.0003, 0.0010, 0.0023, 0.0003, 0.0001,
)  # fmt: skip


def _real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _integer(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class GeneratorParams:
    """Every parameter of the simulated model, with its default (``docs/synthetic.md``).

    Invalid values raise ``ValueError`` whose message starts with the field name.
    ``users``/``items`` ``None`` mean the defaults ``max(10, events // 50)`` and
    ``max(10, events // 100)``; :attr:`n_users` and :attr:`n_items` give the resolved numbers.
    """

    # size and window
    events: int = 200_000
    users: int | None = None
    items: int | None = None
    seed: int = 20220408
    start_date: dt.date = dt.date(2022, 4, 8)
    days: int = 14
    # users
    activity_sigma: float = 1.0
    # videos
    popularity_exponent: float = 0.8
    duration_median_s: float = 60.0
    duration_sigma: float = 0.9
    duration_min_s: float = 3.0
    duration_max_s: float = 600.0
    zero_duration_share: float = 0.001
    # latent interest
    taste_dim: int = 8
    taste_scale: float = 1.5
    user_bias_sd: float = 0.5
    item_quality_sd: float = 0.5
    interest_intercept: float = -0.5
    # noisy plays
    noisy_play_share: float = 0.25
    noisy_zero_share: float = 0.3
    noisy_play_median_s: float = 1.5
    noisy_play_sigma: float = 0.8
    # engaged plays
    watch_scale_s: float = 30.0
    duration_exponent: float = 0.7
    interest_exponent: float = 0.8
    watch_sigma: float = 0.6
    replay_prob_min: float = 0.5
    replay_prob_max: float = 0.95
    replay_extra_mean: float = 0.5
    # feedback flags
    click_prob_noisy: float = 0.05
    click_prob_min: float = 0.3
    click_prob_max: float = 0.95
    like_rate: float = 0.08
    follow_rate: float = 0.006
    comment_rate: float = 0.012
    forward_rate: float = 0.004
    profile_enter_rate: float = 0.09
    hate_rate: float = 0.002
    comment_view_rate: float = 0.12
    comment_stay_median_s: float = 6.0
    # sessions and time
    session_length_mean: float = 8.0
    think_time_median_s: float = 2.0
    think_time_sigma: float = 1.0
    session_min_gap_s: float = 1800.0
    hourly_activity: tuple[float, ...] = KUAIRAND_HOURLY_ACTIVITY
    tab_shares: tuple[float, ...] = KUAIRAND_TAB_SHARES

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise ValueError(f"{name}: {why} (got {getattr(self, name)!r})")

        if not _integer(self.events) or not 1_000 <= self.events <= 100_000_000:
            fail("events", "must be an integer in [1000, 100000000]")
        for name in ("users", "items"):
            v = getattr(self, name)
            if v is not None and (not _integer(v) or v < 10):
                fail(name, "must be None or an integer >= 10")
            if v is not None and v > self.events:
                fail(name, "must be at most events")
        if self.n_users * MAX_MEAN_EVENTS_PER_USER < self.events:
            fail("users", f"too few users: events / users may be at most {MAX_MEAN_EVENTS_PER_USER}")
        if not _integer(self.seed) or self.seed < 0:
            fail("seed", "must be a non-negative integer")
        if not isinstance(self.start_date, dt.date) or isinstance(self.start_date, dt.datetime):
            fail("start_date", "must be a datetime.date")
        if not _integer(self.days) or not 1 <= self.days <= 366:
            fail("days", "must be an integer in [1, 366]")
        if not _integer(self.taste_dim) or not 1 <= self.taste_dim <= 64:
            fail("taste_dim", "must be an integer in [1, 64]")
        for name in (
            "activity_sigma", "popularity_exponent", "duration_sigma", "taste_scale",
            "user_bias_sd", "item_quality_sd", "noisy_play_sigma", "duration_exponent",
            "interest_exponent", "watch_sigma", "think_time_sigma",
        ):  # fmt: skip
            v = getattr(self, name)
            if not _real(v) or v < 0 or v > 10:
                fail(name, "must be a number in [0, 10]")
        if not _real(self.interest_intercept) or abs(self.interest_intercept) > 10:
            fail("interest_intercept", "must be a number in [-10, 10]")
        for name in (
            "duration_median_s", "duration_min_s", "duration_max_s", "noisy_play_median_s",
            "watch_scale_s", "replay_extra_mean", "comment_stay_median_s", "think_time_median_s",
            "session_min_gap_s",
        ):  # fmt: skip
            v = getattr(self, name)
            if not _real(v) or v <= 0 or v > 1e6:
                fail(name, "must be a positive number (at most 1e6)")
        if self.duration_min_s < 1:
            fail("duration_min_s", "must be at least 1 s")
        if self.duration_max_s < self.duration_min_s:
            fail("duration_max_s", "must be at least duration_min_s")
        if not _real(self.session_length_mean) or not 1 <= self.session_length_mean <= 10_000:
            fail("session_length_mean", "must be a number in [1, 10000]")
        for name in (
            "zero_duration_share", "noisy_play_share", "noisy_zero_share", "replay_prob_min",
            "replay_prob_max", "click_prob_noisy", "click_prob_min", "click_prob_max", "like_rate",
            "follow_rate", "comment_rate", "forward_rate", "profile_enter_rate", "hate_rate",
            "comment_view_rate",
        ):  # fmt: skip
            v = getattr(self, name)
            if not _real(v) or not 0 <= v <= 1:
                fail(name, "must be a probability in [0, 1]")
        if self.zero_duration_share >= 1:
            fail("zero_duration_share", "must be below 1")
        if self.replay_prob_max < self.replay_prob_min:
            fail("replay_prob_max", "must be at least replay_prob_min")
        if self.click_prob_max < self.click_prob_min:
            fail("click_prob_max", "must be at least click_prob_min")
        for name, size in (("hourly_activity", 24), ("tab_shares", None)):
            v = getattr(self, name)
            ok = isinstance(v, tuple) and all(_real(x) and x >= 0 for x in v) and sum(v) > 0
            if not ok or (size is not None and len(v) != size) or len(v) == 0:
                want = f"{size} " if size else ""
                fail(name, f"must be a tuple of {want}non-negative numbers with a positive sum")

    @property
    def n_users(self) -> int:
        """Number of users (``users`` or its default ``max(10, events // 50)``)."""
        return self.users if self.users is not None else max(10, self.events // 50)

    @property
    def n_items(self) -> int:
        """Number of videos (``items`` or its default ``max(10, events // 100)``)."""
        return self.items if self.items is not None else max(10, self.events // 100)

    @classmethod
    def from_settings(cls, s: SyntheticSettings) -> GeneratorParams:
        """Parameters from the project settings (size and window; model parameters default)."""
        return cls(events=s.events, users=s.users, items=s.items, seed=s.seed, start_date=s.start_date, days=s.days)


@dataclass(frozen=True)
class GeneratedSource:
    """What :func:`generate` wrote."""

    root: Path
    log_files: list[Path]
    user_file: Path
    item_file: Path
    truth_file: Path
    events: int


# --------------------------------------------------------------------------------------------
# Random streams and per-user counts
# --------------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, block: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, block))))


def _user_counts(p: GeneratorParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-user activity z-scores and event counts (multinomial; total exactly ``events``)."""
    rng = _rng(p.seed, _STREAM_COUNTS)
    z = rng.standard_normal(p.n_users)
    w = np.exp(p.activity_sigma * (z - z.max()))
    probs = w / w.sum()
    counts = rng.multinomial(p.events, probs)
    # Cap heavy users, redistributing the excess over the others (bounds a batch's memory).
    for _ in range(1000):
        over = counts > MAX_EVENTS_PER_USER
        if not over.any():
            break
        excess = int((counts[over] - MAX_EVENTS_PER_USER).sum())
        counts[over] = MAX_EVENTS_PER_USER
        room = np.where(counts < MAX_EVENTS_PER_USER, probs, 0.0)
        counts += rng.multinomial(excess, room / room.sum())
    else:  # pragma: no cover - cannot happen with MAX_MEAN_EVENTS_PER_USER << MAX_EVENTS_PER_USER
        raise RuntimeError("could not cap per-user event counts")
    return z, counts.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


@dataclass
class _Items:
    cdf: np.ndarray  # float64, exposure popularity CDF over video ids
    duration_ms: np.ndarray  # int64, latent duration (used by the play model)
    is_picture: np.ndarray  # bool, logged duration 0
    quality: np.ndarray  # float64
    taste: np.ndarray  # float32 (items, taste_dim)


def _make_items(p: GeneratorParams) -> _Items:
    n, k = p.n_items, p.taste_dim
    weight = np.empty(n)
    duration_ms = np.empty(n, dtype=np.int64)
    is_picture = np.empty(n, dtype=bool)
    quality = np.empty(n)
    taste = np.empty((n, k), dtype=np.float32)
    for b, lo in enumerate(range(0, n, ITEM_BLOCK)):
        hi = min(n, lo + ITEM_BLOCK)
        m = hi - lo
        rng = _rng(p.seed, _STREAM_ITEMS, b)
        # Pareto weights u**-s: the rank-frequency curve of exposure is Zipf with exponent s.
        weight[lo:hi] = (1.0 - rng.random(m)) ** (-p.popularity_exponent)
        dur_s = np.exp(math.log(p.duration_median_s) + p.duration_sigma * rng.standard_normal(m))
        duration_ms[lo:hi] = np.rint(np.clip(dur_s, p.duration_min_s, p.duration_max_s) * 1000.0)
        is_picture[lo:hi] = rng.random(m) < p.zero_duration_share
        quality[lo:hi] = p.item_quality_sd * rng.standard_normal(m)
        taste[lo:hi] = rng.standard_normal((m, k))
    cdf = np.cumsum(weight)
    cdf /= cdf[-1]
    return _Items(cdf=cdf, duration_ms=duration_ms, is_picture=is_picture, quality=quality, taste=taste)


_UPLOAD_TYPES = (
    "LongImport", "Web", "ShortImport", "Kmovie", "UNKNOWN", "LongCamera", "ShortCamera", "ShareFromOtherApp",
    "FollowShoot",
)  # fmt: skip
_UPLOAD_SHARES = (0.3955, 0.3267, 0.1240, 0.1189, 0.0108, 0.0087, 0.0058, 0.0039, 0.0057)
_PICTURE_TYPES = ("LongPicture", "PictureSet")
_SCREENS = ((720.0, 1280.0), (1280.0, 720.0), (960.0, 720.0), (720.0, 1282.0), (720.0, 960.0), (1080.0, 1440.0))
_SCREEN_SHARES = (0.75, 0.19, 0.025, 0.015, 0.012, 0.008)
#: Popular KuaiRand tags; a video's first tag is the one of its strongest taste dimension.
_TOPIC_TAGS = (39, 3, 20, 12, 62, 43, 68, 9, 6, 7, 2, 1, 15, 17, 67, 11)


def _choice(rng: np.random.Generator, shares, size: int) -> np.ndarray:
    cdf = np.cumsum(np.asarray(shares, dtype=np.float64))
    idx = np.searchsorted(cdf / cdf[-1], rng.random(size), side="right")
    return np.minimum(idx, len(cdf) - 1)


def _write_video_features(path: Path, p: GeneratorParams, items: _Items) -> None:
    n = p.n_items
    n_authors = max(10, int(0.85 * n))
    upload_dates = np.array([(p.start_date - dt.timedelta(days=d)).isoformat() for d in range(31)])
    first = True
    with open(path, "w", newline="", encoding="utf-8") as f:
        for b, lo in enumerate(range(0, n, ITEM_BLOCK)):
            hi = min(n, lo + ITEM_BLOCK)
            m = hi - lo
            rng = _rng(p.seed, _STREAM_ITEM_FEATURES, b)
            pic = items.is_picture[lo:hi]
            author_idx = np.floor(n_authors * rng.random(m) ** 2).astype(np.int64)
            author_id = 100_000 + (author_idx * 2_654_435_761) % 8_700_000
            video_type = np.where(rng.random(m) < 0.01, "AD", "NORMAL")
            upload_days = rng.integers(1, 31, size=m)
            upload_dt = upload_dates[upload_days]
            upload_type = np.array(_UPLOAD_TYPES)[_choice(rng, _UPLOAD_SHARES, m)]
            upload_type = np.where(pic, np.array(_PICTURE_TYPES)[rng.integers(0, 2, size=m)], upload_type)
            duration = np.where(pic, np.nan, items.duration_ms[lo:hi].astype(np.float64))
            screen = np.array(_SCREENS)[_choice(rng, _SCREEN_SHARES, m)]
            has_music = rng.random(m) >= 0.027
            music_id = np.where(has_music, rng.integers(1_000_000_000, 9_999_999_999, size=m), 0)
            music_type = np.where(has_music, np.where(rng.random(m) < 0.9, 9.0, 4.0), np.nan)
            topic = np.asarray(_TOPIC_TAGS)[np.argmax(items.taste[lo:hi], axis=1) % len(_TOPIC_TAGS)]
            second = rng.integers(1, 69, size=m)
            has_second = rng.random(m) < 0.24
            no_tag = rng.random(m) < 0.013
            tag = np.where(has_second, [f"{a},{c}" for a, c in zip(topic, second)], topic.astype(str))
            tag = np.where(no_tag, "", tag)
            frame = pd.DataFrame(
                {
                    "video_id": np.arange(lo, hi, dtype=np.int64),
                    "author_id": author_id,
                    "video_type": video_type,
                    "upload_dt": upload_dt,
                    "upload_type": upload_type,
                    "visible_status": np.zeros(m),
                    "video_duration": duration,
                    "server_width": screen[:, 0],
                    "server_height": screen[:, 1],
                    "music_id": music_id.astype(np.int64),
                    "music_type": music_type,
                    "tag": tag,
                },
                columns=list(VIDEO_COLUMNS),
            )
            frame.to_csv(f, header=first, index=False, lineterminator="\n")
            first = False


# --------------------------------------------------------------------------------------------
# User attributes
# --------------------------------------------------------------------------------------------

_DEGREES = (  # lowest activity first, with KuaiRand-Pure shares
    ("UNKNOWN", 0.0002), ("day_new", 0.0004), ("30day_retention", 0.00055),
    ("single_low_active", 0.0025), ("low_active", 0.011), ("2_14_day_new", 0.0233),
    ("middle_active", 0.0782), ("high_active", 0.2257), ("full_active", 0.65825),
)  # fmt: skip
_DEGREE_Z = np.array([statistics.NormalDist().inv_cdf(c) for c in np.cumsum([s for _, s in _DEGREES])[:-1]])
_NEW_DEGREES = {"day_new", "2_14_day_new", "30day_retention"}
_FOLLOW_EDGES = [0, 10, 50, 100, 150, 250, 500]
_FOLLOW_LABELS = ["0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+"]
_FANS_EDGES = [1, 10, 100, 1_000, 5_000, 10_000, 100_000, 1_000_000]
_FANS_LABELS = ["0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)", "[5k,1w)", "[1w,10w)", "[10w,100w)", "[100w,1000w)"]
_FRIEND_EDGES = [1, 5, 30, 60, 120, 250]
_FRIEND_LABELS = ["0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+"]
_REGISTER_EDGES = [14, 30, 60, 90, 180, 365, 730]
_REGISTER_LABELS = ["8-14", "15-30", "31-60", "61-90", "91-180", "181-365", "366-730", "730+"]
#: onehot_feat0..17: (number of categories, shares, written as float, share missing). Shares are
#: Zipf-like (a float: exponent over categories 0, 1, ...) or, for binary features, P(value 1).
_ONEHOT = (
    (2, 0.563, False, 0.0), (7, 0.6, False, 0.0), (50, 1.2, False, 0.0), (1471, 1.0, False, 0.0),
    (15, 1.2, True, 0.032), (34, 3.5, False, 0.0), (3, 2.0, False, 0.0), (118, 1.0, False, 0.0),
    (454, 0.8, False, 0.0), (7, 0.5, False, 0.0), (5, 1.0, False, 0.0), (5, 2.5, False, 0.0),
    (2, 0.72, True, 0.026), (2, 0.068, True, 0.026), (2, 0.119, True, 0.026), (2, 0.023, True, 0.026),
    (2, 0.04, True, 0.026), (2, 0.0145, True, 0.026),
)  # fmt: skip


def _lognormal_int(rng: np.random.Generator, median: float, sigma: float, size: int, cap: int) -> np.ndarray:
    return np.minimum(np.floor(median * np.exp(sigma * rng.standard_normal(size))), cap).astype(np.int64)


def _user_feature_frame(p: GeneratorParams, block: int, lo: int, hi: int, z: np.ndarray) -> pd.DataFrame:
    m = hi - lo
    rng = _rng(p.seed, _STREAM_USER_FEATURES, block)
    degree_names = np.array([d for d, _ in _DEGREES])
    degree = degree_names[np.searchsorted(_DEGREE_Z, z[lo:hi], side="right")]
    follow = _lognormal_int(rng, 155.0, 1.5, m, 5_000)
    fans = _lognormal_int(rng, 48.0, 2.0, m, 9_999_999)
    friend = np.where(rng.random(m) < 0.12, 0, _lognormal_int(rng, 16.0, 1.8, m, 5_000))
    register = np.clip(_lognormal_int(rng, 1_100.0, 0.6, m, 3_650), 8, 3_650)
    is_new = np.isin(degree, list(_NEW_DEGREES))
    register = np.where(is_new, rng.integers(8, 31, size=m), register)
    cols: dict[str, object] = {
        "user_id": np.arange(lo, hi, dtype=np.int64),
        "user_active_degree": degree,
        "is_lowactive_period": np.zeros(m, dtype=np.int64),
        "is_live_streamer": np.where(rng.random(m) < 0.226, 1, -124),
        "is_video_author": (rng.random(m) < 0.816).astype(np.int64),
        "follow_user_num": follow,
        "follow_user_num_range": np.array(_FOLLOW_LABELS)[np.searchsorted(_FOLLOW_EDGES, follow, side="left")],
        "fans_user_num": fans,
        "fans_user_num_range": np.array(_FANS_LABELS)[np.searchsorted(_FANS_EDGES, fans, side="right")],
        "friend_user_num": friend,
        "friend_user_num_range": np.array(_FRIEND_LABELS)[np.searchsorted(_FRIEND_EDGES, friend, side="right")],
        "register_days": register,
        "register_days_range": np.array(_REGISTER_LABELS)[np.searchsorted(_REGISTER_EDGES, register, side="left")],
    }
    for i, (k, a, as_float, missing) in enumerate(_ONEHOT):
        if k == 2:
            values = (rng.random(m) < a).astype(np.float64)
        else:
            values = _choice(rng, np.arange(1, k + 1, dtype=np.float64) ** -a, m).astype(np.float64)
        if as_float:
            values = np.where(rng.random(m) < missing, np.nan, values)
            cols[f"onehot_feat{i}"] = values
        else:
            cols[f"onehot_feat{i}"] = values.astype(np.int64)
    return pd.DataFrame(cols, columns=list(USER_COLUMNS))


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


@dataclass
class _Window:
    start_ms: int
    length_ms: int
    hour_cdf: np.ndarray  # CDF of session starts over the window's UTC hours
    local_day0: int  # days since epoch of the first Beijing date that can occur
    local_yyyymmdd: np.ndarray  # int64 yyyymmdd by Beijing day index from local_day0


def _make_window(p: GeneratorParams) -> _Window:
    start = dt.datetime(p.start_date.year, p.start_date.month, p.start_date.day, tzinfo=dt.timezone.utc)
    start_ms = int(start.timestamp()) * 1000
    hours = np.arange(p.days * 24)
    w = np.asarray(p.hourly_activity, dtype=np.float64)[(hours + LOCAL_OFFSET_MS // HOUR_MS) % 24]
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    day0 = start_ms // DAY_MS
    dates = [dt.date(1970, 1, 1) + dt.timedelta(days=day0 + i) for i in range(p.days + 2)]
    yyyymmdd = np.array([d.year * 10_000 + d.month * 100 + d.day for d in dates], dtype=np.int64)
    return _Window(start_ms, p.days * DAY_MS, cdf, day0, yyyymmdd)


def _warp(window: _Window, u: np.ndarray) -> np.ndarray:
    """Map uniforms in [0, 1) to ms offsets in [0, window) following the hourly profile."""
    cdf = window.hour_cdf
    k = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    lo = np.where(k > 0, cdf[k - 1], 0.0)
    width = cdf[k] - lo
    frac = np.where(width > 0, (u - lo) / np.where(width > 0, width, 1.0), 0.0)
    return (k + np.clip(frac, 0.0, 1.0)) * HOUR_MS


def _lognormal(rng: np.random.Generator, median: float, sigma: float, size: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(size))


def _simulate_batch(
    p: GeneratorParams,
    rng: np.random.Generator,
    items: _Items,
    window: _Window,
    user_lo: int,
    counts: np.ndarray,
    taste: np.ndarray,
    bias: np.ndarray,
) -> dict[str, np.ndarray]:
    """Events of users ``user_lo .. user_lo + len(counts)``, sorted by (time_ms, user_id)."""
    n = int(counts.sum())
    nu = len(counts)
    u_local = np.repeat(np.arange(nu), counts)
    user_start = np.cumsum(counts) - counts  # first event index per user (if any)
    active = counts > 0

    # -- exposure and latent interest
    item = np.minimum(np.searchsorted(items.cdf, rng.random(n), side="right"), len(items.cdf) - 1)
    # taste match summed dimension by dimension: plain IEEE products and sums, the same on every
    # CPU (a SIMD dot product could sum in another order)
    match = np.zeros(n)
    for j in range(p.taste_dim):
        match += taste[u_local, j].astype(np.float64) * items.taste[item, j]
    logit = p.interest_intercept + bias[u_local] + items.quality[item] + p.taste_scale * match / math.sqrt(p.taste_dim)
    logit = np.clip(logit, -LOGIT_BOUND, LOGIT_BOUND)
    # float32 precision: exp may differ in the last bit between CPUs' SIMD code paths; rounding
    # makes such a difference show in the stored interest only with probability ~1e-9 per value
    interest = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32).astype(np.float64)

    # -- play time
    dur_ms = items.duration_ms[item]
    noisy = rng.random(n) < p.noisy_play_share
    zero = rng.random(n) < p.noisy_zero_share
    noisy_ms = np.rint(_lognormal(rng, p.noisy_play_median_s, p.noisy_play_sigma, n) * 1000.0).astype(np.int64)
    noisy_ms = np.minimum(np.where(zero, 0, noisy_ms), dur_ms)
    watch_s = (
        p.watch_scale_s
        * (dur_ms / 60_000.0) ** p.duration_exponent
        * np.exp(p.interest_exponent * logit)
        * np.exp(p.watch_sigma * rng.standard_normal(n))
    )
    intended_ms = np.rint(np.minimum(watch_s, 1e7) * 1000.0).astype(np.int64)
    complete = intended_ms >= dur_ms
    replay_prob = p.replay_prob_min + (p.replay_prob_max - p.replay_prob_min) * interest
    replay = complete & (rng.random(n) < replay_prob)
    loops = np.minimum(rng.exponential(p.replay_extra_mean, n), MAX_EXTRA_LOOPS)
    extra_ms = np.maximum(1, np.rint(dur_ms * loops)).astype(np.int64)
    engaged_ms = np.where(complete, dur_ms + np.where(replay, extra_ms, 0), intended_ms)
    play_ms = np.where(noisy, noisy_ms, engaged_ms)
    is_complete = play_ms >= dur_ms
    is_replay = play_ms > dur_ms

    # -- feedback flags
    engaged = ~noisy
    engaged_click = p.click_prob_min + (p.click_prob_max - p.click_prob_min) * interest
    click_prob = np.where(noisy, p.click_prob_noisy, engaged_click)
    sq = interest * interest
    is_click = rng.random(n) < click_prob
    is_like = engaged & (rng.random(n) < p.like_rate * sq)
    is_follow = engaged & (rng.random(n) < p.follow_rate * sq)
    is_comment = engaged & (rng.random(n) < p.comment_rate * sq)
    is_forward = engaged & (rng.random(n) < p.forward_rate * sq)
    is_profile_enter = engaged & (rng.random(n) < p.profile_enter_rate * sq)
    is_hate = rng.random(n) < p.hate_rate * (1.0 - interest) ** 2
    views_comments = is_comment | (engaged & (rng.random(n) < p.comment_view_rate * interest))
    stay_ms = np.clip(np.rint(_lognormal(rng, p.comment_stay_median_s, 1.0, n) * 1000.0), 100, 300_000)
    comment_stay_ms = np.where(views_comments, stay_ms, 0).astype(np.int64)

    # -- sessions and time
    think_ms = np.rint(_lognormal(rng, p.think_time_median_s, p.think_time_sigma, n) * 1000.0).astype(np.int64)
    new_session = rng.random(n) < 1.0 / p.session_length_mean
    new_session[user_start[active]] = True
    sess_id = np.cumsum(new_session) - 1
    sess_first = np.flatnonzero(new_session)
    n_sess = len(sess_first)
    sess_user = u_local[sess_first]
    user_first_sess = np.zeros(nu, dtype=np.int64)
    user_first_sess[active] = sess_id[user_start[active]]
    session_index = sess_id - user_first_sess[u_local]
    # offsets within a session: each impression follows the previous play plus a think time
    step = play_ms + think_ms
    before = np.cumsum(step) - step
    offset_ms = before - before[sess_first][sess_id]
    sess_last = np.append(sess_first[1:], n) - 1
    sess_dur = offset_ms[sess_last] + play_ms[sess_last]
    gap_ms = int(round(p.session_min_gap_s * 1000.0))
    slot = (sess_dur + gap_ms).astype(np.float64)
    busy = np.bincount(sess_user, weights=slot, minlength=nu)
    limit = MAX_BUSY_FRACTION * window.length_ms
    factor = np.where(busy > limit, limit / np.maximum(busy, 1.0), 1.0)
    slot_scaled = np.floor(slot * factor[sess_user]).astype(np.int64)
    busy_scaled = np.bincount(sess_user, weights=slot_scaled, minlength=nu)
    slot_before = np.cumsum(slot_scaled) - slot_scaled
    sess_lead = slot_before - slot_before[user_first_sess[sess_user]]
    # session starts: order statistics of hour-profile-warped uniforms, spaced by the earlier slots
    u = rng.random(n_sess)
    u_sorted = u[np.lexsort((u, sess_user))]
    free = (window.length_ms - busy_scaled[sess_user]) / window.length_ms
    sess_start = np.floor(_warp(window, u_sorted) * free).astype(np.int64) + sess_lead
    tab = _choice(rng, p.tab_shares, n_sess)
    t_rel = sess_start[sess_id] + np.floor(offset_ms * factor[u_local]).astype(np.int64)
    t_rel = np.clip(t_rel, 0, window.length_ms - 1)
    time_ms = window.start_ms + t_rel

    local = time_ms + LOCAL_OFFSET_MS
    date = window.local_yyyymmdd[local // DAY_MS - window.local_day0]
    hourmin = ((local % DAY_MS) // HOUR_MS) * 100

    logged_dur = np.where(items.is_picture[item], 0, dur_ms)
    long_view = np.where(logged_dur > 0, play_ms >= np.minimum(logged_dur, 18_000), play_ms >= 18_000)

    user_id = user_lo + u_local
    order = np.lexsort((user_id, time_ms))
    i8 = np.int8
    cols = {
        "user_id": user_id.astype(np.int64),
        "video_id": item.astype(np.int64),
        "date": date,
        "hourmin": hourmin,
        "time_ms": time_ms,
        "is_click": is_click.astype(i8),
        "is_like": is_like.astype(i8),
        "is_follow": is_follow.astype(i8),
        "is_comment": is_comment.astype(i8),
        "is_forward": is_forward.astype(i8),
        "is_hate": is_hate.astype(i8),
        "long_view": long_view.astype(i8),
        "play_time_ms": play_ms,
        "duration_ms": logged_dur,
        "profile_stay_time": np.zeros(n, dtype=np.int64),
        "comment_stay_time": comment_stay_ms,
        "is_profile_enter": is_profile_enter.astype(i8),
        "is_rand": np.zeros(n, dtype=i8),
        "tab": tab[sess_id].astype(i8),
        # truth
        "interest": interest,
        "is_noisy_play": noisy,
        "is_complete": is_complete,
        "is_replay": is_replay,
        "session_index": session_index.astype(np.int64),
    }
    return {k: v[order] for k, v in cols.items()}


def _batches(counts: np.ndarray) -> list[tuple[int, int]]:
    """Cut consecutive users into [lo, hi) ranges of at most BATCH_EVENTS events (or one user)."""
    out = []
    cum = np.concatenate([[0], np.cumsum(counts)])
    lo = 0
    while lo < len(counts):
        hi = int(np.searchsorted(cum, cum[lo] + BATCH_EVENTS, side="right")) - 1
        hi = max(hi, lo + 1)
        out.append((lo, hi))
        lo = hi
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

_LOG_SCHEMA = pa.schema(
    [pa.field(c, pa.int8() if c.startswith("is_") or c in ("long_view", "tab") else pa.int64()) for c in LOG_COLUMNS]
)
_CSV_OPTIONS = pcsv.WriteOptions(include_header=False, quoting_style="none")


class _Writers:
    """Open day files, the truth writer and their temporary names (replaced at the end)."""

    def __init__(self, root: Path, p: GeneratorParams, window: _Window) -> None:
        self.root = root
        self.window = window
        days = [p.start_date + dt.timedelta(days=d) for d in range(p.days)]
        self.day_names = [LOG_FILE_PATTERN.format(yyyymmdd=day.strftime("%Y%m%d")) for day in days]
        self.lines = np.zeros(p.days, dtype=np.int64)
        self.temps: list[tuple[Path, Path]] = []  # (temporary, final)
        self.sinks: list[pa.NativeFile] = []
        self.csv: list[pcsv.CSVWriter] = []
        self.truth: pq.ParquetWriter | None = None
        self.truth_buffer: list[pa.Table] = []
        self.truth_buffered = 0
        self.source_names = pa.array(self.day_names, pa.string())
        try:
            header = (",".join(LOG_COLUMNS) + "\n").encode()
            for name in self.day_names:
                sink = pa.OSFile(str(self._temp(root / name)), "wb")
                self.sinks.append(sink)
                sink.write(header)
                self.csv.append(pcsv.CSVWriter(sink, _LOG_SCHEMA, write_options=_CSV_OPTIONS))
            (root / TRUTH_DIR).mkdir(exist_ok=True)
            truth_tmp = self._temp(root / TRUTH_DIR / TRUTH_FILE)
            self.truth = pq.ParquetWriter(str(truth_tmp), RAW_TRUTH_SCHEMA, compression="zstd")
        except BaseException:
            self.abort()
            raise

    def _temp(self, final: Path) -> Path:
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        self.temps.append((tmp, final))
        return tmp

    def write(self, parts: list[dict[str, np.ndarray]]) -> None:
        if not parts:
            return
        day = (np.concatenate([part["time_ms"] for part in parts]) - self.window.start_ms) // DAY_MS
        order = np.argsort(day, kind="stable")
        day = day[order]
        cols = {}
        for k in list(parts[0]):  # one column at a time: at most one extra copy alive
            cols[k] = np.concatenate([part.pop(k) for part in parts])[order]
        n_day = np.bincount(day, minlength=len(self.day_names))
        first_of_day = np.cumsum(n_day) - n_day
        line = self.lines[day] + 1 + (np.arange(len(day)) - first_of_day[day])
        self.lines += n_day
        log = pa.Table.from_arrays([pa.array(cols[c]) for c in LOG_COLUMNS], schema=_LOG_SCHEMA)
        for d in np.flatnonzero(n_day):
            self.csv[d].write_table(log.slice(int(first_of_day[d]), int(n_day[d])))
        truth = pa.Table.from_arrays(
            [
                self.source_names.take(pa.array(day)),
                pa.array(line),
                pc.cast(pa.array(cols["user_id"]), pa.string()),
                pc.cast(pa.array(cols["video_id"]), pa.string()),
                pa.array(cols["interest"]),
                pa.array(cols["is_noisy_play"]),
                pa.array(cols["is_complete"]),
                pa.array(cols["is_replay"]),
                pa.array(cols["session_index"]),
            ],
            schema=RAW_TRUTH_SCHEMA,
        )
        self.truth_buffer.append(truth)
        self.truth_buffered += truth.num_rows
        self._flush_truth(final=False)

    def _flush_truth(self, final: bool) -> None:
        if not self.truth_buffer or (not final and self.truth_buffered < TRUTH_ROW_GROUP_ROWS):
            return
        table = pa.concat_tables(self.truth_buffer)
        start = 0
        while table.num_rows - start >= TRUTH_ROW_GROUP_ROWS:
            # contiguous arrays: page boundaries must not depend on how rows were chunked
            group = table.slice(start, TRUTH_ROW_GROUP_ROWS).combine_chunks()
            self.truth.write_table(group, row_group_size=TRUTH_ROW_GROUP_ROWS)
            start += TRUTH_ROW_GROUP_ROWS
        rest = table.slice(start)
        if final and rest.num_rows:
            self.truth.write_table(rest.combine_chunks(), row_group_size=TRUTH_ROW_GROUP_ROWS)
            rest = rest.slice(0, 0)
        self.truth_buffer = [rest] if rest.num_rows else []
        self.truth_buffered = rest.num_rows

    def close(self) -> None:
        self._flush_truth(final=True)
        assert self.truth is not None
        self.truth.close()
        for w, s in zip(self.csv, self.sinks):
            w.close()
            s.close()

    def abort(self) -> None:
        for obj in [self.truth, *self.csv, *self.sinks]:
            try:
                if obj is not None:
                    obj.close()
            except Exception:  # noqa: BLE001 - best effort while failing
                pass
        for tmp, _ in self.temps:
            tmp.unlink(missing_ok=True)


def generate(out_dir: str | Path, params: GeneratorParams, *, users_per_chunk: int = 10_000) -> GeneratedSource:
    """Write the synthetic source for ``params`` into ``out_dir`` (created if missing).

    Files are written under temporary names and moved into place at the end; log files of an
    earlier run that the new window does not have are removed. ``users_per_chunk`` only sets how
    many users' events are buffered before they are written (memory, not output).
    """
    if not _integer(users_per_chunk) or users_per_chunk < 1:
        raise ValueError(f"users_per_chunk: must be a positive integer (got {users_per_chunk!r})")
    p = params
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    window = _make_window(p)
    z, counts = _user_counts(p)
    items = _make_items(p)

    writers = _Writers(root, p, window)
    user_tmp = writers._temp(root / USER_FILE)
    item_tmp = writers._temp(root / ITEM_FILE)
    try:
        _write_video_features(item_tmp, p, items)
        pending: list[dict[str, np.ndarray]] = []
        pending_users = pending_events = 0
        with open(user_tmp, "w", newline="", encoding="utf-8") as user_file:
            for block, lo in enumerate(range(0, p.n_users, USER_BLOCK)):
                hi = min(p.n_users, lo + USER_BLOCK)
                _user_feature_frame(p, block, lo, hi, z).to_csv(
                    user_file, header=(block == 0), index=False, lineterminator="\n"
                )
                rng = _rng(p.seed, _STREAM_EVENTS, block)
                taste = rng.standard_normal((hi - lo, p.taste_dim)).astype(np.float32)
                bias = p.user_bias_sd * rng.standard_normal(hi - lo)
                block_counts = counts[lo:hi]
                for b_lo, b_hi in _batches(block_counts):
                    if block_counts[b_lo:b_hi].sum() == 0:
                        continue
                    pending.append(
                        _simulate_batch(
                            p, rng, items, window, lo + b_lo, block_counts[b_lo:b_hi],
                            taste[b_lo:b_hi], bias[b_lo:b_hi],
                        )  # fmt: skip
                    )
                    pending_users += b_hi - b_lo
                    pending_events += int(block_counts[b_lo:b_hi].sum())
                    if pending_users >= users_per_chunk or pending_events >= 2 * BATCH_EVENTS:
                        writers.write(pending)
                        pending, pending_users, pending_events = [], 0, 0
            writers.write(pending)
        writers.close()
    except BaseException:
        writers.abort()
        raise
    for tmp, final in writers.temps:
        os.replace(tmp, final)
    keep = set(writers.day_names)
    for old in root.iterdir():
        if LOG_FILE_RE.match(old.name) and old.name not in keep:
            old.unlink()
    return GeneratedSource(
        root=root,
        log_files=[root / name for name in writers.day_names],
        user_file=root / USER_FILE,
        item_file=root / ITEM_FILE,
        truth_file=root / TRUTH_DIR / TRUTH_FILE,
        events=int(counts.sum()),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.synthetic OUT_DIR [--events N] [--seed S] [--days D] ...``"""
    ap = argparse.ArgumentParser(prog="python -m pipelines.synthetic", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    defaults = GeneratorParams()
    for name in ("events", "users", "items", "seed", "days"):
        ap.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    ap.add_argument("--start-date", type=dt.date.fromisoformat, default=defaults.start_date)
    args = ap.parse_args(argv)
    try:
        params = GeneratorParams(
            events=args.events, users=args.users, items=args.items, seed=args.seed, days=args.days,
            start_date=args.start_date,
        )  # fmt: skip
    except ValueError as err:
        ap.error(str(err))
    out = generate(args.out_dir, params)
    print(f"wrote {out.events} events into {out.root} ({len(out.log_files)} log files)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
