"""Dead letters: the reason codes of a rejected source record and the ``rejected_events`` table.

Ingestion never drops a record silently: every source record read is either accepted (a row
of ``events``) or rejected, and a rejected record becomes one row of ``rejected_events`` with
its raw text, where it came from, a stable :class:`Reason` code and a one-line human message
naming the column and the value. So for every file, records read = accepted + rejected.
A file that cannot be read (or is refused) becomes one dead letter of its own, which counts as
one record read (:data:`FILE_REASONS`); a line longer than ``rules.max_line_bytes`` is one
``oversized_line`` record.

Adapters (``pipelines/sources``) emit rejected records as :data:`REJECTED_RECORD_SCHEMA`; the
ingestion pipeline adds the run (``run_id``, ``rejected_at``), the id and the date with
:func:`to_rejected_events`.

Identity of a rejection::

    rejection_id = sha256(source \\x1f source_file \\x1f source_line \\x1f reason_code \\x1f raw_record).hex()[:24]

so re-running the same bad file gives the same ids and, merged by key, adds nothing.
"""
from __future__ import annotations

import datetime as dt
import enum
import hashlib

import pyarrow as pa

from features.contracts import TableContract, between, one_of, utc_date_of
from features.events import ID_SEPARATOR, TS_TYPE

REJECTION_ID_HEX_CHARS = 24


class Reason(enum.StrEnum):
    """Why a source record was rejected. Values are stable: they are stored and counted.

    Members are declared in **priority order**: a record with several faults gets the first
    reason that applies (the file as a whole, then the line's structure, size, presence, type,
    domain, time, play and duration, cross-field checks, and de-duplication last).

    The first two are about a whole file, not one of its records (:data:`FILE_REASONS`): the
    file becomes one dead letter (``raw_record`` empty) that counts as one record read, and
    the run goes on with the other files.
    """

    #: The file is a symbolic link and ``ingest.follow_symlinks`` is false (``source_line`` 0).
    SYMLINK_REFUSED = "symlink_refused"
    #: The file cannot be read, or not to its end: empty (0 bytes), no or an unreadable header,
    #: columns the source needs are missing, not the format its name says, a corrupt or
    #: truncated compressed stream, an I/O error. ``source_line`` is 0 when nothing could be
    #: read, else the data line where reading stopped (the lines before it are records as usual).
    UNREADABLE_FILE = "unreadable_file"
    #: The line is longer than ``rules.max_line_bytes``: it is skipped to its line end in bounded
    #: memory; the message gives its length and sha256, ``raw_record`` holds only its first
    #: :data:`OVERSIZED_LINE_KEPT_BYTES` bytes.
    OVERSIZED_LINE = "oversized_line"

    #: The line is not valid UTF-8 (``raw_record`` keeps the bytes as ``\\xNN`` escapes).
    INVALID_ENCODING = "invalid_encoding"
    #: The line cannot be split into fields (an unterminated or stray quote).
    UNPARSEABLE_LINE = "unparseable_line"
    #: The line splits into more or fewer fields than the file has columns.
    WRONG_COLUMN_COUNT = "wrong_column_count"
    #: A field is longer than ``rules.max_field_chars`` characters.
    OVERSIZED_FIELD = "oversized_field"
    #: A required field is empty: user id, item id, event time, or a required duration.
    MISSING_REQUIRED_FIELD = "missing_required_field"
    #: A value cannot be read as its type (a non-numeric time, play time, duration or rating).
    WRONG_TYPE = "wrong_type"
    #: A value outside its closed set: a flag not 0/1/true/false, an unknown KuaiRand ``tab``.
    UNKNOWN_ENUM_VALUE = "unknown_enum_value"
    #: The event time is outside [``rules.min_event_ts``, ``rules.max_event_ts``) or 1900..2200.
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    #: The event time is later than now + ``rules.future_tolerance_s``.
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    #: ``play_time_ms`` is negative.
    NEGATIVE_PLAY_TIME = "negative_play_time"
    #: ``play_time_ms`` is above ``rules.max_play_time_ms``.
    ABSURD_PLAY_TIME = "absurd_play_time"
    #: ``duration_ms`` is negative, or zero where the source requires a positive duration.
    NONPOSITIVE_DURATION = "nonpositive_duration"
    #: ``play_time_ms`` > ``rules.replay_factor`` x ``duration_ms`` (only where duration > 0).
    PLAY_BEYOND_DURATION = "play_beyond_duration"
    #: Same ``event_id`` as an accepted record: the same record in overlapping files, or, with
    #: ``ingest.repeated_lines: duplicate`` (the default), an exact repeat of an earlier line of
    #: the same file. Set by the ingestion pipeline's de-duplication, never by an adapter.
    DUPLICATE = "duplicate"


#: Reasons, highest priority first (the declaration order of :class:`Reason`).
REASON_PRIORITY: tuple[Reason, ...] = tuple(Reason)

#: Reasons given to a whole file rather than to one of its records.
FILE_REASONS: frozenset[Reason] = frozenset({Reason.SYMLINK_REFUSED, Reason.UNREADABLE_FILE})

#: How much of an ``oversized_line`` its dead letter keeps as ``raw_record`` (bytes of the line).
OVERSIZED_LINE_KEPT_BYTES = 1024

_RECORD_FIELDS = [
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_line", pa.int64(), nullable=False),
    pa.field("raw_record", pa.string(), nullable=False),
    pa.field("reason_code", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
]

#: What a source adapter emits for the records it rejects (one row per record, in file order).
REJECTED_RECORD_SCHEMA = pa.schema(_RECORD_FIELDS)

REJECTED_EVENTS = TableContract(
    name="rejected_events",
    schema=pa.schema(
        [
            pa.field("rejection_id", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            *_RECORD_FIELDS,
            pa.field("rejected_at", TS_TYPE, nullable=False),
            pa.field("rejected_date", pa.date32(), nullable=False),
        ]
    ),
    column_docs={
        "rejection_id": "24 hex: sha256 of source, source_file, source_line, reason_code, raw_record joined by `\\x1f`",
        "run_id": "the ingestion run that first rejected the record (the Dagster run id)",
        "source": "the source name from the configuration",
        "source_file": "base name of the source file",
        "source_line": "1-based data line (header excluded); Parquet: 1-based row; a file-level letter (`symlink_refused`, `unreadable_file`): 0, or the line where reading stopped",
        "raw_record": "the line as read, without its line end; non-UTF-8 bytes as `\\xNN`; Parquet: JSON of the row's fields; `duplicate` letters: the fields joined by commas; `oversized_line`: the first 1,024 bytes only (the reason detail has the length and a hash); file-level letters: empty",
        "reason_code": "a `features.rejections.Reason` value (docs/ingestion.md lists them)",
        "reason": "one-line message naming the column and the value",
        "rejected_at": "when the run rejected it, UTC",
        "rejected_date": "UTC date of `rejected_at` (the partition)",
    },
    expectations=(
        between("source_line", 0),
        one_of("reason_code", [r.value for r in Reason]),
        utc_date_of("rejected_date", "rejected_at"),
    ),
    key=("rejection_id",),
    partition_column="rejected_date",
    description=(
        "Dead letters: one row per source record that ingestion rejected, with its raw text, "
        "its place in the source file, a stable reason code and a human message."
    ),
    invariants=(
        "rejection_id is unique and never null; it is rejection_id(source, source_file, "
        "source_line, reason_code, raw_record)",
        "reason_code is a features.rejections.Reason value",
        "rejected_date = UTC date of rejected_at",
        "(source_file, source_line) locates the record (1-based data lines, header excluded; "
        "Parquet: 1-based row); a whole-file letter (symlink_refused, unreadable_file) has an "
        "empty raw_record and line 0, or the data line where reading stopped",
        "per source file: records read = accepted events + rejected records (a whole-file "
        "letter counts as one record)",
    ),
)


def rejection_id(source: str, source_file: str, source_line: int, reason_code: str, raw_record: str) -> str:
    """The stable id of a rejection (see the module docstring)."""
    text = ID_SEPARATOR.join((source, source_file, str(source_line), str(reason_code), raw_record))
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:REJECTION_ID_HEX_CHARS]


def to_rejected_events(records: pa.Table, run_id: str, rejected_at: dt.datetime) -> pa.Table:
    """Rows of ``rejected_events`` from adapter output (:data:`REJECTED_RECORD_SCHEMA`).

    Pure function: adds ``rejection_id`` (hashed row by row: dead letters are few),
    ``run_id``, ``rejected_at`` (must be timezone-aware) and ``rejected_date``.
    """
    if rejected_at.tzinfo is None:
        raise ValueError("rejected_at must be timezone-aware (UTC)")
    at = rejected_at.astimezone(dt.timezone.utc)
    n = records.num_rows
    cols = {name: records.column(name) for name in REJECTED_RECORD_SCHEMA.names}
    ids = [
        rejection_id(s, f, line, code, raw)
        for s, f, line, code, raw in zip(
            cols["source"].to_pylist(),
            cols["source_file"].to_pylist(),
            cols["source_line"].to_pylist(),
            cols["reason_code"].to_pylist(),
            cols["raw_record"].to_pylist(),
        )
    ]
    arrays = {
        "rejection_id": pa.array(ids, pa.string()),
        "run_id": pa.array([run_id] * n, pa.string()),
        **cols,
        "rejected_at": pa.array([at] * n, TS_TYPE),
        "rejected_date": pa.array([at.date()] * n, pa.date32()),
    }
    return pa.Table.from_pydict(arrays, schema=REJECTED_EVENTS.schema)
