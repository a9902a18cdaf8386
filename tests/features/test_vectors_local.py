"""The local engine of ``user_vectors`` (features/lookalike/vectors_local.py) against the Spark
kernels: the same rows, vectors to float32 rounding; strings of categorical values as Spark casts them."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.columns import spark_strings
from features.events import TS_TYPE
from features.lookalike.kernels import VectorParams, build_user_vectors
from features.lookalike.vectors_local import NeedsSpark, build_user_vectors_local, choose_engine, unsupported_columns
from features.timeutil import as_utc

T0 = dt.datetime(2022, 4, 8, tzinfo=dt.timezone.utc)
CUTOFF = T0 + dt.timedelta(days=5)


def _events(n: int, seed: int, users: int = 80, items: int = 40) -> pa.Table:
    rng = np.random.default_rng(seed)
    click = rng.integers(0, 3, n)
    return pa.table({
        "user_id": pa.array([f"u{x:02d}" for x in rng.integers(0, users, n)]),
        "item_id": pa.array([f"i{x}" for x in rng.integers(0, items, n)]),
        "event_ts": pa.array([T0 + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 7 * 24 * 60, n)], TS_TYPE),
        "is_click": pa.array([None if c == 2 else bool(c) for c in click], pa.bool_()),
        "rating": pa.array([float(r) if c == 2 else None for r, c in zip(rng.integers(1, 6, n), click)], pa.float64()),
    })


def _users(n: int, seed: int) -> pa.Table:
    """Profile columns of every kind the encoder meets: ints, doubles with nulls, a constant, an
    all-null column, booleans, strings, integer and double category ids (KuaiRand's onehot_feat*)."""
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": pa.array([f"u{x:02d}" for x in range(n)]),  # some users have no event, some events no user
        "source": pa.array(["t"] * n),
        "age": pa.array(rng.integers(10, 70, n), pa.int64()),
        "score": pa.array([None if x < 0.2 else float(x * 1e4 - 3e3) for x in rng.random(n)], pa.float64()),
        "constant": pa.array([3.5] * n, pa.float64()),
        "empty": pa.array([None] * n, pa.float64()),
        "active": pa.array(rng.random(n) < 0.5, pa.bool_()),
        "gender": pa.array([["F", "M", None][x] for x in rng.integers(0, 3, n)], pa.string()),
        "onehot_feat1": pa.array(rng.integers(0, 9, n), pa.int32()),
        "onehot_feat2": pa.array([None if x == 0 else float(x) for x in rng.integers(0, 40, n)], pa.float64()),
        "zip_code": pa.array([f"{x:05d}" for x in rng.integers(0, 99999, n)]),
    })


def _spark_rows(spark, events: pa.Table, users: pa.Table | None, params: VectorParams) -> pa.Table:
    ev = spark.createDataFrame(events.to_pandas(), "user_id string, item_id string, event_ts timestamp, is_click boolean, rating double")
    us = spark.createDataFrame(users.to_pandas()) if users is not None else None
    if us is not None:  # pandas turns the all-null and int32 columns into other types: restore them
        from pyspark.sql import functions as F
        us = us.withColumn("empty", F.col("empty").cast("double")).withColumn("onehot_feat1", F.col("onehot_feat1").cast("int"))
    rows = build_user_vectors(ev, us, CUTOFF, params).toPandas().sort_values("user_id").reset_index(drop=True)
    return rows


def _compare(spark_rows: pd.DataFrame, local: pa.Table) -> None:
    got = local.to_pandas()
    assert got["user_id"].tolist() == spark_rows["user_id"].tolist()
    for c in ("profile_dim", "behaviour_dim", "n_events", "n_positive"):
        assert got[c].tolist() == spark_rows[c].tolist(), c
    assert {as_utc(t.to_pydatetime()) for t in got["cutoff_ts"]} == {CUTOFF}
    a = np.array([np.asarray(v, dtype=np.float32) for v in spark_rows["vector"]])
    b = np.array([np.asarray(v, dtype=np.float32) for v in got["vector"]])
    assert a.shape == b.shape
    if a.size:
        assert np.abs(a - b).max() <= 1e-6
        assert (a == b).mean() > 0.99  # most components bit for bit; the rest one float32 ulp or so


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.5, 2.0)])
def test_the_local_engine_gives_the_spark_rows(spark, weights):
    events, users = _events(3000, 1), _users(90, 2)
    params = VectorParams(profile_weight=weights[0], behaviour_weight=weights[1], als_rank=6, als_iterations=4,
                          categorical_columns=("onehot_feat*",), max_categories=5)
    report = {}
    local = build_user_vectors_local(events, users, CUTOFF, params, report)
    assert local.num_rows > 50
    if weights[0]:
        assert local["profile_dim"][0].as_py() == 5 + 2 + 5 + 5  # 5 numeric (booleans too), 2 + 5 + 5 one-hot
    if weights[1]:
        assert report["als_engine"] == "local" and report["als_entries"] > 100
    _compare(_spark_rows(spark, events, users, params), local)


def test_without_users_or_positives_and_events_after_the_cutoff(spark):
    events = _events(800, 3)
    params = VectorParams(als_rank=4, als_iterations=3)
    local = build_user_vectors_local(events, None, CUTOFF, params)
    _compare(_spark_rows(spark, events, None, params), local)
    # Events at or after the cutoff change nothing.
    late = pa.concat_tables([events, _events(300, 4).set_column(2, "event_ts", pa.array([CUTOFF + dt.timedelta(hours=h) for h in range(300)], TS_TYPE))])
    assert build_user_vectors_local(late, None, CUTOFF, params).equals(local)
    # No positive event at all: no behaviour block (width 0), as on Spark.
    none = events.set_column(3, "is_click", pa.array([False] * events.num_rows))
    out = build_user_vectors_local(none, _users(90, 2), CUTOFF, params)
    assert set(out["behaviour_dim"].to_pylist()) == {0}
    _compare(_spark_rows(spark, none, _users(90, 2), params), out)


def test_an_unsupported_categorical_column_or_too_many_als_pairs_need_spark():
    users = _users(20, 5).append_column("onehot_feat9", pa.array(np.arange(20, dtype=np.float32)))
    params = VectorParams(als_rank=4)
    assert unsupported_columns(users.schema, params) == ["onehot_feat9"]
    assert unsupported_columns(users.schema, VectorParams(profile_weight=0.0)) == []
    with pytest.raises(NeedsSpark, match="onehot_feat9"):
        build_user_vectors_local(_events(200, 6), users, CUTOFF, params)
    with pytest.raises(NeedsSpark, match="als_local_max_entries"):
        build_user_vectors_local(_events(200, 6), None, CUTOFF, VectorParams(als_local_max_entries=3))
    with pytest.raises(NeedsSpark, match="als_engine 'spark'"):
        build_user_vectors_local(_events(200, 6), None, CUTOFF, VectorParams(als_engine="spark"))
    assert choose_engine("auto", 10, 10) == "local" and choose_engine("auto", 11, 10) == "spark"
    with pytest.raises(ValueError, match="lookalike.vectors_engine must be one of"):
        choose_engine("gpu", 0, 0)


def test_doubles_are_written_as_spark_casts_them(spark):
    rng = np.random.default_rng(7)
    values = [0.0, -0.0, 1.0, 5.0, 0.001, 0.0001, 1e6, 1e7, 9999999.0, 1.5e-5, 1e16, 1e21, -2.5, 0.1 + 0.2,
              float("nan"), float("inf"), -float("inf"), 2.2250738585072014e-308, 1.7976931348623157e308]
    values += list(rng.standard_normal(1000) * 10.0 ** rng.integers(-9, 13, 1000))
    values += list(rng.integers(0, 100_000, 200).astype(float))
    df = spark.createDataFrame([(float(v),) for v in values], "x double")
    want = [r[0] for r in df.selectExpr("cast(x as string)").collect()]
    assert spark_strings(pa.array(values, pa.float64())).to_pylist() == want
    assert spark_strings(pa.array([1, None, -3], pa.int32())).to_pylist() == ["1", None, "-3"]
    assert spark_strings(pa.array([True, False])).to_pylist() == ["true", "false"]
    assert spark_strings(pa.array([dt.date(2022, 4, 8)])).to_pylist() == ["2022-04-08"]
    with pytest.raises(TypeError):
        spark_strings(pa.array([1.0], pa.float32()))
