"""Small, consistent ``watch_time_labels`` / ``duration_stats`` / ``items`` / ``users`` tables for
trainer tests, computed with ``features.labels.math`` from a planted interest."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from features.labels import math as lm
from features.dimensions import ITEMS, USERS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS

START = dt.date(2022, 4, 25)


def make_rows(days=14, users=40, items=60, per_user_day=5, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=users)
    quality = rng.normal(size=items)
    item_d = rng.integers(5, 40, items)
    recs = []
    for day in range(days):
        for u in range(users):
            for i in rng.choice(items, per_user_day, replace=False):
                interest = 1 / (1 + np.exp(-(taste[u] + 1.5 * quality[i])))
                d = int(item_d[i])
                noisy = rng.random() < 0.3
                w = rng.integers(0, 4) if noisy else int(round(min(d, d * interest * rng.uniform(0.6, 1.6))))
                ts = pd.Timestamp(START + dt.timedelta(days=day), tz="UTC") + pd.Timedelta(seconds=int(rng.integers(0, 86_000)))
                recs.append((f"u{u}", f"i{i}", ts, d, int(w), interest))
    df = pd.DataFrame(recs, columns=["user_id", "item_id", "event_ts", "duration_s", "watch_time_s", "interest"])
    df["event_id"] = [f"e{k:06d}" for k in range(len(df))]
    df["event_date"] = df["event_ts"].dt.date
    df["play_time_ms"] = df["watch_time_s"] * 1000
    return df


def write_tables(warehouse, days=14, train_days=9, valid_days=2, seed=0, users=40, items=60) -> pd.DataFrame:
    df = make_rows(days, users, items, seed=seed)
    last = START + dt.timedelta(days=days - 1)
    fit_end = last + dt.timedelta(days=1) - dt.timedelta(days=days - train_days - valid_days) - dt.timedelta(days=valid_days)
    fit_start = fit_end - dt.timedelta(days=train_days)
    train = df[(df.event_date >= fit_start) & (df.event_date < fit_end)]
    durs = np.arange(5, 41)
    g = train.groupby("duration_s")["watch_time_s"]
    rows = g.size().reindex(durs, fill_value=0).to_numpy()
    mean = g.mean().reindex(durs).to_numpy()
    std = g.std().reindex(durs).to_numpy()
    lo = g.quantile(0.2).reindex(durs).to_numpy()
    hi = g.quantile(0.8).reindex(durs).to_numpy()
    q, _ = lm.smooth_and_fill(durs, lo, rows, 3)
    p, _ = lm.smooth_and_fill(durs, hi, rows, 3)
    edges = lm.d2q_bin_edges(durs, rows, 5)
    bins = lm.d2q_bin_of(durs, edges)
    tau = lm.watch_percentile(train["watch_time_s"].to_numpy(), np.ones(len(train)), 0.7)
    stats = pd.DataFrame(
        {
            "duration_s": durs, "rows": rows, "wt_mean_s": mean, "wt_std_s": std, "noise_wt_s": lo,
            "interest_wt_s": hi, "noise_wt_smoothed_s": q, "interest_wt_smoothed_s": p, "d2q_bin": bins.astype(np.int32),
            "fit_start": fit_start, "fit_end": fit_end, "fit_status": np.where(rows > 0, lm.FITTED, lm.NO_ROWS),
            "is_interpolated": rows == 0, "long_view_cwm_threshold_s": tau,
        }
    )
    warehouse.write_arrow(DURATION_STATS, pa.Table.from_pandas(stats, preserve_index=False))

    st = stats.set_index("duration_s")
    w, d = df["watch_time_s"].to_numpy(), df["duration_s"].to_numpy()
    df["is_complete"] = w >= d
    df["is_in_fit_window"] = (df.event_date >= fit_start) & (df.event_date < fit_end)
    df["pcr"] = lm.pcr(w, d)
    df["wtg_gain"] = lm.wtg_gain(w, st["wt_mean_s"].reindex(d).to_numpy(), st["wt_std_s"].reindex(d).to_numpy())
    df["wtg"] = lm.normal_cdf(df["wtg_gain"])
    df["d2q_bin"] = st["d2q_bin"].reindex(d).to_numpy().astype(np.int32)
    tb = train.assign(b=st["d2q_bin"].reindex(train["duration_s"]).to_numpy())
    agg = tb.groupby(["b", "watch_time_s"]).size().reset_index(name="n")
    table = lm.d2q_rank_table(agg["b"], agg["watch_time_s"], agg["n"])
    df["d2q"], df["d2q_dense"] = lm.d2q_lookup(table, df["d2q_bin"], w)
    df["d2co"] = lm.d2co(w, st["interest_wt_smoothed_s"].reindex(d).to_numpy(), st["noise_wt_smoothed_s"].reindex(d).to_numpy())
    df["cwm_target"] = lm.cwm_target(w)
    df["is_censored"] = w >= d
    df["is_long_view_d2co"] = lm.long_view_d2co(w, d)
    df["is_long_view_cwm"] = lm.long_view_cwm(w, d, df["play_time_ms"], d * 1000, tau)
    warehouse.write_arrow(WATCH_TIME_LABELS, pa.Table.from_pandas(df[WATCH_TIME_LABELS.columns], preserve_index=False))

    rng = np.random.default_rng(seed + 1)
    item_ids = [f"i{i}" for i in range(items)]
    warehouse.write_arrow(ITEMS, pa.table({
        "item_id": item_ids, "source": ["t"] * items,
        "author_id": [f"a{i % 7}" for i in range(items)], "music_id": [f"m{i % 5}" for i in range(items)],
        "tag": [f"{i % 3},{i % 4}" for i in range(items)], "video_type": ["NORMAL"] * items,
        "upload_type": [["Kmovie", "ShortImport"][i % 2] for i in range(items)],
    }))
    user_ids = [f"u{u}" for u in range(users)]
    ranges = ["[0,10)", "[10,100)", "100+"]
    warehouse.write_arrow(USERS, pa.table({
        "user_id": user_ids, "source": ["t"] * users,
        "user_active_degree": [["full_active", "high_active"][u % 2] for u in range(users)],
        "follow_user_num_range": [ranges[int(x)] for x in rng.integers(0, 3, users)],
        "fans_user_num_range": [ranges[int(x)] for x in rng.integers(0, 3, users)],
        "friend_user_num_range": [ranges[int(x)] for x in rng.integers(0, 3, users)],
        "register_days_range": [ranges[int(x)] for x in rng.integers(0, 3, users)],
    }))
    return df
