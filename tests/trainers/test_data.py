"""trainers.data: encoders, streamed split reading, batching, and the no-Spark rule."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.config import DateSplit
from trainers.data import CategoricalEncoder, batch_indices, tensor_batches, EncodedSplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _watch_time_tables import write_tables  # noqa: E402


def test_encoder_hand():
    enc = CategoricalEncoder.fit(Counter({"b": 3, "a": 3, "c": 1}))
    assert enc.vocab == ["a", "b", "c"]  # by count, ties by value
    assert enc.transform(["b", "a", "zzz", None, "c"]).tolist() == [2, 1, 0, 0, 3]
    assert CategoricalEncoder.from_json(enc.to_json()).vocab == enc.vocab
    assert enc.cardinality == 4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=50), st.lists(st.text(max_size=3), max_size=20))
def test_encoder_properties(train, other):
    enc = CategoricalEncoder.fit(Counter(train))
    codes = enc.transform(train)
    assert codes.min() >= 1 and codes.max() < enc.cardinality  # training values are never unknown
    # equal values, equal codes; different values, different codes
    for v, c in zip(train, codes):
        assert enc.vocab[c - 1] == v
    out = enc.transform(other)
    for v, c in zip(other, out):
        assert (c == 0) == (v not in set(train))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200), st.integers(1, 64), st.integers(0, 99), st.integers(0, 5))
def test_batches_cover_each_row_once_and_repeat_with_the_seed(n, bs, seed, epoch):
    a = np.concatenate(list(batch_indices(n, bs, seed, epoch)))
    b = np.concatenate(list(batch_indices(n, bs, seed, epoch)))
    assert sorted(a.tolist()) == list(range(n)) and (a == b).all()
    assert all(len(x) <= bs for x in batch_indices(n, bs, seed, epoch))


def test_tensor_batches_align_rows():
    split = EncodedSplit(np.arange(20, dtype=np.int64).reshape(10, 2), {"y": np.arange(10, dtype=np.float64)})
    for x, y in tensor_batches(split, ["y"], 3, seed=1, epoch=0):
        assert (x[:, 0] // 2 == y.long()).all()


def test_date_split_windows_hand():
    w = DateSplit(train_days=9, valid_days=2, test_days=3).windows(dt.date(2022, 5, 8))
    assert w["test"] == (dt.date(2022, 5, 6), dt.date(2022, 5, 9))
    assert w["valid"] == (dt.date(2022, 5, 4), dt.date(2022, 5, 6))
    assert w["train"] == (dt.date(2022, 4, 25), dt.date(2022, 5, 4))


def test_split_reading_matches_a_pandas_reference(warehouse):
    from trainers.watch_time.data import load_watch_time_data

    df = write_tables(warehouse)
    data = load_watch_time_data(warehouse.uri, DateSplit(), batch_rows=97)  # many small batches
    w = DateSplit().windows(max(df.event_date))
    for name, (a, b) in w.items():
        ref = df[(df.event_date >= a) & (df.event_date < b)]
        assert len(data.splits[name]) == len(ref)
        assert sorted(data.event_ids[name].tolist()) == sorted(ref.event_id.tolist())
    # encoders fitted on training only: a user or item first seen later maps to 0
    enc = data.encoder.encoders["item_id"]
    train_items = set(df[(df.event_date >= w["train"][0]) & (df.event_date < w["train"][1])].item_id)
    assert set(enc.vocab) == train_items
    # joins: the author field of every row is its item's author
    fields = [f.name for f in data.encoder.fields]
    author = data.encoder.encoders["author_id"]
    ids = data.event_ids["test"]
    by_id = df.set_index("event_id")
    col = data.splits["test"].x[:, fields.index("author_id")]
    items = by_id.loc[ids, "item_id"].str[1:].astype(int)
    expected = author.transform([f"a{i % 7}" for i in items])
    assert (col == expected).all()
    # the most frequent tag of "x,y" lists
    assert "tag_pop" in fields
    assert set(data.tables) >= {"watch_time_labels", "duration_stats", "items", "users"}


def test_label_window_outside_training_is_refused(warehouse):
    from trainers.watch_time.data import LabelWindowError, load_watch_time_data

    write_tables(warehouse)
    with pytest.raises(LabelWindowError, match="leak"):
        load_watch_time_data(warehouse.uri, DateSplit(train_days=5, valid_days=6))


def test_trainers_never_import_pyspark():
    code = (
        "import sys\n"
        "import trainers.watch_time.trainer, trainers.registry, trainers.data, trainers.metrics\n"
        "import features.events, features.labels, features.sequences, features.lookalike, features.recall\n"
        "from trainers.registry import model_names; model_names()\n"
        "assert 'pyspark' not in sys.modules, 'pyspark was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_most_frequent_tag_once_per_distinct_value_equals_the_row_map():
    import pandas as pd

    from trainers.data import FieldEncoder

    enc = FieldEncoder([], "events", {})
    enc.tag_rank = {"a": 3, "b": 3, "c": 1}
    values = pd.Series(["a,b", None, "c", " ,", "b, c", np.nan, "a,b", "", "zz,c"], index=[5, 3, 1, 0, 2, 4, 6, 7, 8])
    got = enc._pick_tags(values)
    assert got.tolist() == values.map(enc._pick_tag).tolist() == ["a", None, "c", None, "b", None, "a", None, "c"]
    assert list(got.index) == list(values.index)


TEXT_VALUES = [
    [1.0, None, 2.5, 1.0, -0.0],
    [3, 1, 3, 2, 0],
    [True, False, True, True, False],
    ["a", None, "b", "a", ""],
    ["x", None, "y", "x", float("nan")],
    ["a", None, 1, 1.0, True],  # mixed objects: equal values, different texts
    ["1", 1, "1", None, 1],
    [None, None, None, None, None],
]


def _text_series(values, dtype):
    import pandas as pd

    return pd.Series(values, index=[4, 2, 9, 1, 0], dtype=dtype, name="c")


def _fits(values, dtype) -> bool:
    try:
        _text_series(values, dtype)
    except (TypeError, ValueError):
        return False
    return True


@pytest.mark.parametrize("values,dtype", [
    (v, d) for v in TEXT_VALUES for d in (None, "object", "Int64", "string", "float32") if _fits(v, d)
])
def test_text_once_per_distinct_value_equals_the_row_by_row_text(values, dtype):
    from trainers.data import _as_text, _as_text_rows

    series = _text_series(values, dtype)
    got, ref = _as_text(series), _as_text_rows(series)
    assert got.tolist() == ref.tolist()
    assert list(got.index) == list(ref.index) and got.dtype == object
