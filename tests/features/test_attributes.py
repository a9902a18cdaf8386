"""The attribute kernel every reader attaches dimension attributes with (features/attributes.py):
a hand-computed case and a property test against a plain-Python reference."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from features.attributes import MISSING, DimensionIndex, attach_attributes, dimension_rows, take_rows, take_series


def test_hand_computed_rows_missing_null_and_repeated_keys():
    dim = pa.table({"user_id": ["a", "b", "a", None, "c"], "age": [1, 2, 3, 4, None]})
    rows = dimension_rows(dim.column("user_id"), ["a", "c", "zz", None, "b", "a"])
    # "a" is repeated: its last row (2); "zz" and the null key: missing
    assert rows.tolist() == [2, 4, MISSING, MISSING, 1, 2]
    assert DimensionIndex(dim.column("user_id")).repeated == 1  # "a"; the null key is not counted
    assert DimensionIndex(pa.array(["a", "b", "b", "a", "c", None, None])).repeated == 2
    assert take_rows(dim.column("age"), rows).to_pylist() == [3, None, None, None, 2, 3]
    assert take_series(dim.column("age").to_pandas(), rows).tolist()[4] == 2
    examples = pa.table({"user_id": ["c", "a", "q"], "label": [1, 0, 1]})
    out = attach_attributes(examples, dim, "user_id", ["age"], ["users__age"])
    assert out.column_names == ["user_id", "label", "users__age"]
    assert out.column("users__age").to_pylist() == [None, 3, None]
    assert out.column("label").to_pylist() == [1, 0, 1]  # rows and order unchanged


def test_keys_compare_as_text_and_an_empty_dimension_gives_nulls():
    assert dimension_rows(pa.array([1, 2], pa.int64()), ["2", "1", "3"]).tolist() == [1, 0, MISSING]
    empty = pa.table({"item_id": pa.array([], pa.string()), "tag": pa.array([], pa.string())})
    index = DimensionIndex(empty.column("item_id"))
    rows = index.positions(["x", None])
    assert rows.tolist() == [MISSING, MISSING]
    assert take_rows(empty.column("tag"), rows).to_pylist() == [None, None]


keys = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e"]))


@given(dim_keys=st.lists(keys, max_size=12), query=st.lists(keys, max_size=12))
def test_rows_equal_a_last_row_wins_reference(dim_keys, query):
    last = {k: i for i, k in enumerate(dim_keys) if k is not None}
    want = [last.get(k, MISSING) if k is not None else MISSING for k in query]
    assert dimension_rows(pa.array(dim_keys, pa.string()), pa.array(query, pa.string())).tolist() == want
    values = pa.array([f"v{i}" for i in range(len(dim_keys))], pa.string())
    got = take_rows(values, dimension_rows(dim_keys, query)).to_pylist()
    assert got == [None if w == MISSING else f"v{w}" for w in want]
