"""The synthetic source's event simulation: exposure, interest, plays, feedback, sessions and time."""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from features.timeutil import day_range, to_micros
from pipelines.sections import SyntheticSettings
from pipelines.synthetic.attributes import _choice, _Items
from pipelines.synthetic.model import (
    BATCH_EVENTS,
    DAY_MS,
    HOUR_MS,
    LOCAL_OFFSET_MS,
    LOGIT_BOUND,
    MAX_BUSY_FRACTION,
    MAX_EXTRA_LOOPS,
    SimulationModel,
)


@dataclass
class _Window:
    start_ms: int
    length_ms: int
    hour_cdf: np.ndarray  # CDF of session starts over the window's UTC hours
    local_day0: int  # days since epoch of the first Beijing date that can occur
    local_yyyymmdd: np.ndarray  # int64 yyyymmdd by Beijing day index from local_day0


def _make_window(s: SyntheticSettings, model: SimulationModel) -> _Window:
    start_ms = to_micros(s.start_date) // 1000
    hours = np.arange(s.days * 24)
    w = np.asarray(model.hourly_activity, dtype=np.float64)[(hours + LOCAL_OFFSET_MS // HOUR_MS) % 24]
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    day0 = start_ms // DAY_MS
    first = dt.date(1970, 1, 1) + dt.timedelta(days=day0)
    dates = day_range(first, first + dt.timedelta(days=s.days + 2))
    yyyymmdd = np.array([d.year * 10_000 + d.month * 100 + d.day for d in dates], dtype=np.int64)
    return _Window(start_ms, s.days * DAY_MS, cdf, day0, yyyymmdd)


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
    model: SimulationModel,
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
    for j in range(model.taste_dim):
        match += taste[u_local, j].astype(np.float64) * items.taste[item, j]
    logit = model.interest_intercept + bias[u_local] + items.quality[item] + model.taste_scale * match / math.sqrt(model.taste_dim)
    logit = np.clip(logit, -LOGIT_BOUND, LOGIT_BOUND)
    # float32 precision: exp may differ in the last bit between CPUs' SIMD code paths; rounding
    # makes such a difference show in the stored interest only with probability ~1e-9 per value
    interest = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32).astype(np.float64)

    # -- play time
    dur_ms = items.duration_ms[item]
    noisy = rng.random(n) < model.noisy_play_share
    zero = rng.random(n) < model.noisy_zero_share
    noisy_ms = np.rint(_lognormal(rng, model.noisy_play_median_s, model.noisy_play_sigma, n) * 1000.0).astype(np.int64)
    noisy_ms = np.minimum(np.where(zero, 0, noisy_ms), dur_ms)
    watch_s = (
        model.watch_scale_s
        * (dur_ms / 60_000.0) ** model.duration_exponent
        * np.exp(model.interest_exponent * logit)
        * np.exp(model.watch_sigma * rng.standard_normal(n))
    )
    intended_ms = np.rint(np.minimum(watch_s, 1e7) * 1000.0).astype(np.int64)
    complete = intended_ms >= dur_ms
    replay_prob = model.replay_prob_min + (model.replay_prob_max - model.replay_prob_min) * interest
    replay = complete & (rng.random(n) < replay_prob)
    loops = np.minimum(rng.exponential(model.replay_extra_mean, n), MAX_EXTRA_LOOPS)
    extra_ms = np.maximum(1, np.rint(dur_ms * loops)).astype(np.int64)
    engaged_ms = np.where(complete, dur_ms + np.where(replay, extra_ms, 0), intended_ms)
    play_ms = np.where(noisy, noisy_ms, engaged_ms)
    is_complete = play_ms >= dur_ms
    is_replay = play_ms > dur_ms

    # -- feedback flags
    engaged = ~noisy
    engaged_click = model.click_prob_min + (model.click_prob_max - model.click_prob_min) * interest
    click_prob = np.where(noisy, model.click_prob_noisy, engaged_click)
    sq = interest * interest
    is_click = rng.random(n) < click_prob
    is_like = engaged & (rng.random(n) < model.like_rate * sq)
    is_follow = engaged & (rng.random(n) < model.follow_rate * sq)
    is_comment = engaged & (rng.random(n) < model.comment_rate * sq)
    is_forward = engaged & (rng.random(n) < model.forward_rate * sq)
    is_profile_enter = engaged & (rng.random(n) < model.profile_enter_rate * sq)
    is_hate = rng.random(n) < model.hate_rate * (1.0 - interest) ** 2
    views_comments = is_comment | (engaged & (rng.random(n) < model.comment_view_rate * interest))
    stay_ms = np.clip(np.rint(_lognormal(rng, model.comment_stay_median_s, 1.0, n) * 1000.0), 100, 300_000)
    comment_stay_ms = np.where(views_comments, stay_ms, 0).astype(np.int64)

    # -- sessions and time
    think_ms = np.rint(_lognormal(rng, model.think_time_median_s, model.think_time_sigma, n) * 1000.0).astype(np.int64)
    new_session = rng.random(n) < 1.0 / model.session_length_mean
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
    gap_ms = int(round(model.session_min_gap_s * 1000.0))
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
    tab = _choice(rng, model.tab_shares, n_sess)
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
