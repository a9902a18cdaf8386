"""The synthetic generator's file formats, fixed constants and simulated-model parameters.

The size and window of a source (events, users, items, seed, start date, days) are the project
settings' :class:`pipelines.settings.SyntheticSettings`; :class:`SimulationModel` holds the
parameters of the simulated behaviour (``docs/synthetic.md``), whose defaults are the model.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.sections import SyntheticSettings

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


def n_users(s: SyntheticSettings) -> int:
    """Number of users: ``s.users`` or its default ``max(10, events // 50)``."""
    return s.users if s.users is not None else max(10, s.events // 50)


def n_items(s: SyntheticSettings) -> int:
    """Number of videos: ``s.items`` or its default ``max(10, events // 100)``."""
    return s.items if s.items is not None else max(10, s.events // 100)


def check_size(s: SyntheticSettings) -> None:
    """The checks across the size fields that the settings model leaves to the generator.

    Raises ``ValueError`` whose message starts with the field name.
    """
    if not isinstance(s, SyntheticSettings):
        raise TypeError(f"expected pipelines.settings.SyntheticSettings, got {type(s).__name__}")

    def fail(name: str, why: str) -> None:
        raise ValueError(f"{name}: {why} (got {getattr(s, name)!r})")

    for name in ("users", "items"):
        v = getattr(s, name)
        if v is not None and v > s.events:
            fail(name, "must be at most events")
    if n_users(s) * MAX_MEAN_EVENTS_PER_USER < s.events:
        fail("users", f"too few users: events / users may be at most {MAX_MEAN_EVENTS_PER_USER}")
    if s.seed < 0:
        fail("seed", "must be a non-negative integer")


@dataclass(frozen=True)
class SimulationModel:
    """Every parameter of the simulated behaviour, with its default (``docs/synthetic.md``).

    Invalid values raise ``ValueError`` whose message starts with the field name.
    """

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
