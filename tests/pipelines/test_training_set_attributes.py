"""User and item attributes: the training set's Spark tasks and the trainers' loaders attach
them with one kernel (features/attributes.py), so they agree row by row, including on a
dimension that repeats a key (which a plain join would turn into duplicated examples)."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa

from features.dimensions import USERS

UTC = dt.timezone.utc


def test_a_repeated_user_key_gives_its_last_row_on_both_sides(spark, tmp_path, caplog):
    from pipelines.training_set import training_set
    from pipelines.warehouse import Warehouse
    from trainers.data import Dimension, FieldEncoder, FieldSpec, load_dimension

    wh = Warehouse(str(tmp_path / "wh"))
    # the warehouse takes the repeated key (the contract's uniqueness is a check, not a write guard)
    wh.write_arrow(USERS, pa.table({"user_id": ["a", "b", "a"], "source": ["s"] * 3, "age": [31, 40, 32],
                                    "segment": ["x", None, "z"]}))
    t = dt.datetime(2022, 4, 8, 12, tzinfo=UTC)
    spine = pd.DataFrame({"user_id": ["a", "b", "c", "a"], "event_ts": [t] * 4, "label": [1, 0, 1, 0]})
    result = training_set(spark, wh, spine, ["users.*"])
    assert result.report["users_repeated_keys"] == 1  # "a": said, not silently resolved
    got = result.to_pandas()
    assert got.spine_row.tolist() == [0, 1, 2, 3]  # one row per example: nothing duplicated
    assert got.users__age.tolist()[:2] == [32, 40] and pd.isna(got.users__age[2]) and got.users__age[3] == 32
    assert got.users__segment.tolist() == ["z", None, None, "z"]
    assert got.label.tolist() == [1, 0, 1, 0]

    # the trainer's loader on the same table: the same rows, as the encoder's text
    dim = Dimension(USERS, "user_id", "user_id")
    with caplog.at_level("WARNING", logger="recfeat.train"):
        frame, _ = load_dimension(wh.uri, dim, ["age", "segment"])
    assert "1 repeated user_id value(s)" in caplog.text
    fields = [FieldSpec("user_id", "examples", "user_id"), FieldSpec("age", "users", "age"),
              FieldSpec("segment", "users", "segment")]
    encoder = FieldEncoder(fields, "examples", {"users": (dim, frame)})
    raw = encoder.raw_fields(spine)
    attached = encoder.raw_fields_attached(got, {"age": "users__age", "segment": "users__segment"})
    for f in fields:
        assert raw[f.name].tolist() == attached[f.name].tolist(), f.name
    assert raw["age"].tolist() == ["32", "40", None, "32"]
