"""Contracts describe every column (with its unit) and declare their quality expectations."""
from __future__ import annotations

import pyarrow as pa
import pytest

from features.contracts import (
    ERROR,
    SEVERITIES,
    WARNING,
    ColumnExpectation,
    Param,
    TableContract,
    between,
    each_between,
    one_of,
    ordered,
    row_count_band,
    utc_date_of,
)
from features.dimensions import ITEMS, USERS
from features.events import EVENTS
from features.ingest_runs import INGEST_RUNS
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.lookalike import LOOKALIKE_USERS, USER_VECTORS
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
from features.rejections import REJECTED_EVENTS
from features.sequences import ROTE_FEATURES, USER_SEQUENCES
from features.synthetic_truth import SYNTHETIC_TRUTH

CONTRACTS = [
    EVENTS, REJECTED_EVENTS, INGEST_RUNS, USERS, ITEMS, SYNTHETIC_TRUTH, USER_SEQUENCES, ROTE_FEATURES,
    DURATION_STATS, WATCH_TIME_LABELS, USER_VECTORS, LOOKALIKE_USERS, ITEM_NEIGHBORS, RECALL_ITEMS,
]


def test_fourteen_distinct_tables():
    assert len({c.name for c in CONTRACTS}) == 14


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_every_column_has_a_description(contract):
    missing = [c for c in contract.columns if not contract.column_description(c).strip()]
    assert not missing, f"{contract.name}: columns without a description: {missing}"
    # Every documented name is a column or a pattern of an open contract.
    for name in contract.column_docs:
        assert name in contract.columns or ("<" in name and contract.open_columns), (contract.name, name)
    for pattern in contract.column_patterns:
        assert contract.open_column_types.get(pattern), (contract.name, pattern)


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_expectations_name_contract_columns(contract):
    for e in contract.expectations:
        assert e.severity in SEVERITIES
        assert all(col in contract.columns for col in e.columns), (contract.name, e)
        assert e.describe()
    assert hash(contract) is not None


def test_open_columns_are_described_by_pattern():
    assert ROTE_FEATURES.column_description("hist_day_id").startswith("RPG calendar id")
    assert ROTE_FEATURES.column_description("target_month_id_rel").startswith("the target's id minus")
    assert ROTE_FEATURES.column_description("hist_year_id_rel") == ROTE_FEATURES.column_docs["hist_<level>_id_rel"]
    assert ROTE_FEATURES.column_description("nonsense") == ""
    assert USERS.column_description("user_active_degree").startswith("a profile attribute")
    assert EVENTS.column_description("no_such_column") == ""


def test_units_are_in_the_descriptions():
    assert "millisecond" in EVENTS.column_description("play_time_ms")
    assert ", s" in DURATION_STATS.column_description("wt_mean_s")
    assert "[0, 1]" in WATCH_TIME_LABELS.column_description("pcr")
    assert "UTC" in EVENTS.column_description("event_date")


def test_bounded_labels_and_parameters_are_declared():
    declared = {(e.kind, e.columns, e.min_value, e.max_value) for e in WATCH_TIME_LABELS.expectations}
    for label in ("pcr", "wtg", "d2q", "d2q_dense", "d2co"):
        assert ("between", (label,), 0, 1) in declared
    assert ("between", ("hist_len",), 0, Param("max_len")) in {
        (e.kind, e.columns, e.min_value, e.max_value) for e in USER_SEQUENCES.expectations
    }
    assert USER_SEQUENCES.parameters == ("max_len",)
    assert set(ITEM_NEIGHBORS.parameters) == {"min_co_users", "similarity"}
    assert ("between", ("similarity",), -1, 1) in {
        (e.kind, e.columns, e.min_value, e.max_value) for e in LOOKALIKE_USERS.expectations
    }


def test_docs_and_expectations_stay_out_of_the_hash():
    schema = pa.schema([pa.field("a", pa.string(), nullable=False)])
    plain = TableContract("t", schema, ("a",), "d")
    documented = TableContract("t", schema, ("a",), "d", column_docs={"a": "the a"}, expectations=(one_of("a", "xy"),))
    assert hash(plain) == hash(documented)
    assert plain != documented
    assert documented.column_description("a") == "the a" and plain.column_description("a") == ""


def test_expectation_constructors():
    assert between("x", 0, strict_min=True).describe() == "`x` > 0"
    assert between("x", 0, 1).describe() == "`x` in [0, 1]"
    assert between("x", max_value=Param("m")).describe() == "`x` <= {m}"
    assert between("x", 0, 1, when=("p", "v")).params == ("p",)
    assert each_between("l", 0).describe() == "every element of `l` >= 0"
    assert ordered("a", "b", strict=True).describe() == "`a` < `b`"
    assert utc_date_of("d", "ts").columns == ("d", "ts")
    assert row_count_band("version", severity=WARNING).severity == WARNING
    assert one_of("s", ["a"]).severity == ERROR
    with pytest.raises(ValueError):
        row_count_band("day")
    with pytest.raises(ValueError):
        ColumnExpectation("nonsense")
    with pytest.raises(ValueError):
        between("x", 0, severity="fatal")
