"""check_table on every table: a suite per contract, invariants, row-count bands, the report.

One small warehouse holds a good version of each of the 14 tables; each is checked once (GX on
pandas, ~1 s each) and the assertions share the results. Defects are injected in tables of
their own.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from features.contracts import TableContract
from pipelines.quality import ERROR, WARNING, QualitySettings, TableCheckResult, check_table, load_results, report
from pipelines.quality.report import render_report
from pipelines.quality.results import reports_root
from pipelines.quality.tables import all_contracts, contract, table_names
from pipelines.warehouse import Warehouse

UTC = dt.timezone.utc
T0 = dt.datetime(2022, 4, 8, 1, tzinfo=UTC)
D0, D1 = T0.date(), T0.date() + dt.timedelta(days=1)
CUTOFF = dt.datetime(2022, 4, 10, tzinfo=UTC)
PARAMS = {"max_len": 2, "similarity": "cosine", "min_co_users": 2}


def s(i: int) -> int:
    return int((T0 + dt.timedelta(minutes=i)).timestamp())


def arrow(c: TableContract, cols: dict[str, list]) -> pa.Table:
    """A table of ``c``'s schema from ``cols`` (columns left out are null)."""
    n = len(next(iter(cols.values())))
    schema = pa.schema([pa.field(f.name, f.type) for f in c.schema])
    return pa.Table.from_pydict({f.name: cols.get(f.name, [None] * n) for f in c.schema}, schema=schema)


def good_tables() -> dict[str, dict[str, list]]:
    ts = [T0, T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=1, minutes=1)]
    ev = ["e0", "e1", "e2", "e3"]
    return {
        "events": {
            "event_id": ev, "source": ["test"] * 4, "user_id": ["u0", "u1", "u0", "u1"], "item_id": ["i0", "i1", "i0", "i1"],
            "event_ts": ts, "play_time_ms": [1000, 2000, 0, 5000], "duration_ms": [10_000] * 4, "rating": [None, 4.0, None, 1.0],
            "event_date": [t.date() for t in ts], "source_file": ["log.csv"] * 4, "source_line": [1, 2, 3, 4],
        },
        "users": {"user_id": ["u0", "u1"], "source": ["test"] * 2},
        "items": {"item_id": ["i0", "i1"], "source": ["test"] * 2},
        "synthetic_truth": {
            "event_id": ev, "user_id": ["u0", "u1", "u0", "u1"], "item_id": ["i0", "i1", "i0", "i1"], "event_ts": ts,
            "interest": [0.1, 0.5, 0.9, 0.3], "is_noisy_play": [False] * 4, "is_complete": [True] * 4,
            "is_replay": [False] * 4, "session_index": [0, 0, 1, 1],
        },
        "rejected_events": {
            "rejection_id": ["r0", "r1"], "run_id": ["run1"] * 2, "source": ["test"] * 2, "source_file": ["log.csv"] * 2,
            "source_line": [5, 0], "raw_record": ["x,y", ""], "reason_code": ["wrong_type", "unreadable_file"],
            "reason": ["event_ts 'x' is not a number", "cannot read"], "rejected_at": [T0] * 2, "rejected_date": [D0] * 2,
        },
        "ingest_runs": run_rows([("run1", 100, 2)]),
        "user_sequences": {
            "event_id": ["e0", "e2", "e4"], "user_id": ["u0"] * 3, "target_item_id": ["i0", "i0", "i1"],
            "target_ts": [T0, T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=1, hours=1)],
            "target_play_time_ms": [1000, 0, None], "hist_item_ids": [[], ["i0"], ["i0", "i0"]],
            "hist_ts": [[], [T0], [T0, T0 + dt.timedelta(days=1)]], "hist_play_time_ms": [[], [1000], [1000, None]],
            "hist_len": [0, 1, 2], "seq_pos": [0, 1, 2], "split": ["train", "valid", "test"], "target_date": [D0, D1, D1],
        },
        "rote_features": {
            "event_id": ["e0", "e2"], "user_id": ["u0"] * 2, "hist_len": [0, 2], "hist_ts_s": [[], [s(0), s(1)]],
            "hist_days_f": [[], [s(0) / 86400, s(1) / 86400]], "hist_months_f": [[], [0.1, 0.2]], "hist_years_f": [[], [0.01, 0.02]],
            "gap_prev_s": [[], [0, 60]], "gap_to_target_s": [[], [120, 60]], "query_ts_s": [0, s(1)], "target_ts_s": [s(0), s(3)],
            "target_days_f": [1.0, 2.0], "target_months_f": [0.1, 0.2], "target_years_f": [0.01, 0.02], "target_date": [D0, D0],
        },
        "duration_stats": {
            "duration_s": [5, 6, 7], "rows": [10, 0, 3], "wt_mean_s": [2.0, None, 3.0], "wt_std_s": [1.0, None, 0.5],
            "noise_wt_s": [1.0, None, 1.0], "interest_wt_s": [4.0, None, 5.0], "noise_wt_smoothed_s": [1.0, 1.0, 1.0],
            "interest_wt_smoothed_s": [4.0, 4.5, 5.0], "d2q_bin": [0, 0, 1], "fit_start": [D0] * 3, "fit_end": [D1] * 3,
            "fit_status": ["fitted", "no_rows", "fitted"], "is_interpolated": [False, True, False],
            "long_view_cwm_threshold_s": [10.0] * 3,
        },
        "watch_time_labels": labels_rows([0.5, 1.0, 0.0]),
        "user_vectors": {
            "user_id": ["u0", "u1"], "vector": [[1.0, 0.0], [0.0, 1.0]], "profile_dim": [1, 1], "behaviour_dim": [1, 1],
            "n_events": [3, 1], "n_positive": [1, 1], "cutoff_ts": [CUTOFF] * 2,
        },
        "lookalike_users": {
            "user_id": ["u0", "u1"], "rank": [1, 1], "neighbor_user_id": ["u1", "u0"], "similarity": [0.0, -1.0],
            "cutoff_ts": [CUTOFF] * 2,
        },
        "item_neighbors": {
            "item_id": ["i0", "i1"], "rank": [1, 1], "neighbor_item_id": ["i1", "i0"], "similarity": [1.0, 0.25],
            "co_users": [2, 3], "window_start_ts": [CUTOFF - dt.timedelta(days=7)] * 2, "cutoff_ts": [CUTOFF] * 2,
        },
        "recall_items": {
            "user_id": ["u0", "u0"], "rank": [1, 2], "item_id": ["i2", "i3"], "score": [0.7, 0.1],
            "source": ["i2i", "popular"], "cutoff_ts": [CUTOFF] * 2,
        },
    }


def run_rows(runs: list[tuple[str, int, int]]) -> dict[str, list]:
    """ingest_runs rows (run id, records read, rejected); the rest of the records are new events."""
    n = len(runs)
    return {
        "run_id": [r[0] for r in runs], "source": ["test"] * n,
        "started_at": [T0 + dt.timedelta(hours=i) for i in range(n)],
        "finished_at": [T0 + dt.timedelta(hours=i, minutes=1) for i in range(n)],
        "window_start": [D0] * n, "window_end": [D1] * n, "runner": ["spark"] * n, "files": [1] * n,
        "records_in": [r[1] for r in runs], "new_events": [r[1] - r[2] for r in runs], "already_present": [0] * n,
        "outside_window": [0] * n, "rejected": [r[2] for r in runs], "duplicates": [0] * n,
        "counts_by_reason": ["{}"] * n, "events_version": list(range(1, n + 1)),
    }


def labels_rows(pcr: list[float]) -> dict[str, list]:
    n = len(pcr)
    return {
        "event_id": [f"e{i}" for i in range(n)], "user_id": ["u0"] * n, "item_id": ["i0"] * n,
        "event_ts": [T0] * n, "event_date": [D0] * n, "duration_s": [10] * n,
        "watch_time_s": [min(10, round(10 * p)) for p in pcr], "play_time_ms": [int(10_000 * p) for p in pcr],
        "is_complete": [p >= 1 for p in pcr], "is_in_fit_window": [True] * n, "pcr": pcr, "wtg_gain": [0.0] * n,
        "wtg": [0.5] * n, "d2q_bin": [0] * n, "d2q": [0.5] * n, "d2q_dense": [0.5] * n, "d2co": [0.3] * n,
        "cwm_target": [0.2] * n, "is_censored": [p >= 1 for p in pcr], "is_long_view_d2co": [False] * n,
        "is_long_view_cwm": [False] * n,
    }


def write(wh: Warehouse, name: str, cols: dict[str, list]) -> None:
    wh.write_arrow(contract(name), arrow(contract(name), cols))


def failed(result: TableCheckResult) -> dict[tuple[str, str | None], int | None]:
    return {(e.expectation, e.column): e.unexpected_count for e in result.expectations if not e.success}


# ---- every table ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good(spark, tmp_path_factory):
    wh = Warehouse(str(tmp_path_factory.mktemp("tables") / "warehouse"))
    for name, cols in good_tables().items():
        write(wh, name, cols)
    results = {name: check_table(spark, wh, name, QualitySettings(), params=PARAMS) for name in good_tables()}
    return wh, results


#: Tables whose suites are exercised on their family's real output by the family's own tests
#: (a Dagster materialization with every check passing) rather than by a hand-made sample here.
FAMILY_TESTED = {
    "dialogue_turns", "rejected_dialogue_turns", "dialogue_ingest_runs", "turn_scores", "preference_pairs",  # test_dialogues_assets.py
    "item_codes",  # tests/pipelines/test_item_codes.py
}


def test_the_good_tables_cover_the_catalog():
    assert len(good_tables()) == 14 and set(good_tables()) <= set(table_names())
    assert set(table_names()) - set(good_tables()) <= FAMILY_TESTED


def test_every_table_has_a_suite_that_passes_on_good_rows(good):
    _, results = good
    for name, r in results.items():
        assert r.passed, r.summary()
        assert r.gx_passed and r.contract_passed and not r.failures and not r.warnings, r.summary()
        assert not r.invariants_checked and r.invariants_passed
        c = contract(name)
        # the suite holds the contract's key and not-null checks plus its declared expectations
        kinds = {e.expectation for e in r.expectations}
        assert "expect_column_values_to_not_be_null" in kinds, name
        assert any("unique" in k for k in kinds), name
        assert len(r.expectations) > len(c.key), name
        assert Path(r.validation_page).is_file()


def test_declared_expectations_reach_gx(good):
    _, results = good
    labels = {(e.expectation, e.column): e.severity for e in results["watch_time_labels"].expectations}
    for label in ("pcr", "wtg", "d2q", "d2q_dense", "d2co"):
        assert labels[("expect_column_values_to_be_between", label)] == ERROR
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "duration_s,watch_time_s") in labels
    assert ("expect_column_pair_values_to_be_equal", "event_date,event_ts_utc_date") in labels
    rote = {(e.expectation, e.column) for e in results["rote_features"].expectations}
    assert ("expect_column_values_to_be_between", "gap_prev_s_min_element") in rote
    assert results["user_sequences"].params["max_len"] == "2"
    neighbours = [e for e in results["item_neighbors"].expectations if e.column == "similarity" and "between" in e.expectation]
    assert len(neighbours) == 2  # > 0 always, <= 1 for cosine
    runs = {(e.column, e.severity) for e in results["ingest_runs"].expectations}
    assert ("rejection_rate", WARNING) in runs and ("unaccounted_records", ERROR) in runs


def test_version_band_notes_a_first_version(good):
    _, results = good
    assert "version 1: no previous version with rows, row-count band not applied" in results["users"].notes
    assert {e.batch for e in results["users"].expectations} == {"users", "users_version_row_counts"}


def test_a_missing_parameter_skips_its_expectation_with_a_note(spark, good):
    wh, _ = good
    r = check_table(spark, wh, "user_sequences", QualitySettings())
    assert r.passed
    assert any("parameter max_len not given" in n for n in r.notes)
    assert ("expect_column_values_to_be_between", "hist_len") not in {(e.expectation, e.column) for e in r.expectations}


def test_report_lists_every_table(good):
    wh, results = good
    text = report(wh)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line and not line.startswith(" ")}
    for name in table_names():  # every catalogued table is listed; those not checked here with "-"
        assert rows[name][1] == ("passed" if name in results else "-"), text
    assert text.endswith(f"data docs: {results['events'].data_docs_index}")
    assert set(load_results(reports_root(wh))) == set(results)


# ---- defects ----------------------------------------------------------------------------------
def test_a_label_outside_zero_one_fails_the_error_check(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "watch_time_labels", labels_rows([0.5, 1.5, -0.1]))
    r = check_table(spark, wh, "watch_time_labels", QualitySettings())
    assert not r.passed and not r.gx_passed
    assert failed(r)[("expect_column_values_to_be_between", "pcr")] == 2
    assert all(e.severity == ERROR for e in r.failures)
    assert "expect_column_values_to_be_between(pcr): 2 unexpected" in r.summary()


def test_a_duplicated_key_fails(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    rows = good_tables()["lookalike_users"]
    rows["user_id"] = ["u0", "u0"]  # (u0, 1) twice
    write(wh, "lookalike_users", rows)
    r = check_table(spark, wh, "lookalike_users", QualitySettings())
    assert not r.passed and not r.contract_passed
    assert failed(r) == {("expect_compound_columns_to_be_unique", "user_id,rank"): 2}


def test_hist_len_above_max_len_fails(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "user_sequences", good_tables()["user_sequences"])
    r = check_table(spark, wh, "user_sequences", QualitySettings(), params={"max_len": 1})
    assert not r.passed
    assert failed(r) == {("expect_column_values_to_be_between", "hist_len"): 1}
    assert check_table(spark, wh, "user_sequences", QualitySettings(), params={"max_len": 2}).passed


def test_rejection_rate_above_the_threshold_warns_and_does_not_block(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    # The first run's 50 % is history: only the latest run (10 %) is judged.
    write(wh, "ingest_runs", run_rows([("run1", 10, 5), ("run2", 100, 10)]))
    r = check_table(spark, wh, "ingest_runs", QualitySettings())
    assert r.passed and not r.failures
    assert [(e.column, e.unexpected_count, e.unexpected_sample) for e in r.warnings] == [("rejection_rate", 1, ["0.1"])]
    assert check_table(spark, wh, "ingest_runs", QualitySettings(max_rejection_rate=0.1)).warnings == []
    # An unbalanced run is an error.
    bad = run_rows([("run3", 100, 1)])
    bad["duplicates"] = [7]
    write(wh, "ingest_runs", bad)
    r = check_table(spark, wh, "ingest_runs", QualitySettings())
    assert not r.passed and failed(r) == {("expect_column_values_to_be_between", "unaccounted_records"): 1}


# ---- invariants -------------------------------------------------------------------------------
def test_invariants_are_checked_recorded_and_reported(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "user_sequences", good_tables()["user_sequences"])
    ok = check_table(spark, wh, "user_sequences", QualitySettings(), params=PARAMS,
                     invariants=lambda: {"rows": 3, "hist_after_target": 0})
    assert ok.passed and ok.invariants_passed and ok.invariants == {"rows": 3, "hist_after_target": 0}
    assert Path(ok.invariants_page).is_file() and ok.invariants_page in ok.validation_pages.values()
    bad = check_table(spark, wh, "user_sequences", QualitySettings(), params=PARAMS, run_name="run-2",
                      invariants=lambda: {"rows": 3, "hist_after_target": 2, "misaligned_lists": 0})
    assert not bad.passed and bad.gx_passed and not bad.invariants_passed
    assert bad.violations == {"hist_after_target": 2}
    assert "invariant hist_after_target: 2 violations" in bad.summary()
    page = Path(bad.invariants_page).read_text()
    assert "hist_after_target" in page and "Failed" in page
    stored = load_results(reports_root(wh))["user_sequences"]
    assert stored == bad
    text = render_report({"user_sequences": stored}, reports_root(wh), tables=["events", "user_sequences"])
    assert "invariant: hist_after_target: 2 violations" in text
    assert "1/2 failed" in text and text.splitlines()[1].split()[:2] == ["events", "-"]
    # a view (derived on read) has no check of its own: its line names the source that covers it,
    # and a result left by an earlier build that stored it is not shown as its verdict
    text = render_report({"user_sequences": stored, "rote_features": stored}, reports_root(wh),
                         tables=["user_sequences", "rote_features"], views={"rote_features": "user_sequences"})
    line = next(row for row in text.splitlines() if row.startswith("rote_features"))
    assert line.split()[1] == "view" and "derived on read from user_sequences" in line


def test_a_counter_that_raises_fails_the_check(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "users", good_tables()["users"])

    def broken() -> dict[str, int]:
        raise RuntimeError("no table")

    r = check_table(spark, wh, "users", QualitySettings(), invariants=broken)
    assert not r.passed and r.invariants == {"counter_failed": 1}
    assert any("RuntimeError: no table" in n for n in r.notes)


def test_version_band_fails_on_a_tenfold_jump(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "users", {"user_id": ["u0"], "source": ["test"]})
    write(wh, "users", {"user_id": [f"u{i}" for i in range(10)], "source": ["test"] * 10})
    r = check_table(spark, wh, "users", QualitySettings())
    assert r.passed  # the band of users is a warning
    assert [(e.batch, e.unexpected_sample) for e in r.warnings] == [("users_version_row_counts", ["10.0"])]


def test_catalog_contracts_are_the_lookup():
    assert [c.name for c in all_contracts()] == table_names()
    with pytest.raises(KeyError):
        contract("no_such_table")


def test_spark_engine_agrees_on_the_declared_kinds(spark, good):
    wh, results = good
    for name in ("rote_features", "duration_stats", "ingest_runs"):
        r = check_table(spark, wh, name, QualitySettings(engine="spark"), params=PARAMS)
        assert r.engine == "spark" and r.passed, r.summary()
        outcome = {(e.expectation, e.column, e.success, e.unexpected_count) for e in r.expectations}
        assert outcome == {(e.expectation, e.column, e.success, e.unexpected_count) for e in results[name].expectations}


def test_the_rote_features_view_of_good_user_sequences_passes_the_contract_suite(spark, good, tmp_path):
    """With ``sequences.rote_storage: view`` nothing stores rote_features; the rows it derives
    from the good user_sequences satisfy the same contract suite and the view's invariants."""
    from pipelines.sequences import SequenceSettings, check_rote_view, read_rote_arrow

    wh, _ = good
    settings = SequenceSettings(max_len=2)
    derived = read_rote_arrow(wh, settings)
    assert derived.num_rows == 3 and derived.column("hist_len").to_pylist() == [0, 1, 2]
    out = Warehouse(str(tmp_path / "derived"))
    out.write_arrow(contract("rote_features"), derived)
    r = check_table(spark, out, "rote_features", QualitySettings(), params=PARAMS)
    assert r.passed, r.summary()
    assert not {k: v for k, v in check_rote_view(spark, wh, settings).items() if v}


def test_on_pandas_a_suite_that_holds_is_validated_pass_or_fail(spark, tmp_path, monkeypatch):
    """In the process too, a suite that holds keeps its pass-or-fail result: the same outcomes
    as a detailed validation (0 unexpected for a strict map expectation), one stored result,
    and no unexpected values computed."""
    from pipelines.quality import gx_run

    wh = Warehouse(str(tmp_path / "warehouse"))
    for name, cols in good_tables().items():
        write(wh, name, cols)
    first = check_table(spark, wh, "events", QualitySettings(), params=PARAMS, run_name="first")
    (stored,) = _stored_results(wh, "events_quality")
    assert first.engine == "pandas" and first.passed, first.summary()
    assert not any("partial_unexpected_list" in x["result"] for x in stored["results"])
    monkeypatch.setattr(gx_run, "PASS_OR_FAIL", gx_run.DETAILED)  # every validation in detail
    detailed = check_table(spark, wh, "events", QualitySettings(), params=PARAMS, run_name="detailed")
    outcome = lambda r: sorted((e.batch, e.expectation, str(e.column), e.success, e.unexpected_count) for e in r.expectations)  # noqa: E731
    assert outcome(first) == outcome(detailed)
    assert any(e.unexpected_count == 0 for e in first.expectations if e.batch == "events")


def test_narrow_numbers_reach_gx_on_pandas_widened():
    """GX compares on pandas with NumPy only int64 and float64 columns (any other dtype value by
    value in Python): narrower ones are widened, with the same values; nulls, uint64 and
    timestamps are left as they were."""
    import numpy as np

    from pipelines.quality.frames import arrow_to_pandas

    t = pa.table({
        "i8": pa.array([1, -2], pa.int8()), "i32": pa.array([2**31 - 1, -(2**31)], pa.int32()),
        "u32": pa.array([2**32 - 1, 0], pa.uint32()), "u64": pa.array([2**64 - 1, 0], pa.uint64()),
        "f32": pa.array([0.1, None], pa.float32()), "n32": pa.array([None, 3], pa.int32()),
        "ts": pa.array([T0, None], pa.timestamp("us", tz="UTC")),
    })
    pdf = arrow_to_pandas(t)
    assert {c: str(pdf[c].dtype) for c in pdf.columns} == {
        "i8": "int64", "i32": "int64", "u32": "int64", "u64": "uint64", "f32": "float64", "n32": "float64",
        "ts": "datetime64[ns, UTC]"}
    assert pdf["i32"].tolist() == [2**31 - 1, -(2**31)] and pdf["u32"].tolist() == [2**32 - 1, 0]
    assert pdf["f32"][0] == np.float64(np.float32(0.1)) and np.isnan(pdf["f32"][1])


def test_in_the_process_the_counter_counts_beside_gx(spark, tmp_path, monkeypatch):
    """A check validated in the process runs its counter in a thread of its own while GX
    validates the suite: the counter here ends only after the suite was validated, which a
    counter run before GX could not do. Its counts are still validated and recorded, and the
    table is still read once."""
    import threading

    from pipelines.quality import check as check_module

    suite_validated = threading.Event()
    real = check_module.run_gx

    def spy(reports, batches, *args, later=None, **kwargs):
        def after_the_suite():
            suite_validated.set()
            return later()

        return real(reports, batches, *args, later=after_the_suite, **kwargs)

    monkeypatch.setattr(check_module, "run_gx", spy)
    wh = CountingWarehouse(str(tmp_path / "warehouse"))
    write(wh, "user_sequences", good_tables()["user_sequences"])
    wh.reads.clear()
    seen = {}

    def counter(warehouse):
        t = warehouse.read_arrow("user_sequences", columns=["hist_len"])
        seen["thread"] = threading.current_thread()
        seen["after_the_suite"] = suite_validated.wait(30)
        return {"rows": t.num_rows, "negative_hist_len": 0}

    r = check_table(spark, wh, "user_sequences", QualitySettings(), params=PARAMS, invariants=counter)
    assert r.engine == "pandas" and r.passed, r.summary()
    assert seen["thread"] is not threading.current_thread() and seen["after_the_suite"]
    assert r.invariants == {"rows": 3, "negative_hist_len": 0} and wh.reads == {"user_sequences": 1}
    (stored,) = _stored_results(wh, "user_sequences_invariants")
    assert stored["success"] and len(stored["results"]) == 2


def test_on_spark_the_counter_counts_first_in_the_calling_thread(spark, tmp_path):
    import threading

    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "user_sequences", good_tables()["user_sequences"])
    seen = []
    counter = lambda w: seen.append(threading.current_thread()) or {"rows": w.read_spark(spark, "user_sequences").count()}  # noqa: E731
    r = check_table(spark, wh, "user_sequences", QualitySettings(engine="spark"), params=PARAMS, invariants=counter)
    assert r.passed and seen == [threading.current_thread()] and r.invariants == {"rows": 3}


def test_a_failing_counter_in_its_thread_fails_the_check_and_ends(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "user_sequences", good_tables()["user_sequences"])

    def broken(warehouse):
        raise RuntimeError("counter broke")

    r = check_table(spark, wh, "user_sequences", QualitySettings(), params=PARAMS, invariants=broken)
    assert not r.passed and r.invariants == {"counter_failed": 1}
    assert any("RuntimeError: counter broke" in n for n in r.notes)


def test_gx_imported_ahead_in_a_thread_is_waited_for():
    """``preload_gx`` imports GX in a thread once per process; ``wait_for_gx`` waits for it (a
    fresh interpreter, where GX is not imported yet)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pipelines.quality.preload import preload_gx, wait_for_gx\n"
        "assert 'great_expectations' not in sys.modules\n"
        "assert preload_gx() is True and preload_gx() is False\n"
        "wait_for_gx()\n"
        "import pipelines.quality.preload as p\n"
        "assert p.SECONDS is not None and 'great_expectations.render.view.view' in sys.modules\n"
        "print('ok')\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---- one read per check -----------------------------------------------------------------------
class CountingWarehouse(Warehouse):
    """A real warehouse that counts the data reads of each table (Arrow, Spark, batches)."""

    def __init__(self, root: str):
        super().__init__(root)
        self.reads: dict[str, int] = {}

    def _count(self, table: str) -> None:
        self.reads[table] = self.reads.get(table, 0) + 1

    def read_arrow(self, table, *args, **kwargs):
        self._count(table)
        return super().read_arrow(table, *args, **kwargs)

    def read_spark(self, spark, table, *args, **kwargs):
        self._count(table)
        return super().read_spark(spark, table, *args, **kwargs)

    def iter_batches(self, table, *args, **kwargs):
        self._count(table)
        return super().iter_batches(table, *args, **kwargs)


def _spark_counter(spark):
    def count(warehouse):
        df = warehouse.read_spark(spark, "user_sequences")
        return {"rows": df.count(), "negative_hist_len": df.where("hist_len < 0").count()}

    return count


def _arrow_counter(warehouse):
    t = warehouse.read_arrow("user_sequences", columns=["hist_len"])
    return {"rows": t.num_rows, "negative_hist_len": sum(v < 0 for v in t.column("hist_len").to_pylist())}


@pytest.mark.parametrize("engine", ["auto", "spark"])
@pytest.mark.parametrize("counter", ["none", "arrow", "spark"])
def test_a_check_reads_its_table_once(spark, tmp_path, engine, counter):
    """The contract check, the GX frame and the invariant counter share one read of the table,
    whatever the engine and whichever API the counter reads with; the outcome is the same."""
    wh = CountingWarehouse(str(tmp_path / "warehouse"))
    write(wh, "user_sequences", good_tables()["user_sequences"])
    wh.reads.clear()
    invariants = {"none": None, "arrow": _arrow_counter, "spark": _spark_counter(spark)}[counter]
    r = check_table(spark, wh, "user_sequences", QualitySettings(engine=engine), params=PARAMS, invariants=invariants)
    assert wh.reads == {"user_sequences": 1}
    assert r.passed, r.summary()
    assert r.contract_details == {"rows": 3, "null_event_id": 0, "distinct_keys": 3}
    if counter != "none":
        assert r.invariants == {"rows": 3, "negative_hist_len": 0}


def test_the_events_check_reads_events_once_and_each_dimension_once(spark, tmp_path):
    wh = CountingWarehouse(str(tmp_path / "warehouse"))
    for name in ("events", "users", "items"):
        write(wh, name, good_tables()[name])
    wh.reads.clear()
    r = check_table(spark, wh, "events", QualitySettings())
    assert r.passed and r.engine == "pandas", r.summary()
    assert wh.reads == {"events": 1, "users": 1, "items": 1}


def test_a_counter_reading_another_version_or_table_reads_it_itself(spark, tmp_path):
    wh = CountingWarehouse(str(tmp_path / "warehouse"))
    write(wh, "users", {"user_id": ["u0"], "source": ["test"]})
    write(wh, "users", good_tables()["users"])
    write(wh, "items", good_tables()["items"])
    wh.reads.clear()

    def counter(warehouse):
        old = warehouse.read_arrow("users", version=wh.versions("users")[0])
        return {"rows": warehouse.read_arrow("users").num_rows, "old_rows": old.num_rows,
                "items": warehouse.read_arrow("items").num_rows - 2}

    r = check_table(spark, wh, "users", QualitySettings(), invariants=counter)
    assert r.invariants == {"rows": 2, "old_rows": 1, "items": 0}
    assert wh.reads == {"users": 2, "items": 1}  # the current version once, the old one once


def _defective_tables() -> dict[str, dict[str, list]]:
    """events, ingest_runs and user_sequences with defects in their derived columns."""
    g = good_tables()
    ev = dict(g["events"], user_id=["u0", "u9", "u0", "u1"], item_id=["i0", "i1", "i7", None],
              event_date=[D0, D0, D0, D1])
    seqs = dict(g["user_sequences"], hist_play_time_ms=[[], [-5], [1000, None]], target_date=[D0, D0, D1])
    runs = run_rows([("run1", 100, 2), ("run2", 100, 40)])
    runs["duplicates"] = [1, 0]
    return {"events": ev, "user_sequences": seqs, "ingest_runs": runs, "users": g["users"], "items": g["items"]}


@pytest.mark.parametrize("table", ["events", "user_sequences", "ingest_runs"])
def test_arrow_and_spark_preparation_find_the_same_defects(spark, tmp_path, table):
    """Small tables are prepared on Arrow (derived columns, referential integrity, contract
    counts); the Spark path (engine spark, or a counter that read with Spark) finds the same."""
    wh = Warehouse(str(tmp_path / "warehouse"))
    for name, cols in _defective_tables().items():
        write(wh, name, cols)
    runs = {
        "arrow": check_table(spark, wh, table, QualitySettings(), params=PARAMS),
        "spark": check_table(spark, wh, table, QualitySettings(engine="spark"), params=PARAMS),
        "spark-read, pandas": check_table(spark, wh, table, QualitySettings(), params=PARAMS,
                                          invariants=lambda w: {"rows": w.read_spark(spark, table).count()}),
    }
    outcome = {k: sorted((e.batch, e.expectation, str(e.column), e.severity, e.success, e.unexpected_count, tuple(sorted(e.unexpected_sample)))
                         for e in r.expectations) for k, r in runs.items()}
    assert outcome["arrow"] == outcome["spark-read, pandas"]  # pandas both: the same sample values too
    assert [e[:-1] for e in outcome["arrow"]] == [e[:-1] for e in outcome["spark"]]  # Spark prints longs as longs
    assert any(not e[4] for e in outcome["arrow"])  # the defects were found
    assert runs["arrow"].engine == "pandas" and runs["spark"].engine == "spark"
    details = {k: r.contract_details for k, r in runs.items()}
    assert details["arrow"] == details["spark"] == details["spark-read, pandas"]
    assert runs["arrow"].passed == runs["spark"].passed


def _stored_results(wh: Warehouse, suite: str) -> list[dict]:
    """The GX validation results of ``suite`` kept in the warehouse's result store (JSON)."""
    import json

    root = Path(reports_root(wh)) / "gx" / "_stores" / "validations" / suite
    return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]


def _spark_jobs(spark, group: str, fn):
    """``fn()`` and the ids of the Spark jobs it ran (counted with a job group)."""
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        out = fn()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return out, sc.statusTracker().getJobIdsForGroup(group)


def test_on_spark_a_suite_that_holds_is_validated_without_fetching_unexpected_values(spark, tmp_path, monkeypatch):
    """A Spark frame is validated pass-or-fail first (GX then runs no scan per map expectation
    for unexpected values): fewer Spark jobs than a detailed validation, the same outcomes (a
    strict map expectation that holds has 0 unexpected), and one stored result per run."""
    from pipelines.quality import gx_run

    wh = Warehouse(str(tmp_path / "warehouse"))
    for name, cols in good_tables().items():
        write(wh, name, cols)
    check = lambda run: check_table(spark, wh, "events", QualitySettings(engine="spark"), params=PARAMS, run_name=run)  # noqa: E731
    first, jobs = _spark_jobs(spark, "pass-or-fail", lambda: check("first"))
    monkeypatch.setattr(gx_run, "PASS_OR_FAIL", gx_run.DETAILED)  # every validation in detail, as before
    detailed, detailed_jobs = _spark_jobs(spark, "detailed", lambda: check("detailed"))
    assert first.passed and detailed.passed, first.summary()
    outcome = lambda r: sorted((e.batch, e.expectation, str(e.column), e.success, e.unexpected_count) for e in r.expectations)  # noqa: E731
    assert outcome(first) == outcome(detailed)
    assert any(e.unexpected_count == 0 for e in first.expectations if e.batch == "events")
    assert 0 < len(jobs) < len(detailed_jobs), (len(jobs), len(detailed_jobs))
    stored = _stored_results(wh, "events_quality")
    assert len(stored) == 2  # one per run


@pytest.mark.parametrize("engine", ["auto", "spark"])
def test_a_suite_that_fails_is_validated_again_in_detail(spark, tmp_path, engine):
    """On either engine, the failing suite's detailed result (counts, unexpected values)
    replaces the first, pass-or-fail one."""
    wh = Warehouse(str(tmp_path / "warehouse"))
    for name, cols in _defective_tables().items():
        write(wh, name, cols)
    r = check_table(spark, wh, "user_sequences", QualitySettings(engine=engine), params=PARAMS)
    assert not r.passed and r.engine == {"auto": "pandas", "spark": "spark"}[engine]
    bad = {e.column: (e.unexpected_count, e.unexpected_sample) for e in r.failures}
    count, sample = bad["hist_play_time_ms_min_element"]
    assert count == 1 and [float(v) for v in sample] == [-5.0], bad  # pandas holds it as a float (nulls)
    assert bad["target_date,target_ts_utc_date"][0] == 1, bad
    (stored,) = _stored_results(wh, "user_sequences_quality")  # the detailed result replaced the first
    failing = [x for x in stored["results"] if not x["success"]]
    assert failing and all("partial_unexpected_list" in x["result"] for x in failing)


@pytest.mark.parametrize("engine", ["auto", "spark"])
def test_a_list_column_only_checked_for_nulls_reaches_gx_as_its_lengths(spark, tmp_path, monkeypatch, engine):
    """Regression: the check of a 1,898,928-row ``user_vectors`` (in the process, under the row
    limit) collected every vector to the driver and failed on ``spark.driver.maxResultSize``.
    A list column that only a not-null expectation reads now reaches GX as its length."""
    from pipelines.quality import check as check_module

    frames = {}
    real = check_module.run_gx

    def spy(reports, batches, *args, **kwargs):
        frames.update({name: frame for name, _, _, frame in batches})
        return real(reports, batches, *args, **kwargs)

    monkeypatch.setattr(check_module, "run_gx", spy)
    wh = Warehouse(str(tmp_path / "warehouse"))
    for name in ("users", "user_vectors"):
        write(wh, name, good_tables()[name])
    r = check_table(spark, wh, "user_vectors", QualitySettings(engine=engine), params=PARAMS)
    assert r.passed, r.summary()
    frame = frames["user_vectors"]
    columns = frame.columns if engine == "auto" else [f.name for f in frame.schema.fields]
    assert "vector" in columns
    vectors = list(frame["vector"]) if engine == "auto" else [row.vector for row in frame.collect()]
    assert vectors == [2, 2]  # the lengths, not the lists
    assert any(e.expectation == "expect_column_values_to_not_be_null" and e.column == "vector" and e.success
               for e in r.expectations)


def test_lists_as_lengths_keeps_nulls_and_other_columns(spark):
    """A null list stays null (its not-null expectation still fails); a list column that another
    expectation reads, or none, is left as it is; Arrow and Spark give the same lengths."""
    from pipelines.quality.expectations import Expectation
    from pipelines.quality.frames import lists_as_lengths

    table = pa.table({"a": [[1, 2], None, []], "b": [[1], [2], None], "c": [[3], None, [4]], "n": [1, 2, 3]})
    exps = [Expectation("ExpectColumnValuesToNotBeNull", {"column": "a"}),
            Expectation("ExpectColumnValuesToNotBeNull", {"column": "b"}),
            Expectation("ExpectColumnValuesToBeUnique", {"column": "b"}),
            Expectation("ExpectColumnValuesToNotBeNull", {"column": "n"})]
    out = lists_as_lengths(table, exps)
    assert out.column("a").to_pylist() == [2, None, 0]
    assert out.column("b").to_pylist() == [[1], [2], None] and out.column("c").to_pylist() == [[3], None, [4]]
    assert out.column("n").to_pylist() == [1, 2, 3]
    df = lists_as_lengths(spark.createDataFrame(table.to_pandas()), exps)
    assert [r.a for r in df.orderBy("n").collect()] == [2, None, 0]
    assert [r.b for r in df.orderBy("n").collect()] == [[1], [2], None]


def test_rote_view_invariants_on_arrow_count_what_spark_counts(spark):
    """The view check counts on Arrow/NumPy; on defective rows it agrees with the Spark counts."""
    from pipelines.sequences.checks import rote_violations, rote_violations_arrow

    levels = ("day",)
    from features.sequences.rote import rote_table_schema

    schema = rote_table_schema(levels)
    cols = {
        "event_id": ["e0", "e1", "e2", "e3"], "user_id": ["u0"] * 4, "hist_len": [0, 2, 1, 1],
        "target_date": [D0] * 4,
    }
    rows = pa.table({f.name: cols.get(f.name) or _list_or_scalar(f, 4) for f in schema}, schema=schema)
    rows = rows.set_column(schema.names.index("gap_prev_s"), schema.field("gap_prev_s"),
                           pa.array([[], [0, -1], [5], [None]], schema.field("gap_prev_s").type))
    rows = rows.set_column(schema.names.index("query_ts_s"), schema.field("query_ts_s"), pa.array([0, 9, 1, 2], schema.field("query_ts_s").type))
    rows = rows.set_column(schema.names.index("target_ts_s"), schema.field("target_ts_s"), pa.array([1, 1, 1, 1], schema.field("target_ts_s").type))
    seqs = pa.table({"event_id": ["e0", "e1", "e2", "e9"], "hist_len": pa.array([0, 2, 3, 0], pa.int32())})
    want = rote_violations(spark.createDataFrame(rows), spark.createDataFrame(seqs), levels)
    got = rote_violations_arrow(rows, seqs, levels)
    assert got == want
    assert got["negative_gap_prev"] == 1 and got["query_after_target"] == 2 and got["rows_not_matching_user_sequences"] == 2


def _list_or_scalar(f: pa.Field, n: int) -> pa.Array:
    if pa.types.is_list(f.type):
        return pa.array([[]] + [[0, 0]] + [[0]] * (n - 2), f.type)
    return pa.array([0] * n, f.type)


@pytest.mark.parametrize("table", ["users", "events", "user_sequences"])
def test_a_small_table_is_checked_without_asking_for_spark(spark, tmp_path, table):
    """Given a session only on first use (``LazySession``, what a Dagster check step passes), a
    table small enough for the Arrow path never asks for it: its check neither starts nor waits
    for the JVM. With the Spark engine the session is asked for, once, and the result agrees."""
    from pipelines.spark import LazySession

    wh = Warehouse(str(tmp_path / "warehouse"))
    for name in ("events", "users", "items", "user_sequences"):
        write(wh, name, good_tables()[name])
    asked: list[int] = []

    def get():
        asked.append(1)
        return spark

    lazy = LazySession(get)
    r = check_table(lazy, wh, table, QualitySettings(), params=PARAMS)
    assert r.passed, r.summary()
    assert (asked, lazy.started) == ([], False)
    on_spark = check_table(LazySession(get), wh, table, QualitySettings(engine="spark"), params=PARAMS)
    assert asked == [1]
    assert on_spark.passed and on_spark.contract_details == r.contract_details


def test_a_lazy_session_knows_its_time_zone_without_starting():
    from pipelines.settings import SparkSettings
    from pipelines.spark import LazySession

    def never():
        raise AssertionError("the session was asked for")

    assert LazySession(never).time_zone == "UTC"
    zoned = SparkSettings(conf={"spark.sql.session.timeZone": "Europe/Paris"})
    assert LazySession(never, zoned).time_zone == "Europe/Paris"


def test_data_docs_templates_are_compiled_once_per_process(spark, tmp_path, monkeypatch):
    """GX builds a new Jinja environment per view; the shared bytecode cache means a second
    check compiles no template again, and its pages still render."""
    import jinja2

    from pipelines.quality.gx_run import TEMPLATE_CACHE

    compiled: list[str] = []
    original = jinja2.Environment.compile

    def counting(self, source, name=None, *args, **kwargs):
        compiled.append(name)
        return original(self, source, name, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    wh = Warehouse(str(tmp_path / "warehouse"))
    write(wh, "users", good_tables()["users"])
    TEMPLATE_CACHE.clear()
    first = check_table(spark, wh, "users", QualitySettings())
    assert compiled, "the first check renders its pages from compiled templates"
    compiled.clear()
    second = check_table(spark, wh, "users", QualitySettings())
    assert compiled == []
    page = Path(second.validation_page).read_text()
    assert first.passed and second.passed and "users_quality" in page


def _spark_extreme(values, func: str):
    """Spark's ``array_min`` / ``array_max`` of one list, written out: null for a null or empty
    list or one of nulls only, nulls skipped, NaN above every number."""
    import math

    if values is None:
        return None
    present = [v for v in values if v is not None]
    if not present:
        return None
    nan = [v for v in present if isinstance(v, float) and math.isnan(v)]
    numbers = [v for v in present if not (isinstance(v, float) and math.isnan(v))]
    if func == "array_max":
        return nan[0] if nan else max(numbers)
    return min(numbers) if numbers else nan[0]


_ELEMENTS = {
    "int64": st.integers(-2**62, 2**62),
    "int32": st.integers(-2**31, 2**31 - 1),
    "float64": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(float("nan"))),
}


@hsettings(max_examples=60, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(_ELEMENTS)), func=st.sampled_from(["array_min", "array_max"]))
def test_the_arrow_list_extreme_equals_spark_rules(data, kind, func):
    """The Arrow derivation of ``<col>_min_element`` / ``_max_element`` (one reduceat over the
    list values) against the rule written out, on sliced arrays with null and empty lists and
    null elements (hypothesis)."""
    import math

    from pipelines.quality.expectations import _array_extreme

    element = st.one_of(st.none(), _ELEMENTS[kind])
    rows = data.draw(st.lists(st.one_of(st.none(), st.lists(element, max_size=6)), max_size=12))
    start = data.draw(st.integers(0, len(rows)))
    lists = pa.array(rows, pa.list_(getattr(pa, kind)())).slice(start)
    got = _array_extreme("c", "o", func).arrow(pa.table({"c": lists})).column("o")
    assert got.type == getattr(pa, kind)()
    want = [_spark_extreme(r, func) for r in rows[start:]]
    same = [(g is None and w is None) or (g is not None and w is not None and (g == w or (math.isnan(g) and math.isnan(w))))
            for g, w in zip(got.to_pylist(), want)]
    assert len(got) == len(want) and all(same), (rows[start:], got.to_pylist(), want)
