"""The synthetic source's random streams, per-user event counts, videos and user attributes."""
from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.sections import SyntheticSettings
from pipelines.synthetic.model import (
    ITEM_BLOCK,
    MAX_EVENTS_PER_USER,
    USER_COLUMNS,
    VIDEO_COLUMNS,
    _STREAM_COUNTS,
    _STREAM_ITEM_FEATURES,
    _STREAM_ITEMS,
    _STREAM_USER_FEATURES,
    SimulationModel,
    n_items,
    n_users,
)


def _rng(seed: int, stream: int, block: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, block))))


def _user_counts(s: SyntheticSettings, model: SimulationModel) -> tuple[np.ndarray, np.ndarray]:
    """Per-user activity z-scores and event counts (multinomial; total exactly ``events``)."""
    rng = _rng(s.seed, _STREAM_COUNTS)
    z = rng.standard_normal(n_users(s))
    w = np.exp(model.activity_sigma * (z - z.max()))
    probs = w / w.sum()
    counts = rng.multinomial(s.events, probs)
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


def _make_items(s: SyntheticSettings, model: SimulationModel) -> _Items:
    n, k = n_items(s), model.taste_dim
    weight = np.empty(n)
    duration_ms = np.empty(n, dtype=np.int64)
    is_picture = np.empty(n, dtype=bool)
    quality = np.empty(n)
    taste = np.empty((n, k), dtype=np.float32)
    for b, lo in enumerate(range(0, n, ITEM_BLOCK)):
        hi = min(n, lo + ITEM_BLOCK)
        m = hi - lo
        rng = _rng(s.seed, _STREAM_ITEMS, b)
        # Pareto weights u**-s: the rank-frequency curve of exposure is Zipf with exponent s.
        weight[lo:hi] = (1.0 - rng.random(m)) ** (-model.popularity_exponent)
        dur_s = np.exp(math.log(model.duration_median_s) + model.duration_sigma * rng.standard_normal(m))
        duration_ms[lo:hi] = np.rint(np.clip(dur_s, model.duration_min_s, model.duration_max_s) * 1000.0)
        is_picture[lo:hi] = rng.random(m) < model.zero_duration_share
        quality[lo:hi] = model.item_quality_sd * rng.standard_normal(m)
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


def _write_video_features(path: Path, s: SyntheticSettings, items: _Items) -> None:
    n = n_items(s)
    n_authors = max(10, int(0.85 * n))
    upload_dates = np.array([(s.start_date - dt.timedelta(days=d)).isoformat() for d in range(31)])
    first = True
    with open(path, "w", newline="", encoding="utf-8") as f:
        for b, lo in enumerate(range(0, n, ITEM_BLOCK)):
            hi = min(n, lo + ITEM_BLOCK)
            m = hi - lo
            rng = _rng(s.seed, _STREAM_ITEM_FEATURES, b)
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


def _user_feature_frame(s: SyntheticSettings, block: int, lo: int, hi: int, z: np.ndarray) -> pd.DataFrame:
    m = hi - lo
    rng = _rng(s.seed, _STREAM_USER_FEATURES, block)
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


