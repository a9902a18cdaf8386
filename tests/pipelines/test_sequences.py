"""The user_sequences and rote_features jobs: full and incremental builds, k-core, invariants,
and the two rote_features storage modes (a view derived on read, or a stored table)."""
from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pytest

from features.events import EVENTS, FEEDBACK_FLAGS
from features.sequences import ROTE_FEATURES
from features.sequences.rote import rote_features, to_epoch_seconds
from features.sequences import USER_SEQUENCES
from pipelines.sequences import build_sequences_table, check_rote, check_rote_view, check_sequences
from pipelines.sequences import SequenceSettings, read_rote_arrow, read_rote_spark, stored_fingerprints
from pipelines.warehouse import Warehouse

UTC = dt.timezone.utc
DAY0 = dt.date(2022, 4, 8)


def events_table(n_days: int = 3, per_day: int = 40, seed: int = 7) -> pa.Table:
    """A small log over ``n_days`` UTC days: 5 users, 6 items, many ties in time."""
    rnd = random.Random(seed)
    rows = []
    for d in range(n_days):
        day = dt.datetime.combine(DAY0 + dt.timedelta(days=d), dt.time(), UTC)
        for i in range(per_day):
            ts = day + dt.timedelta(minutes=rnd.choice([0, 0, 5, 30, 600, 1439]))
            rows.append(
                {
                    "event_id": f"e{d}-{i:03d}",
                    "source": "test",
                    "user_id": f"u{rnd.randrange(5)}",
                    "item_id": f"i{rnd.randrange(6)}",
                    "event_ts": ts,
                    "play_time_ms": 1000 * i,
                    "duration_ms": 60_000,
                    "rating": None,
                    **{f: None for f in FEEDBACK_FLAGS},
                    "event_date": ts.date(),
                    "source_file": f"log{d}.csv",
                    "source_line": i + 1,
                }
            )
    return pa.Table.from_pylist(rows, schema=pa.schema([pa.field(f.name, f.type) for f in EVENTS.schema]))


def temporal(**kw) -> SequenceSettings:
    base = dict(
        max_len=3,
        split="temporal",
        valid_from=dt.datetime(2022, 4, 9, tzinfo=UTC),
        test_from=dt.datetime(2022, 4, 10, tzinfo=UTC),
    )
    return SequenceSettings(**{**base, **kw})


def rows_by_id(wh: Warehouse, table: str) -> dict[str, dict]:
    return {r["event_id"]: r for r in wh.read_arrow(table).to_pylist()}


def test_incremental_days_equal_the_full_build_and_leave_earlier_partitions_untouched(spark, tmp_path):
    full_wh = Warehouse(str(tmp_path / "full"))
    full_wh.write_arrow(EVENTS, events_table())
    build_sequences_table(spark, full_wh, temporal())

    wh = Warehouse(str(tmp_path / "incremental"))
    wh.write_arrow(EVENTS, events_table())
    settings = temporal(build="incremental")
    entries = {}
    for d in range(3):
        day = DAY0 + dt.timedelta(days=d)
        manifest = build_sequences_table(spark, wh, settings, day, day + dt.timedelta(days=1)).manifest(USER_SEQUENCES.name)
        assert manifest.written_partitions == (day.isoformat(),)
        for earlier, entry in entries.items():
            assert manifest.partitions[earlier] == entry, f"partition {earlier} was rewritten by the build of {day}"
        entries = dict(manifest.partitions)
    assert rows_by_id(wh, USER_SEQUENCES.name) == rows_by_id(full_wh, USER_SEQUENCES.name)
    assert all(v == 0 for k, v in check_sequences(spark, wh, settings).items() if k != "rows")

    # Re-running a day gives the same rows; the other partitions keep their files.
    before = rows_by_id(wh, USER_SEQUENCES.name)
    again = build_sequences_table(spark, wh, settings, DAY0 + dt.timedelta(days=2), DAY0 + dt.timedelta(days=3)).manifest(USER_SEQUENCES.name)
    assert again.partitions["2022-04-08"] == entries["2022-04-08"]
    assert rows_by_id(wh, USER_SEQUENCES.name) == before


def test_incremental_build_needs_a_window(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    wh.write_arrow(EVENTS, events_table(n_days=1))
    with pytest.raises(ValueError, match="window"):
        build_sequences_table(spark, wh, temporal(build="incremental"))


def test_full_build_with_k_core_and_rote_features(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    events = events_table()
    wh.write_arrow(EVENTS, events)
    settings = SequenceSettings(max_len=4, k_core={"min_user_events": 20, "min_item_events": 10}, rote_storage="table")
    manifest = build_sequences_table(spark, wh, settings).manifest(USER_SEQUENCES.name)
    assert manifest.producer["k_core_passes"] != "0"
    seqs = wh.read_arrow(USER_SEQUENCES.name)
    # Every remaining user and item meets its bound within the kept rows.
    users = seqs.group_by("user_id").aggregate([("event_id", "count")]).to_pylist()
    items = seqs.group_by("target_item_id").aggregate([("event_id", "count")]).to_pylist()
    assert users and all(u["event_id_count"] >= 20 for u in users)
    assert all(i["event_id_count"] >= 10 for i in items)
    assert seqs.num_rows < events.num_rows
    assert all(v == 0 for k, v in check_sequences(spark, wh, settings).items() if k != "rows")

    rote = rows_by_id(wh, ROTE_FEATURES.name)
    assert set(rote) == {r["event_id"] for r in seqs.to_pylist()}
    assert all(v == 0 for k, v in check_rote(spark, wh, settings).items() if k != "rows")
    # The stored lists equal features/sequences/rote.py applied to the row's own history.
    for row in [r for r in seqs.to_pylist() if r["hist_len"]][:40]:
        hist = to_epoch_seconds(pa.array(row["hist_ts"], pa.timestamp("us", tz="UTC")))
        target = to_epoch_seconds(pa.array([row["target_ts"]], pa.timestamp("us", tz="UTC")))
        ref = rote_features(hist[None, :], target)
        got = rote[row["event_id"]]
        assert got["hist_len"] == row["hist_len"]
        assert got["hist_day_id"] == list(ref["hist_day_id"][0])
        assert got["hist_month_id_rel"] == list(ref["hist_month_id_rel"][0])
        assert got["gap_to_target_s"] == list(ref["gap_to_target_s"][0])
        assert got["target_year_id"] == int(ref["target_year_id"][0])
        assert got["query_ts_s"] == int(ref["query_ts_s"][0])


def test_incremental_rote_features_cover_only_the_window(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    wh.write_arrow(EVENTS, events_table(n_days=2))
    settings = temporal(build="incremental", rote_levels=["day", "hour"], rote_storage="table")
    for d in range(2):
        day = DAY0 + dt.timedelta(days=d)
        manifest = build_sequences_table(spark, wh, settings, day, day + dt.timedelta(days=1)).manifest(ROTE_FEATURES.name)
        assert manifest.written_partitions == (day.isoformat(),)
    names = wh.read_arrow(ROTE_FEATURES.name).schema.names
    assert "hist_hour_id" in names and "hist_year_id" not in names
    assert all(v == 0 for k, v in check_rote(spark, wh, settings).items() if k != "rows")


def _late_event(events: pa.Table, day: int, user: str = "u1", minute: int = 3) -> pa.Table:
    """``events`` plus one event for ``DAY0 + day`` (it arrives after that day was built)."""
    ts = dt.datetime.combine(DAY0 + dt.timedelta(days=day), dt.time(), UTC) + dt.timedelta(minutes=minute)
    row = {f.name: None for f in EVENTS.schema}
    row.update(event_id=f"late-{day}-{user}-{minute}", source="test", user_id=user, item_id="i2", event_ts=ts,
               play_time_ms=5, duration_ms=60_000, event_date=ts.date(), source_file="late.csv", source_line=1)
    return pa.concat_tables([events, pa.Table.from_pylist([row], schema=events.schema)])


def _full_rows(spark, tmp_path, events: pa.Table, name: str) -> dict[str, dict]:
    wh = Warehouse(str(tmp_path / name))
    wh.write_arrow(EVENTS, events)
    build_sequences_table(spark, wh, temporal())
    return rows_by_id(wh, USER_SEQUENCES.name)


def _build_day(spark, wh, day: int, settings=None):
    d = DAY0 + dt.timedelta(days=day)
    return build_sequences_table(spark, wh, settings or temporal(build="incremental"), d, d + dt.timedelta(days=1))


def _three_built_days(spark, tmp_path):
    """A warehouse whose three days of events were built one incremental day at a time."""
    wh = Warehouse(str(tmp_path / "inc"))
    events = events_table()
    wh.write_arrow(EVENTS, events)
    for d in range(3):
        _build_day(spark, wh, d)
    return wh, events


def _assert_clean(spark, wh, settings):
    bad = {k: v for k, v in check_sequences(spark, wh, settings).items() if k != "rows" and v}
    assert not bad, bad
    rote = check_rote(spark, wh, settings) if settings.rote_storage == "table" else check_rote_view(spark, wh, settings)
    assert not {k: v for k, v in rote.items() if k != "rows" and v}


def test_late_event_for_a_built_day_is_carried_into_every_later_day(spark, tmp_path):
    """Regression: a late event for a built day never became a target row and every later
    ``seq_pos`` of its user was off by one. The next daily build now rebuilds from that day."""
    settings = temporal(build="incremental")
    wh, events = _three_built_days(spark, tmp_path)
    late = _late_event(events, 0)
    wh.write_arrow(EVENTS, late)  # a later ingestion commit adds the event to 2022-04-08
    manifest = _build_day(spark, wh, 2).manifest(USER_SEQUENCES.name)  # the daily job re-runs the last day
    assert manifest.producer["stale_days"] == "2022-04-08"
    assert manifest.written_partitions == ("2022-04-08", "2022-04-09", "2022-04-10")
    assert rows_by_id(wh, USER_SEQUENCES.name) == _full_rows(spark, tmp_path, late, "full")
    _assert_clean(spark, wh, settings)


def test_rerunning_an_earlier_day_alone_rebuilds_the_later_days(spark, tmp_path):
    """Regression: re-running one earlier day left later partitions stale (two rows with the same
    ``seq_pos``); now the later built days are rebuilt with it."""
    settings = temporal(build="incremental")
    wh, events = _three_built_days(spark, tmp_path)
    late = _late_event(_late_event(events, 1, "u2"), 1, "u3", 7)
    wh.write_arrow(EVENTS, late)
    manifest = _build_day(spark, wh, 1).manifest(USER_SEQUENCES.name)
    assert manifest.written_partitions == ("2022-04-09", "2022-04-10")
    assert rows_by_id(wh, USER_SEQUENCES.name) == _full_rows(spark, tmp_path, late, "full")
    _assert_clean(spark, wh, settings)
    # Nothing new: a re-run commits nothing.
    version = wh.current_version(USER_SEQUENCES.name)
    _build_day(spark, wh, 1)
    assert wh.current_version(USER_SEQUENCES.name) == version


def test_a_missing_earlier_partition_is_built_before_the_requested_day(spark, tmp_path):
    settings = temporal(build="incremental")
    wh = Warehouse(str(tmp_path / "inc"))
    events = events_table()
    wh.write_arrow(EVENTS, events)
    _build_day(spark, wh, 0)
    manifest = _build_day(spark, wh, 2).manifest(USER_SEQUENCES.name)  # day 1 was never built
    assert manifest.producer["missing_days"] == "2022-04-09"
    assert manifest.written_partitions == ("2022-04-09", "2022-04-10")
    assert rows_by_id(wh, USER_SEQUENCES.name) == _full_rows(spark, tmp_path, events, "full")
    _assert_clean(spark, wh, settings)


def test_a_settings_change_rebuilds_every_day(spark, tmp_path):
    wh, _ = _three_built_days(spark, tmp_path)
    wider = temporal(build="incremental", max_len=5)
    manifest = _build_day(spark, wh, 2, wider).manifest(USER_SEQUENCES.name)
    assert manifest.written_partitions == ("2022-04-08", "2022-04-09", "2022-04-10")
    assert max(r["hist_len"] for r in rows_by_id(wh, USER_SEQUENCES.name).values()) > 3


def test_coverage_check_counts_lost_and_duplicated_rows(spark, tmp_path):
    """The blocking invariants catch what a stale incremental build left behind."""
    settings = temporal()
    wh = Warehouse(str(tmp_path / "w"))
    events = events_table()
    wh.write_arrow(EVENTS, events)
    build_sequences_table(spark, wh, settings)
    assert check_sequences(spark, wh, settings)["days_where_target_rows_differ_from_events"] == 0
    seqs = wh.read_arrow(USER_SEQUENCES.name)
    # An event the table never saw, and a row whose seq_pos repeats its user's previous one.
    wh.write_arrow(EVENTS, _late_event(events, 0))
    rows = seqs.to_pylist()
    first = next(r for r in rows if r["seq_pos"] == 1)
    rows = [dict(r, seq_pos=0) if r is first else r for r in rows]
    wh.write_arrow(USER_SEQUENCES, pa.Table.from_pylist(rows, schema=seqs.schema))
    counts = check_sequences(spark, wh, settings)
    assert counts["events_without_target_row"] == 1
    assert counts["days_where_target_rows_differ_from_events"] == 1
    assert counts["seq_pos_duplicated"] == 2
    assert counts["users_with_seq_pos_gaps"] == 1
    assert counts["target_rows_without_event"] == 0


def test_require_flags_keeps_only_flagged_events(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    events = events_table()
    clicks = pa.array([i % 3 == 0 for i in range(events.num_rows)])
    events = events.set_column(events.schema.get_field_index("is_click"), "is_click", clicks)
    wh.write_arrow(EVENTS, events)
    settings = SequenceSettings(max_len=4, require_flags=["is_click"])
    build_sequences_table(spark, wh, settings)
    got = rows_by_id(wh, USER_SEQUENCES.name)
    assert set(got) == {e for e, c in zip(events.column("event_id").to_pylist(), clicks.to_pylist()) if c}
    _assert_clean(spark, wh, settings)


def test_an_incremental_build_before_any_event_commits_empty_tables(spark, tmp_path):
    """Nothing built yet and no event on or before the window: empty partitions are committed
    (regression: the no-op path read a manifest that did not exist)."""
    wh = Warehouse(str(tmp_path / "inc"))
    wh.write_arrow(EVENTS, events_table(n_days=1))
    early = DAY0 - dt.timedelta(days=3)
    out = build_sequences_table(spark, wh, temporal(build="incremental", rote_storage="table"), early,
                                early + dt.timedelta(days=1))
    assert out.manifest(USER_SEQUENCES.name).row_count == 0 and out.manifest(ROTE_FEATURES.name).row_count == 0
    assert read_rote_arrow(wh, temporal()).num_rows == 0  # the view of the empty table is empty, with its schema


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by("event_id")


def test_the_view_derives_exactly_the_rows_the_table_mode_stores(spark, tmp_path):
    """Same events, both modes: the view's rows (Arrow and Spark read paths) equal the stored
    table's, column for column and type for type; the view mode commits no rote_features."""
    events = events_table()
    kw = dict(max_len=4, rote_levels=["year", "day", "hour"])
    stored_wh, view_wh = Warehouse(str(tmp_path / "table")), Warehouse(str(tmp_path / "view"))
    for wh in (stored_wh, view_wh):
        wh.write_arrow(EVENTS, events)
    table_mode, view_mode = SequenceSettings(**kw, rote_storage="table"), SequenceSettings(**kw)
    assert view_mode.rote_storage == "view"  # the default
    build_sequences_table(spark, stored_wh, table_mode)
    result = build_sequences_table(spark, view_wh, view_mode)
    assert set(result.manifests) == {USER_SEQUENCES.name} and not view_wh.exists(ROTE_FEATURES.name)
    assert rows_by_id(view_wh, USER_SEQUENCES.name) == rows_by_id(stored_wh, USER_SEQUENCES.name)

    want = _sorted(stored_wh.read_arrow(ROTE_FEATURES.name))
    got = _sorted(read_rote_arrow(view_wh, view_mode))
    assert got.num_rows == events.num_rows and got.schema.names == want.schema.names
    assert [f.type for f in got.schema] == [f.type for f in want.schema]
    assert got.to_pylist() == want.to_pylist()
    spark_rows = _sorted(pa.Table.from_pandas(read_rote_spark(spark, view_wh, view_mode).toPandas(), preserve_index=False))
    assert spark_rows.column("event_id").to_pylist() == want.column("event_id").to_pylist()
    for name in ("hist_day_id", "hist_hour_id_rel", "gap_prev_s", "gap_to_target_s", "query_ts_s", "target_year_id"):
        assert [list(v) if hasattr(v, "__len__") else v for v in spark_rows.column(name).to_pylist()] == \
            want.column(name).to_pylist(), name
    # A partition and a column subset; an unknown column is named.
    day = read_rote_arrow(view_wh, view_mode, partitions=["2022-04-09"], columns=["event_id", "hist_day_id"])
    assert day.schema.names == ["event_id", "hist_day_id"] and day.num_rows == 40
    with pytest.raises(KeyError, match="hist_week_id"):
        read_rote_arrow(view_wh, view_mode, columns=["hist_week_id"])
    assert not {k: v for k, v in check_rote_view(spark, view_wh, view_mode).items() if v}
    # A bounded sample (a hash of event_id) is checked the same way.
    assert not {k: v for k, v in check_rote_view(spark, view_wh, view_mode, sample_rows=10).items() if v}
    with pytest.raises(ValueError, match="sample_rows"):
        check_rote_view(spark, view_wh, view_mode, sample_rows=0)


def test_the_view_follows_the_user_sequences_version_asked_for(spark, tmp_path):
    wh = Warehouse(str(tmp_path / "w"))
    wh.write_arrow(EVENTS, events_table(n_days=1))
    settings = temporal()
    build_sequences_table(spark, wh, settings)
    first = wh.current_version(USER_SEQUENCES.name)
    wh.write_arrow(EVENTS, events_table(n_days=2))
    build_sequences_table(spark, wh, settings)
    assert read_rote_arrow(wh, settings, version=first).num_rows == 40
    assert read_rote_arrow(wh, settings).num_rows == 80


def test_incremental_planning_reads_rote_features_only_when_it_is_stored(spark, tmp_path):
    """View mode: a day is built once user_sequences has it (no rote_features table is needed,
    and a re-run commits nothing). Table mode: a day missing from rote_features is not built."""
    view = temporal(build="incremental")
    wh, _ = _three_built_days(spark, tmp_path)  # view mode, the default
    assert not wh.exists(ROTE_FEATURES.name)
    stored, built = stored_fingerprints(wh, view)
    assert set(stored) == built == {"2022-04-08", "2022-04-09", "2022-04-10"}
    version = wh.current_version(USER_SEQUENCES.name)
    assert _build_day(spark, wh, 2).stats[USER_SEQUENCES.name]["build/window"].startswith("nothing to do")
    assert wh.current_version(USER_SEQUENCES.name) == version
    _assert_clean(spark, wh, view)

    table = temporal(build="incremental", rote_storage="table")
    twh = Warehouse(str(tmp_path / "table"))
    twh.write_arrow(EVENTS, events_table())
    for d in range(3):
        _build_day(spark, twh, d, table)
    assert set(stored_fingerprints(twh, table)[0]) == {"2022-04-08", "2022-04-09", "2022-04-10"}
    # rote_features loses its last day (as a crash between the two commits would leave it):
    twh.write_arrow(ROTE_FEATURES, twh.read_arrow(ROTE_FEATURES.name).slice(0, 0), replace_partitions=["2022-04-10"])
    assert "2022-04-10" not in twh.manifest(ROTE_FEATURES.name).partitions
    assert set(stored_fingerprints(twh, table)[0]) == {"2022-04-08", "2022-04-09"}
    # Switching that warehouse to the view rebuilds nothing: every user_sequences day counts.
    assert set(stored_fingerprints(twh, view)[0]) == {"2022-04-08", "2022-04-09", "2022-04-10"}
    manifest = _build_day(spark, twh, 2, table).manifest(ROTE_FEATURES.name)
    assert manifest.written_partitions == ("2022-04-10",)
    _assert_clean(spark, twh, table)


def test_a_bad_rote_storage_fails_naming_the_field(tmp_path):
    from pipelines.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="sequences.rote_storage"):
        load_settings(None, overrides={"sequences.rote_storage": "wide"})
    assert load_settings(None).sequences.rote_storage == "view"
