"""Jobs, the daily schedule and the new-source-file sensor."""

import hashlib
import json
import os

import dagster as dg

from features.events import EVENTS
from features.rejections import REJECTED_EVENTS
from orchestration.resources import SettingsResource
from pipelines.settings import Settings

INGEST_JOB = "daily_ingest"
REFRESH_JOB = "refresh_all"


def partition_range_tags(partitions: dg.DailyPartitionsDefinition, start: str | None = None, end: str | None = None) -> dict[str, str]:
    """Tags that make one run cover a range of daily partitions (a single-run backfill)."""
    keys = partitions.get_partition_keys()
    if not keys:
        raise ValueError("the daily partitions definition has no partitions yet")
    return {
        "dagster/asset_partition_range_start": start or keys[0],
        "dagster/asset_partition_range_end": end or keys[-1],
    }


def build_jobs(assets: list[dg.AssetsDefinition]) -> list:
    """The daily job (every daily-partitioned asset: ingestion, and incremental feature tables)
    and the refresh job (every unpartitioned asset)."""
    daily_keys = [k for a in assets if a.partitions_def is not None for k in a.keys]
    other_keys = [k for a in assets if a.partitions_def is None for k in a.keys]
    daily = dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.assets(*daily_keys),
        description="Ingest one day of source events into the events table, then build that day of every "
        "incremental (daily-partitioned) feature table, with their blocking checks.",
    )
    refresh = dg.define_asset_job(
        REFRESH_JOB,
        selection=dg.AssetSelection.assets(*other_keys),
        description="Refresh the unpartitioned tables (sources, users, items, truth, full-build feature tables).",
    )
    return [daily, refresh]


def build_schedule(daily_job) -> dg.ScheduleDefinition:
    """Every day at 03:00 UTC, ingest the previous UTC day."""
    return dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=3, minute_of_hour=0, name="daily_ingest_schedule")


def source_file_state(settings: Settings) -> dict[str, list[int]]:
    """File name -> [size, mtime_ns] of the active source's event files ({} if none yet)."""
    from pipelines.sources import SourceError, adapter_for

    try:
        files = adapter_for(settings.active_source, settings.source).event_files()
    except SourceError:
        return {}
    state = {}
    for f in files:
        st = os.stat(f)
        state[os.path.basename(f)] = [st.st_size, st.st_mtime_ns]
    return state


def build_sensor(
    partitions: dg.DailyPartitionsDefinition, daily_keys: list[dg.AssetKey] | None = None
) -> dg.SensorDefinition:
    """Request an events backfill over the configured range when source files appear or change.

    Ingestion is idempotent (events are keyed by a stable id), so re-reading unchanged files
    as part of the range is harmless; the cursor holds the last seen file state. The run also
    covers ``daily_keys`` (every daily-partitioned asset downstream of the events, such as
    incremental ``user_sequences``/``rote_features``), so a late event that the backfill
    brings in reaches them in the same run: an incremental sequences build rebuilds from the
    earliest day whose events changed (docs/sequences.md).
    """
    keys = [dg.AssetKey(EVENTS.name), dg.AssetKey(REJECTED_EVENTS.name)]
    keys += [k for k in (daily_keys or []) if k not in keys]

    @dg.sensor(
        name="new_source_files",
        asset_selection=dg.AssetSelection.assets(*keys),
        minimum_interval_seconds=60,
        description="Ingest when the active source's files appear or change.",
    )
    def new_source_files(context: dg.SensorEvaluationContext, settings: SettingsResource):
        s = settings.get()
        state = source_file_state(s)
        if not state:
            return dg.SkipReason(f"no event files in {s.source.path} yet")
        previous = json.loads(context.cursor) if context.cursor else {}
        changed = sorted(name for name, st in state.items() if previous.get(name) != st)
        if not changed:
            return dg.SkipReason("no new or changed source files")
        key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        context.update_cursor(json.dumps(state, sort_keys=True))
        return dg.RunRequest(
            run_key=key,
            asset_selection=keys,
            tags={**partition_range_tags(partitions), "recfeat/changed_files": ",".join(changed)[:200]},
        )

    return new_source_files

