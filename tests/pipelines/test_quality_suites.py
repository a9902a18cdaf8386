"""Quality suites: good data passes; each injected defect fails its own expectation.

Each warehouse below is validated once per table (GX on Spark costs seconds per validation;
the pandas engine, the default for small frames, ~0.5 s with the Spark preparation), and the
assertions share the result.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.dimensions import ITEMS, USERS
from features.events import EVENTS, FEEDBACK_FLAGS
from features.synthetic_truth import SYNTHETIC_TRUTH
from pipelines.quality import (
    ERROR,
    WARNING,
    QualityResult,
    QualitySettings,
    contract_expectations,
    load_results,
    partition_row_counts,
    render_report,
    reports_root,
    result_path,
    validate_table,
)
from pipelines.warehouse import Warehouse

UTC = dt.timezone.utc


def event_rows(day: int, n: int, *, users=("u0", "u1"), items=("i0", "i1", "i2"), prefix: str = "e") -> list[dict]:
    start = dt.datetime(2022, 4, day, 1, tzinfo=UTC)
    return [
        {
            "event_id": f"{prefix}{day}-{i}",
            "user_id": users[i % len(users)],
            "item_id": items[i % len(items)],
            "event_ts": start + dt.timedelta(minutes=i),
            "play_time_ms": 1000 * i,
            "duration_ms": 60_000,
            "rating": None,
            "source_line": i + 1,
        }
        for i in range(n)
    ]


def events_table(rows: list[dict]) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in EVENTS.columns}
    for r in rows:
        ts = r["event_ts"]
        full = {
            "source": "test",
            "source_file": "log.csv",
            "event_date": ts.astimezone(UTC).date(),
            **{f: None for f in FEEDBACK_FLAGS},
            **r,
        }
        for name in EVENTS.columns:
            cols[name].append(full[name])
    return pa.Table.from_pydict(cols, schema=pa.schema([pa.field(f.name, f.type) for f in EVENTS.schema]))


def write_dims(wh: Warehouse, users=("u0", "u1"), items=("i0", "i1", "i2")) -> None:
    wh.write_arrow(USERS, pa.table({"user_id": list(users), "source": ["test"] * len(users)}))
    wh.write_arrow(ITEMS, pa.table({"item_id": list(items), "source": ["test"] * len(items)}))


def failed(result: QualityResult) -> dict[tuple[str, str | None], int | None]:
    return {(e.expectation, e.column): e.unexpected_count for e in result.expectations if not e.success}


# ---- good data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good(spark, tmp_path_factory):
    wh = Warehouse(str(tmp_path_factory.mktemp("good") / "warehouse"))
    write_dims(wh)
    wh.write_arrow(EVENTS, events_table(event_rows(8, 20) + event_rows(9, 30) + event_rows(10, 25)))
    truth = wh.read_arrow(EVENTS.name).select(["event_id", "user_id", "item_id", "event_ts"])
    n = truth.num_rows
    truth = truth.append_column("interest", pa.array([0.01 + 0.98 * i / n for i in range(n)]))
    for name, value in (("is_noisy_play", False), ("is_complete", True), ("is_replay", False)):
        truth = truth.append_column(name, pa.array([value] * n))
    truth = truth.append_column("session_index", pa.array(range(n), pa.int64()))
    wh.write_arrow(SYNTHETIC_TRUTH, truth)
    results = {t: validate_table(spark, wh, t) for t in ("events", "users", "items", "synthetic_truth")}
    return wh, results


def test_good_tables_pass(good):
    wh, results = good
    for table, r in results.items():
        assert r.passed, r.summary()
        assert r.contract_passed
        assert not r.failures and not r.warnings, r.summary()
        assert r.engine == "pandas"
    events = results["events"]
    assert events.rows == 75 and events.partitions == ["2022-04-08", "2022-04-09", "2022-04-10"]
    assert events.notes == ["2022-04-08: no previous partition, row-count band not applied"]
    severities = {(e.expectation, e.column): e.severity for e in events.expectations}
    assert severities[("expect_column_values_to_be_null", "user_id_not_in_users")] == WARNING
    assert severities[("expect_column_values_to_be_null", "item_id_not_in_items")] == WARNING
    assert severities[("expect_column_values_to_be_unique", "event_id")] == ERROR
    assert severities[("expect_column_values_to_be_between", "ratio_to_previous")] == ERROR
    assert {e.batch for e in events.expectations} == {"events", "events_partition_row_counts"}


def test_reports_are_written_and_listed(good):
    wh, results = good
    reports = reports_root(wh)
    assert reports == f"{wh.root}/reports"
    index = Path(reports) / "gx" / "index.html"
    assert all(r.data_docs_index == str(index) for r in results.values())
    html = index.read_text()
    for r in results.values():
        assert Path(r.validation_page).is_file()
        assert Path(r.validation_page).relative_to(index.parent).as_posix() in html
        assert Path(result_path(reports, r.table)).is_file()
    loaded = load_results(reports)
    assert set(loaded) == set(results)
    assert loaded["events"] == results["events"]
    text = render_report(loaded, reports)
    assert text.splitlines()[1].split()[:2] == ["events", "passed"]
    assert text.endswith(f"data docs: {index}")


# ---- defects ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def defective(spark, tmp_path_factory):
    wh = Warehouse(str(tmp_path_factory.mktemp("defective") / "warehouse"))
    write_dims(wh)
    rows = event_rows(8, 20) + event_rows(9, 20)
    rows[0]["user_id"] = None  # null user ids
    rows[1]["user_id"] = None
    rows[2]["event_id"] = rows[3]["event_id"]  # a duplicate event id (two rows share it)
    rows[4]["play_time_ms"] = -5  # negative play time
    rows[5]["rating"] = 7.0  # rating outside [0, 5]
    rows[6]["rating"] = 4.0
    table = events_table(rows)
    # An event time before 2000, kept in the 2022-04-09 partition: out of the window, and its
    # event_date is not the UTC date of its event_ts.
    ts = table.column("event_ts").to_pylist()
    ts[25] = dt.datetime(1999, 12, 31, 23, 0, tzinfo=UTC)
    table = table.set_column(table.schema.get_field_index("event_ts"), "event_ts", pa.array(ts, EVENTS.schema.field("event_ts").type))
    wh.write_arrow(EVENTS, table)
    return wh


EXPECTED_DEFECTS = {
    ("expect_column_values_to_not_be_null", "user_id"): 2,
    ("expect_column_values_to_be_unique", "event_id"): 2,
    ("expect_column_values_to_be_between", "play_time_ms"): 1,
    ("expect_column_values_to_be_between", "rating"): 1,
    ("expect_column_values_to_be_between", "event_ts"): 1,
    ("expect_column_pair_values_to_be_equal", "event_date,event_ts_utc_date"): 1,
}


@pytest.fixture(scope="module")
def defective_result(spark, defective):
    return validate_table(spark, defective, "events")


def test_injected_defects_fail_their_expectations(defective_result):
    r = defective_result
    assert not r.passed
    assert failed(r) == EXPECTED_DEFECTS
    assert all(e.severity == ERROR for e in r.failures) and not r.warnings
    assert not r.contract_passed and "duplicate keys" in r.contract_description
    assert "expect_column_values_to_not_be_null(user_id): 2 unexpected" in r.summary()
    by_key = {(e.expectation, e.column): e for e in r.expectations}
    assert by_key[("expect_column_values_to_be_between", "play_time_ms")].unexpected_sample == ["-5"]
    assert by_key[("expect_column_values_to_be_between", "rating")].unexpected_sample == ["7.0"]


def test_data_docs_page_shows_the_failures(defective_result):
    page = Path(defective_result.validation_page)
    assert page.parent.parent.name == "manual" and page.suffix == ".html"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))
    assert "Status: Failed" in text
    assert "user_id" in text and "values must never be null" in text and "2 unexpected values found" in text
    assert "play_time_ms" in text and "-5" in text
    assert "FAILED" in render_report({"events": defective_result}, "x")


def test_spark_engine_finds_the_same_defects(spark, defective):
    r = validate_table(spark, defective, "events", QualitySettings(engine="spark"))
    assert r.engine == "spark"
    assert not r.passed
    assert failed(r) == EXPECTED_DEFECTS


def test_event_time_window_is_configurable(spark, good):
    wh, _ = good
    r = validate_table(
        spark, wh, "events", partitions=["2022-04-09"], min_event_ts=dt.date(2022, 4, 9),
        max_event_ts=dt.datetime(2022, 4, 9, 1, 10, tzinfo=UTC),
    )
    assert failed(r) == {("expect_column_values_to_be_between", "event_ts"): 19}
    assert r.partitions == ["2022-04-09"] and r.rows == 30


def test_unknown_ids_are_warnings_that_do_not_fail(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write_dims(wh, users=("u0",), items=("i0", "i1"))
    wh.write_arrow(EVENTS, events_table(event_rows(8, 12, users=("u0", "u7"), items=("i0", "i1", "i9"))))
    r = validate_table(spark, wh, "events")
    assert r.passed and not r.failures
    assert {(e.column, e.unexpected_count, tuple(e.unexpected_sample)) for e in r.warnings} == {
        ("user_id_not_in_users", 6, ("u7",)),
        ("item_id_not_in_items", 4, ("i9",)),
    }
    strict = validate_table(spark, wh, "events", QualitySettings(referential_integrity="error"))
    assert not strict.passed
    assert {e.column for e in strict.failures} == {"user_id_not_in_users", "item_id_not_in_items"}


def test_row_count_band_fails_on_a_tenfold_jump(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write_dims(wh)
    wh.write_arrow(EVENTS, events_table(event_rows(8, 10) + event_rows(9, 100) + event_rows(10, 100)))
    r = validate_table(spark, wh, "events")
    assert not r.passed
    assert failed(r) == {("expect_column_values_to_be_between", "ratio_to_previous"): 1}
    assert r.failures[0].batch == "events_partition_row_counts"
    assert r.failures[0].unexpected_sample == ["10.0"]
    assert set(r.validation_pages) == {"events", "events_partition_row_counts"}
    # A wider band accepts it.
    assert validate_table(spark, wh, "events", QualitySettings(row_count_max_ratio=20)).passed


def test_interest_must_be_strictly_inside_zero_one(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    ts = dt.datetime(2022, 4, 8, tzinfo=UTC)
    wh.write_arrow(
        SYNTHETIC_TRUTH,
        pa.table(
            {
                "event_id": ["a", "b", "c", "c"],
                "user_id": ["u"] * 4,
                "item_id": ["i"] * 4,
                "event_ts": pa.array([ts] * 4, pa.timestamp("us", tz="UTC")),
                "interest": [0.0, 0.5, 1.0, 0.3],
                "is_noisy_play": [False] * 4,
                "is_complete": [False] * 4,
                "is_replay": [False] * 4,
                "session_index": pa.array([0] * 4, pa.int64()),
            }
        ),
    )
    r = validate_table(spark, wh, "synthetic_truth", QualitySettings(keep_validations=1))
    assert failed(r) == {
        ("expect_column_values_to_be_between", "interest"): 2,
        ("expect_column_values_to_be_unique", "event_id"): 2,
    }
    # keep_validations=1: a second run replaces the first page (results and pages are pruned).
    again = validate_table(spark, wh, "synthetic_truth", QualitySettings(keep_validations=1))
    assert Path(again.validation_page).is_file() and not Path(r.validation_page).exists()


# ---- pure parts -------------------------------------------------------------------------------
def _manifest(counts: dict[str, int]):
    from features.layout import Manifest, PartitionEntry

    parts = {k: PartitionEntry(path=f"data/{k}", row_count=v, files=("p.parquet",)) for k, v in counts.items()}
    return Manifest("events", 1, "2022-01-01T00:00:00+00:00", "event_date", (), parts, tuple(sorted(counts)))


def test_partition_row_counts_by_hand():
    m = _manifest({"2022-04-08": 10, "2022-04-10": 100, "2022-04-11": 50})
    rows = partition_row_counts(m, ["2022-04-11", "2022-04-10", "2022-04-12", "2022-04-08"])
    assert [(r["partition"], r["row_count"], r["previous_partition"], r["ratio_to_previous"]) for r in rows] == [
        ("2022-04-08", 10, None, None),
        ("2022-04-10", 100, "2022-04-08", 10.0),
        ("2022-04-11", 50, "2022-04-10", 0.5),
        ("2022-04-12", 0, "2022-04-11", 0.0),  # written but empty: a drop to zero
    ]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=20))
def test_partition_row_counts_properties(counts):
    days = [(dt.date(2022, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(len(counts))]
    rows = partition_row_counts(_manifest(dict(zip(days, counts))), days)
    assert [r["partition"] for r in rows] == days
    assert rows[0]["ratio_to_previous"] is None
    for prev, cur, r in zip(counts, counts[1:], rows[1:]):
        assert r["previous_row_count"] == prev and r["ratio_to_previous"] == pytest.approx(cur / prev)


def test_contract_expectations_cover_keys_and_required_columns():
    from features.contracts import TableContract

    contract = TableContract(
        name="pairs",
        schema=pa.schema([pa.field("a", pa.string(), nullable=False), pa.field("b", pa.string(), nullable=False), pa.field("c", pa.int64())]),
        key=("a", "b"),
        description="test",
    )
    got = [(e.type, e.column, e.severity) for e in contract_expectations(contract)]
    assert got == [
        ("ExpectColumnValuesToNotBeNull", "a", ERROR),
        ("ExpectColumnValuesToNotBeNull", "b", ERROR),
        ("ExpectCompoundColumnsToBeUnique", "a,b", ERROR),
    ]


def test_quality_settings_validate():
    from pydantic import ValidationError

    assert QualitySettings().row_count_min_ratio == 0.2 and QualitySettings().row_count_max_ratio == 5.0
    with pytest.raises(ValidationError):
        QualitySettings(row_count_min_ratio=3, row_count_max_ratio=2)
    with pytest.raises(ValidationError):
        QualitySettings(band=1)
    assert QualitySettings().max_rejection_rate == 0.05
    with pytest.raises(ValidationError):
        QualitySettings(max_rejection_rate=1.5)
