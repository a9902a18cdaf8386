"""Jobs, the daily schedule and the new-source-file sensor.

The sensor stays a sensor: what it watches (the source's files) is outside Dagster, so no
automation condition can see it. What Dagster can see is declarative: the model assets
retrain by ``AutomationCondition`` when a table they read gets a new data version
(``orchestration.models.RETRAIN_CONDITION``, evaluated by the automation condition sensor
``retrain_models_automation``).
"""

import hashlib
import json
import os
import time

import dagster as dg

from features.events import EVENTS
from features.rejections import REJECTED_EVENTS
from orchestration.resources import SettingsResource
from pipelines.settings import Settings

INGEST_JOB = "daily_ingest"
REFRESH_JOB = "refresh_all"
#: Run tag naming the source an ingestion run reads (sensor, schedule, ``daily_ingest`` job and
#: ``recfeat materialize`` runs carry it); the sensor skips while such a run is in flight.
SOURCE_TAG = "recfeat/source"
#: Run statuses of a run that is queued or running.
IN_FLIGHT = (
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
)
#: The sensor's clock (seconds since the epoch); tests replace it.
clock = time.time


def partition_range_tags(partitions: dg.DailyPartitionsDefinition, start: str | None = None, end: str | None = None) -> dict[str, str]:
    """Tags that make one run cover a range of daily partitions (a single-run backfill)."""
    keys = partitions.get_partition_keys()
    if not keys:
        raise ValueError("the daily partitions definition has no partitions yet")
    return {
        "dagster/asset_partition_range_start": start or keys[0],
        "dagster/asset_partition_range_end": end or keys[-1],
    }


def build_jobs(assets: list[dg.AssetsDefinition], source: str | None = None) -> list:
    """The daily job (every daily-partitioned asset: ingestion, and incremental feature tables)
    and the refresh job (every unpartitioned asset). ``source``: the active source, tagged on
    every run of the daily job (:data:`SOURCE_TAG`)."""
    daily_keys = [k for a in assets if a.partitions_def is not None for k in a.keys]
    other_keys = [k for a in assets if a.partitions_def is None for k in a.keys]
    daily = dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.assets(*daily_keys),
        description="Ingest one day of source events into the events table, then build that day of every "
        "incremental (daily-partitioned) feature table, with their blocking checks.",
        tags={SOURCE_TAG: source} if source else None,
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


def in_flight_ingest_runs(instance, source: str) -> list[str]:
    """Ids of the queued or running runs that ingest ``source``: tagged with it, or running the
    ``ingest`` step (``events``) or the daily job without the tag (a launch from the UI)."""
    events = dg.AssetKey(EVENTS.name)
    found = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_FLIGHT)), limit=200):
        tagged = run.tags.get(SOURCE_TAG)
        if tagged == source or (
            tagged is None and (run.job_name == INGEST_JOB or events in (run.asset_selection or ()))
        ):
            found.append(run.run_id)
    return found


def _read_cursor(cursor: str | None) -> tuple[dict, dict]:
    """(files last requested, files seen since: name -> [size, mtime_ns, first seen at]).

    The cursor of earlier versions was the requested state alone."""
    data = json.loads(cursor) if cursor else {}
    if "requested" not in data:
        return data, {}
    return data["requested"], data.get("seen", {})


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
    as part of the range is harmless. The run also covers ``daily_keys`` (every
    daily-partitioned asset downstream of the events, such as incremental
    ``user_sequences``, with ``rote_features`` when it is stored), so a late event that the backfill brings in reaches
    them in the same run: an incremental sequences build rebuilds from the earliest day whose
    events changed (docs/sequences.md).

    Two guards: no run is requested while an ingestion run of the source is queued or running
    (:func:`in_flight_ingest_runs`; the change is seen again on the next tick), nor while a new
    or changed file has not yet kept its size and mtime for ``ingest.settle_s`` seconds (a file
    still being written; its last line would otherwise be read half written). The cursor holds
    the file state last requested and, for files that changed since, when this state was first
    seen.
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
        requested, seen = _read_cursor(context.cursor)
        changed = sorted(name for name, st in state.items() if requested.get(name) != st)
        if not changed:
            if seen:
                context.update_cursor(json.dumps({"requested": requested, "seen": {}}, sort_keys=True))
            return dg.SkipReason("no new or changed source files")
        now = clock()
        # When each changed file was first seen with its current size and mtime.
        seen = {
            name: seen[name] if seen.get(name, [None, None])[:2] == state[name] else [*state[name], now]
            for name in changed
        }
        context.update_cursor(json.dumps({"requested": requested, "seen": seen}, sort_keys=True))
        settling = sorted(name for name in changed if now - seen[name][2] < s.ingest.settle_s)
        if settling:
            return dg.SkipReason(
                f"waiting for {len(settling)} file(s) to keep their size and mtime for ingest.settle_s = "
                f"{s.ingest.settle_s:g} s: {', '.join(settling)[:200]}"
            )
        busy = in_flight_ingest_runs(context.instance, s.active_source)
        if busy:
            return dg.SkipReason(
                f"an ingestion run of {s.active_source!r} is in flight ({', '.join(busy[:3])}); "
                f"{len(changed)} changed file(s) wait for the next tick"
            )
        key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        context.update_cursor(json.dumps({"requested": state, "seen": {}}, sort_keys=True))
        return dg.RunRequest(
            run_key=key,
            asset_selection=keys,
            tags={
                **partition_range_tags(partitions),
                SOURCE_TAG: s.active_source,
                "recfeat/changed_files": ",".join(changed)[:200],
            },
        )

    return new_source_files

