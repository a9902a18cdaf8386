"""Ingestion jobs: source files to ``events`` and ``rejected_events``; ``users`` and ``items``.

``ingest_events`` runs in two steps:

1. **Stage** (:mod:`pipelines.beam_ingest`, or the same logic on Spark with
   ``engine="spark"``): read every source file through its adapter, validate each record,
   assign stable event ids, de-duplicate within the run, and write accepted rows and dead
   letters to a stage directory, checking ``records in = accepted + rejected + duplicates``.
   A file that cannot be read, or a symbolic link that is not followed, is one dead letter.
2. **Commit** (Spark + the warehouse's atomic commit): read the committed ``events`` version
   once, count the accepted rows dated outside the run's window, and split the others with an
   ``event_id`` semi-join against that version into *already present* (not added) and *new*.
   The step checks ``accepted = new + already present + outside the window`` (and the stage's
   balance again) and fails, committing nothing, if not. Only the partitions that gain events
   are replaced (their committed rows plus the new ones), with ``base_version`` set to the
   version read, so a writer that committed in between makes the commit fail
   (:class:`~pipelines.warehouse.CommitConflict`) instead of being overwritten. A run with
   nothing new commits nothing to ``events``. Then the dead letters are appended to
   ``rejected_events`` (idempotent by ``rejection_id``) and the run is recorded in
   ``ingest_runs``.

Stage directories are ingestion's own temporary folders (``ingest-*`` under
``ingest.stage_root``, else ``<warehouse>/_tmp``, else the system temp dir). Each holds an
owner file locked (``flock``) for the life of its run; a run starts by removing the folders
whose lock is free (their run died, e.g. ``kill -9``) and, without an owner file, those older
than :data:`STALE_STAGE_SECONDS`. A running run's folder is never touched.

``repeated_lines`` says what an exact repeat of a line within one file is: ``duplicate`` (the
default; a ``duplicate`` dead letter) or ``distinct`` (an event of its own, for parity with the
published code). The mode is recorded in the producer of every ``events`` version; re-ingesting
a source under the other mode is refused, since the events already committed were counted the
other way.

Modules: :mod:`.results` (the result, errors), :mod:`.stage` (stage directories),
:mod:`.events` (the events job) and :mod:`.dimensions` (the users and items jobs).
"""
from __future__ import annotations

from features.timeutil import DateWindow
from pipelines.ingest.dimensions import ingest_dimension, merge_dimension
from pipelines.ingest.events import (
    APPEND_TRIES,
    commit_rejections,
    ingest_events,
    ingest_with_settings,
    record_run,
)
from pipelines.ingest.results import DimensionSchemaError, IngestModeError, IngestResult
from pipelines.ingest.stage import (
    STAGE_OWNER_FILE,
    STAGE_PREFIX,
    STALE_STAGE_SECONDS,
    StageDir,
    clean_stale_stage_dirs,
    new_stage_dir,
    stage_base,
)

__all__ = [
    "APPEND_TRIES", "STAGE_OWNER_FILE", "STAGE_PREFIX", "STALE_STAGE_SECONDS", "DateWindow", "DimensionSchemaError",
    "IngestModeError", "IngestResult", "StageDir", "clean_stale_stage_dirs", "commit_rejections", "ingest_dimension",
    "ingest_events", "ingest_with_settings", "merge_dimension", "new_stage_dir", "record_run", "stage_base",
]  # fmt: skip
