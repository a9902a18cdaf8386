"""trainers.tables, the one reader: the committed version only, the contract check, projection,
pruning and the record of what was read."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from features.dimensions import USERS
from features.events import TS_TYPE
from features.labels import DURATION_STATS, WATCH_TIME_LABELS
from features.snapshots import delta_uri
from trainers.tables import iter_batches, open_table, snapshot


def test_reads_the_committed_version_only(warehouse):
    warehouse.write_arrow(USERS, pa.table({"user_id": ["a", "b"], "source": ["s", "s"]}))
    warehouse.write_arrow(USERS, pa.table({"user_id": ["c"], "source": ["s"]}))
    snap = open_table(warehouse.uri, USERS)
    assert snap.version == 2 and snap.contract is USERS
    rows = [r for b in iter_batches(warehouse.uri, USERS) for r in b.to_pylist()]
    assert rows == [{"user_id": "c", "source": "s"}]
    old = [r["user_id"] for b in iter_batches(warehouse.uri, USERS, version=1) for r in b.to_pylist()]
    assert sorted(old) == ["a", "b"]
    assert snapshot(warehouse.uri, "users").version == 2  # by name: the version only


def _stats_row(duration_s: int) -> dict:
    day = dt.date(2022, 4, 25)
    return {
        "duration_s": duration_s, "rows": 3, "wt_mean_s": 1.0, "wt_std_s": 0.5, "noise_wt_s": 0.0, "interest_wt_s": 2.0,
        "noise_wt_smoothed_s": 0.0, "interest_wt_smoothed_s": 2.0, "d2q_bin": 0, "fit_start": day,
        "fit_end": day + dt.timedelta(days=1), "fit_status": "fitted", "is_interpolated": False,
        "long_view_cwm_threshold_s": 1.0,
    }


def test_refuses_a_table_that_breaks_its_contract(warehouse):
    """A Delta table another writer replaced with a mistyped column fails on open, naming the
    table, the version and the column; the version before it still reads."""
    good = pa.Table.from_pylist([_stats_row(5), _stats_row(6)], schema=DURATION_STATS.schema)
    warehouse.write_arrow(DURATION_STATS, good)
    bad = good.set_column(good.schema.get_field_index("rows"), "rows", pa.array(["3", "3"]))  # int64 -> string
    write_deltalake(delta_uri(warehouse.uri, DURATION_STATS.name), bad, mode="overwrite", schema_mode="overwrite")

    with pytest.raises(ValueError, match=r"^table 'duration_stats' v2 breaks its contract: column 'rows' has type string, expected int64$"):
        open_table(warehouse.uri, DURATION_STATS)
    with pytest.raises(ValueError, match="breaks its contract"):
        next(iter_batches(warehouse.uri, DURATION_STATS, ["duration_s"]))
    assert open_table(warehouse.uri, DURATION_STATS, version=1).version == 1


def test_refuses_a_missing_column_and_one_the_contract_does_not_name(warehouse):
    good = pa.Table.from_pylist([_stats_row(5)], schema=DURATION_STATS.schema)
    warehouse.write_arrow(DURATION_STATS, good)
    with pytest.raises(ValueError, match=r"columns \['no_such'\] are not in its contract"):
        next(open_table(warehouse.uri, DURATION_STATS).batches(["duration_s", "no_such"]))
    write_deltalake(delta_uri(warehouse.uri, DURATION_STATS.name), good.drop_columns(["wt_std_s"]), mode="overwrite",
                    schema_mode="overwrite")
    with pytest.raises(ValueError, match="column 'wt_std_s' is missing"):
        open_table(warehouse.uri, DURATION_STATS)


def test_projects_columns_prunes_partitions_and_records_the_read(warehouse):
    schema = WATCH_TIME_LABELS.schema
    rows = []
    for k, day in enumerate([dt.date(2022, 4, 25), dt.date(2022, 4, 26), dt.date(2022, 4, 27)]):
        row = {f.name: (False if pa.types.is_boolean(f.type) else 0) for f in schema}
        row.update(event_id=f"e{k}", user_id="u", item_id="i", event_date=day,
                   event_ts=dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc))
        rows.append({f.name: (float(row[f.name]) if pa.types.is_floating(f.type) else row[f.name]) for f in schema})
    assert schema.field("event_ts").type == TS_TYPE
    warehouse.write_arrow(WATCH_TIME_LABELS, pa.Table.from_pylist(rows, schema=schema))
    snap = open_table(warehouse.uri, WATCH_TIME_LABELS)
    assert snap.days() == [dt.date(2022, 4, 25), dt.date(2022, 4, 26), dt.date(2022, 4, 27)]
    parts = snap.partitions_between(dt.date(2022, 4, 26), dt.date(2022, 4, 28))
    assert parts == ["2022-04-26", "2022-04-27"]
    got = pa.Table.from_batches(list(snap.batches(["event_id", "event_date"], parts)))
    assert got.column_names == ["event_id", "event_date"]
    assert sorted(got.column("event_id").to_pylist()) == ["e1", "e2"]
    record = snap.record(parts)
    assert record["version"] == snap.version == 1 and record["rows"] == 3
    assert record["partitions_read"] == parts and record["committed_at"]


def test_a_name_resolves_the_version_but_is_not_read(warehouse):
    warehouse.write_arrow(USERS, pa.table({"user_id": ["a"], "source": ["s"]}))
    with pytest.raises(TypeError, match="through its contract"):
        next(snapshot(warehouse.uri, "users").batches(["user_id"]))
    with pytest.raises(TypeError, match="table contract"):
        open_table(warehouse.uri, "users")
    with pytest.raises(FileNotFoundError, match="no committed version"):
        open_table(warehouse.uri, DURATION_STATS)
