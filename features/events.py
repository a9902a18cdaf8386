"""The canonical event schema and the stable ``event_id`` rule.

Every source adapter maps its records to :data:`STAGED_EVENT_SCHEMA` (one row per source
record, in source order); :func:`assign_event_ids` turns staged rows into rows of the
``events`` table (:data:`EVENTS`).

Identity of a record
--------------------
``record_key`` is the record's raw field text joined with ``\\x1f`` in the source's column
order, so a record read from a plain or a gzipped copy of a file has the same key, and any
change to any field changes it. Then::

    event_id = sha256(source + "\\x1f" + record_key + "\\x1f" + str(occurrence)).hex()[:24]

is stable (the same record of the same file always gets the same id), survives re-reading,
and makes the same record in two overlapping files collapse to one event. 96 bits keep the
chance of any collision below 1e-10 at 10^8 events.

Real logs repeat records byte for byte (the KuaiRand slice repeats 5,460 lines within their
files). What ``occurrence`` is depends on how such exact repeats are read
(:data:`REPEATED_LINES`, the setting ``ingest.repeated_lines``):

* ``duplicate`` (the project default): occurrence is always 0, so an exact repeat has the id
  of its first copy and the pipeline's de-duplication (:func:`deduplicate_events`) keeps the
  first copy and makes the others ``duplicate`` dead letters;
* ``distinct`` (parity with the published code, which keeps every log row): the *k*-th record
  (0-based, in line order) with a given key within one source file gets occurrence *k*, so
  every repeat is an event of its own.

The first copy of a record gets the same id either way.

Units and time: ``event_ts`` is a UTC timestamp (microseconds); ``event_date`` is its UTC
date; ``play_time_ms`` and ``duration_ms`` are milliseconds; ``rating`` is on the source's
own scale (MovieLens 1..5).
"""
from __future__ import annotations

import hashlib

import pyarrow as pa

from features.contracts import Param, TableContract, between, row_count_band, utc_date_of

ID_SEPARATOR = "\x1f"
EVENT_ID_HEX_CHARS = 24

#: How exact repeats of a line within one file are read (``ingest.repeated_lines``):
#: ``duplicate`` (a repeat is a ``duplicate`` dead letter) or ``distinct`` (each is an event).
REPEATED_LINES = ("duplicate", "distinct")

TS_TYPE = pa.timestamp("us", tz="UTC")

#: Feedback flags carried from sources that have them (null where a source has no such flag).
FEEDBACK_FLAGS = (
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "is_profile_enter",
    "is_long_view",
    "is_rand",
)

_PAYLOAD = [
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("item_id", pa.string(), nullable=False),
    pa.field("event_ts", TS_TYPE, nullable=False),
    pa.field("play_time_ms", pa.int64()),
    pa.field("duration_ms", pa.int64()),
    pa.field("rating", pa.float64()),
    *[pa.field(flag, pa.bool_()) for flag in FEEDBACK_FLAGS],
]

#: What a source adapter emits: one row per source record, before ids and dates.
STAGED_EVENT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_line", pa.int64(), nullable=False),
        pa.field("record_key", pa.string(), nullable=False),
        *_PAYLOAD,
    ]
)

EVENTS = TableContract(
    name="events",
    schema=pa.schema(
        [
            pa.field("event_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            *_PAYLOAD,
            pa.field("event_date", pa.date32(), nullable=False),
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("source_line", pa.int64(), nullable=False),
        ]
    ),
    column_docs={
        "event_id": "24 hex chars: sha256 of source, the record's raw field text and its occurrence number within its file (`features/events.py`; always 0 with `ingest.repeated_lines: duplicate`, the default, so an exact repeat shares its first copy's id and becomes a `duplicate` dead letter; counted 0, 1, 2, … with `distinct`); stable across re-reads, collapses the same record in overlapping files",
        "source": "the source name from the configuration (`synthetic`, `kuairand`, `ml-100k`, ...)",
        "user_id": "the source's user id",
        "item_id": "the source's item id (KuaiRand `video_id`, MovieLens `item_id`)",
        "event_ts": "when the event happened, UTC (KuaiRand `time_ms`; MovieLens Unix seconds)",
        "play_time_ms": "milliseconds played (may exceed `duration_ms`: replays); null where the source has none",
        "duration_ms": "the item's duration in milliseconds as logged with the event (0 occurs in KuaiRand)",
        "rating": "explicit rating on the source's scale (MovieLens 1..5)",
        "is_click": "clicked",
        "is_like": "liked",
        "is_follow": "followed the author",
        "is_comment": "commented",
        "is_forward": "forwarded/shared",
        "is_hate": "marked as disliked",
        "is_profile_enter": "entered the author's profile",
        "is_long_view": "KuaiRand's `long_view` flag as logged",
        "is_rand": "KuaiRand: shown by random exposure",
        "event_date": "UTC date of `event_ts` (the partition)",
        "source_file": "base name of the source file the record came from",
        "source_line": "1-based data line in that file (header excluded); Parquet: 1-based row",
    },
    expectations=(
        between("play_time_ms", 0),
        between("duration_ms", 0),
        between("rating", Param("rating_min"), Param("rating_max")),
        between("event_ts", Param("min_event_ts"), Param("max_event_ts")),
        between("source_line", 1),
        utc_date_of("event_date", "event_ts"),
        row_count_band("partition"),
    ),
    key=("event_id",),
    partition_column="event_date",
    description=(
        "One row per accepted source record (an impression, a play or a rating), "
        "de-duplicated by event_id."
    ),
    invariants=(
        "event_id is unique and never null",
        "event_date = UTC date of event_ts",
        "play_time_ms >= 0 and duration_ms >= 0 where present",
        "(source_file, source_line) locates the record in its source file (1-based lines, header excluded)",
    ),
)


def event_id(source: str, record_key: str, occurrence: int) -> str:
    """Reference implementation of the event id rule (see the module docstring)."""
    text = ID_SEPARATOR.join((source, record_key, str(occurrence)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:EVENT_ID_HEX_CHARS]


def record_key(fields: list[str | None]) -> str:
    """The identity text of a record from its raw fields (``None`` is written as empty)."""
    return ID_SEPARATOR.join("" if f is None else f for f in fields)


def check_repeated_lines(mode: str) -> str:
    """``mode`` if it is one of :data:`REPEATED_LINES`, else ``ValueError``."""
    if mode not in REPEATED_LINES:
        raise ValueError(f"repeated_lines must be one of {', '.join(REPEATED_LINES)}, not {mode!r}")
    return mode


def add_event_ids(staged, repeated_lines: str):
    """Spark: staged rows (``STAGED_EVENT_SCHEMA``) plus their ``event_id`` column.

    Pure DataFrame-to-DataFrame function; the staged columns are kept. ``repeated_lines``
    (see the module docstring): ``distinct`` counts the occurrence of exact repeats within a
    file, ``duplicate`` gives every repeat the id of its first copy (the ingestion pipelines
    pass the configured mode).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if check_repeated_lines(repeated_lines) == "duplicate":
        occurrence = F.lit("0")
    else:
        occurrence_window = Window.partitionBy("source", "source_file", "record_key").orderBy("source_line")
        occurrence = (F.row_number().over(occurrence_window) - 1).cast("string")
    return staged.withColumn("event_id", event_id_column(occurrence))


def event_id_column(occurrence):
    """Spark: the ``event_id`` of a staged row (columns ``source``, ``record_key``) with the
    given occurrence (a string Column): the rule of :func:`event_id`, as a Column expression.
    Row-local, so with occurrence ``"0"`` (``repeated_lines: duplicate``) it needs no shuffle."""
    from pyspark.sql import functions as F

    return F.substring(
        F.sha2(F.concat_ws(ID_SEPARATOR, F.col("source"), F.col("record_key"), occurrence), 256),
        1,
        EVENT_ID_HEX_CHARS,
    )


def to_events(with_ids):
    """Spark: rows with ``event_id`` and the staged columns to ``events`` rows (date added)."""
    from pyspark.sql import functions as F

    return with_ids.withColumn("event_date", F.to_date(F.col("event_ts"))).select(*EVENTS.columns)


def assign_event_ids(staged, repeated_lines: str):
    """Spark: staged rows to ``events`` rows, ids and dates added. Does not de-duplicate
    (see :func:`deduplicate_events`)."""
    return to_events(add_event_ids(staged, repeated_lines))


def deduplicate_events(events):
    """Spark: keep one row per ``event_id``: the first by (source_file, source_line).

    Deterministic whatever the input order, so re-running a job gives the same rows.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    first = Window.partitionBy("event_id").orderBy("source_file", "source_line")
    return (
        events.withColumn("_rank", F.row_number().over(first))
        .where(F.col("_rank") == 1)
        .drop("_rank")
    )
