"""The synthetic source: KuaiRand-format logs with a known ground truth (see ``docs/synthetic.md``).

:func:`generate` writes, into one directory,

* ``log_standard_YYYYMMDD_synthetic.csv``: one plain CSV per UTC day of the window, in the
  official KuaiRand log format (:data:`LOG_COLUMNS`);
* ``user_features_synthetic.csv`` and ``video_features_basic_synthetic.csv``: user and video
  attributes with the headers of KuaiRand's ``user_features_pure.csv`` and
  ``video_features_basic_pure.csv``;
* ``truth/ground_truth.parquet``: what real logs never have, one row per impression
  (:data:`features.synthetic_truth.RAW_TRUTH_SCHEMA`): its latent interest and how its play time
  was produced, joined to the logs by ``(source_file, source_line)``.

The simulated model (users, videos, latent interest, noisy and engaged plays with duration
bias, truncation and replays, sessions) is documented with every parameter in
``docs/synthetic.md``. The size and window come from the settings' ``synthetic`` section
(:class:`pipelines.settings.SyntheticSettings`); :class:`SimulationModel` holds the model's
parameters and their defaults. ``recfeat generate`` is the command line.

Determinism: every random draw comes from a PCG64 generator derived with ``SeedSequence`` from
``(seed, stream, block)``, where a block is a fixed-size range of users (:data:`USER_BLOCK`) or
videos (:data:`ITEM_BLOCK`); the same parameters give byte-identical files, whatever
``users_per_chunk`` (which only sets how many users are buffered before a write).

Memory: per-user event counts (O(users)) and video attributes (O(videos)) are held; events are
simulated in batches of at most :data:`BATCH_EVENTS` events (one user with more events is a
batch of its own; a user has at most :data:`MAX_EVENTS_PER_USER`) and written as they are made.

Modules: :mod:`.model` (file formats, constants, :class:`SimulationModel`), :mod:`.attributes`
(random streams, per-user counts, videos, user attributes), :mod:`.simulate` (the events) and
:mod:`.writer` (the files and :func:`generate`).
"""
from __future__ import annotations

from pipelines.synthetic.model import (
    BATCH_EVENTS,
    DAY_MS,
    HOUR_MS,
    ITEM_BLOCK,
    ITEM_FILE,
    KUAIRAND_HOURLY_ACTIVITY,
    KUAIRAND_TAB_SHARES,
    LOCAL_OFFSET_MS,
    LOG_COLUMNS,
    LOG_FILE_PATTERN,
    LOG_FILE_RE,
    LOGIT_BOUND,
    MAX_BUSY_FRACTION,
    MAX_EVENTS_PER_USER,
    MAX_EXTRA_LOOPS,
    MAX_MEAN_EVENTS_PER_USER,
    TRUTH_DIR,
    TRUTH_FILE,
    TRUTH_ROW_GROUP_ROWS,
    USER_BLOCK,
    USER_COLUMNS,
    USER_FILE,
    VIDEO_COLUMNS,
    SimulationModel,
    check_size,
    n_items,
    n_users,
    truth_path,
)
from pipelines.synthetic.writer import GeneratedSource, generate

__all__ = [
    "BATCH_EVENTS", "DAY_MS", "HOUR_MS", "ITEM_BLOCK", "ITEM_FILE", "KUAIRAND_HOURLY_ACTIVITY", "KUAIRAND_TAB_SHARES",
    "LOCAL_OFFSET_MS", "LOG_COLUMNS", "LOG_FILE_PATTERN", "LOG_FILE_RE", "LOGIT_BOUND", "MAX_BUSY_FRACTION",
    "MAX_EVENTS_PER_USER", "MAX_EXTRA_LOOPS", "MAX_MEAN_EVENTS_PER_USER", "TRUTH_DIR", "TRUTH_FILE",
    "TRUTH_ROW_GROUP_ROWS", "USER_BLOCK", "USER_COLUMNS", "USER_FILE", "VIDEO_COLUMNS", "GeneratedSource",
    "SimulationModel", "check_size", "generate", "n_items", "n_users", "truth_path",
]  # fmt: skip
