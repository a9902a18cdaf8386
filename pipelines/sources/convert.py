"""One chunk of raw source records to staged event rows, plus the records that were rejected.

:class:`EventMapping` says which source column feeds which staged column and how to read the
event time (unit and time zone: see :mod:`pipelines.sources.columns`). :func:`convert_chunk`
never raises on a bad value: it returns a :class:`ChunkConversion` holding the rows that
converted (``STAGED_EVENT_SCHEMA``, in file order) and the rejected records
(:data:`features.rejections.REJECTED_RECORD_SCHEMA`: file, line, raw text, reason code and
message), one reason per record: the first in :data:`features.rejections.REASON_PRIORITY`.
``SourceAdapter.read_records`` routes both; ``read_events`` calls :func:`raise_on_rejected`.

Checks, in the order they are flagged (the priority order decides which one a record gets):
the reader's own (``invalid_encoding``, ``unparseable_line``, ``wrong_column_count``), field
sizes (with rules), closed-set columns (``EventMapping.enums``), the typed conversion of the
mapped columns (:mod:`~pipelines.sources.columns`), then the ingestion rules
(:mod:`~pipelines.sources.rules`). Without rules (``rules=None``) only the reader's, the
enum and the conversion checks run.

The ``record_key`` of a row is built from the raw field texts, before any conversion, so a plain
and a gzipped copy of a file give the same keys.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.events import FEEDBACK_FLAGS, ID_SEPARATOR, STAGED_EVENT_SCHEMA
from features.rejections import REJECTED_RECORD_SCHEMA
from pipelines.sections import IngestRules
from pipelines.sources.columns import (
    Rejects,
    as_array,
    as_text,
    constant_strings,
    to_bool,
    to_event_ts,
    to_float64,
    to_id,
    to_int64,
)
from pipelines.sources.errors import SourceError
from pipelines.sources.rules import (
    OPTIONAL_DURATION,
    DurationRule,
    apply_rules,
    check_enums,
    check_field_sizes,
    utc_now,
)

_STR = pa.string()


@dataclass(frozen=True)
class EventMapping:
    """Which source column feeds which staged column, and how to read the event time.

    ``timestamp_unit`` is ``s``/``ms``/``us`` (epoch numbers, always UTC) or ``iso`` (ISO-8601
    text; text without an offset is local time in ``time_zone``). Native Parquet timestamp and
    date columns are used as they are (naive ones are read in ``time_zone``).
    """

    user_id: str
    item_id: str
    timestamp: str
    timestamp_unit: str = "s"
    time_zone: str = "UTC"
    play_time_ms: str | None = None
    duration_ms: str | None = None
    rating: str | None = None
    flags: dict[str, str] = field(default_factory=dict)  # canonical flag -> source column
    #: source column -> its accepted texts (a closed set; empty is allowed); others are unknown_enum_value
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def source_columns(self) -> list[tuple[str, str]]:
        """(role, source column) pairs, the required ones first."""
        pairs = [("user_id", self.user_id), ("item_id", self.item_id), ("timestamp", self.timestamp)]
        for role in ("play_time_ms", "duration_ms", "rating"):
            col = getattr(self, role)
            if col is not None:
                pairs.append((role, col))
        pairs.extend((flag, col) for flag, col in self.flags.items())
        return pairs

    def check_columns(self, names: Iterable[str], file: str) -> None:
        """Raise :class:`SourceError` if a mapped column is not among ``names``."""
        available = list(names)
        for role, col in self.source_columns():
            if col not in available:
                raise SourceError(
                    f"{file}: column {col!r} (for {role}) is missing; the file has columns {available}"
                )


@dataclass(frozen=True)
class ChunkConversion:
    """The result of converting one chunk: accepted rows and rejected records.

    ``records`` is the number of the file's records the chunk covers; always
    ``records == staged.num_rows + rejected.num_rows``.
    """

    staged: pa.Table  # STAGED_EVENT_SCHEMA, the accepted rows, in file order
    rejected: pa.Table  # REJECTED_RECORD_SCHEMA, the rejected records, in file order
    records: int


def record_keys(columns: list[pa.Array]) -> pa.Array:
    """:func:`features.events.record_key` of every row, vectorised (nulls written as empty)."""
    texts = [as_text(c) for c in columns]
    if not texts:
        raise ValueError("a record needs at least one field")
    return pc.binary_join_element_wise(*texts, ID_SEPARATOR, null_handling="replace", null_replacement="")


def convert_chunk(
    raw: pa.Table,
    *,
    source: str,
    source_file: str,
    first_line: int,
    mapping: EventMapping,
    keys: pa.Array | None = None,
    codes: pa.Array | None = None,
    reasons: pa.Array | None = None,
    raw_records: pa.Array | pa.ChunkedArray | None = None,
    rules: IngestRules | None = None,
    duration: DurationRule = OPTIONAL_DURATION,
    now: dt.datetime | None = None,
) -> ChunkConversion:
    """Convert one chunk of raw records (columns in file order) to staged rows and rejected records.

    ``raw`` holds the file's columns (text for CSV, native types for Parquet); ``first_line``
    is the 1-based data line of its first row; ``keys`` overrides the record keys (used when
    the raw fields are not the columns of ``raw``, as for ``::``-separated files); ``codes`` and
    ``reasons`` mark rows the reader already rejected (a Reason value and a message per row,
    null for the others); ``raw_records`` is each row's raw text (an array or a chunked array;
    built from the fields when ``None``). ``rules`` (with ``duration``, and ``now``: default the
    current time) adds the ingestion rules; ``None`` checks conversion only.
    """
    n = raw.num_rows
    cols = {name: as_array(raw.column(name)) for name in raw.column_names}
    if keys is None:
        keys = record_keys([cols[name] for name in raw.column_names]) if n else pa.array([], _STR)
    rejects = Rejects()
    if codes is not None:
        rejects.flag_codes(codes, reasons)
    if rules is not None:
        check_field_sizes(cols, rules.max_field_chars, rejects, raw_records=raw_records)
    if mapping.enums:
        check_enums(cols, mapping.enums, rejects)

    def optional(col: str | None, convert: Callable[..., pa.Array], type_: pa.DataType) -> pa.Array:
        if col is None:
            return pa.nulls(n, type_)
        return convert(cols[col], col, rejects)

    arrays: dict[str, pa.Array] = {
        "source": constant_strings(source, n),
        "source_file": constant_strings(source_file, n),
        "source_line": pa.array(np.arange(first_line, first_line + n, dtype=np.int64)),
        "record_key": keys,
        "user_id": to_id(cols[mapping.user_id], mapping.user_id, rejects),
        "item_id": to_id(cols[mapping.item_id], mapping.item_id, rejects),
        "event_ts": to_event_ts(
            cols[mapping.timestamp], mapping.timestamp, mapping.timestamp_unit, mapping.time_zone, rejects
        ),
        "play_time_ms": optional(mapping.play_time_ms, to_int64, pa.int64()),
        "duration_ms": optional(mapping.duration_ms, to_int64, pa.int64()),
        "rating": optional(mapping.rating, to_float64, pa.float64()),
    }
    for flag in FEEDBACK_FLAGS:
        arrays[flag] = optional(mapping.flags.get(flag), to_bool, pa.bool_())
    if rules is not None and n:
        apply_rules(
            arrays,
            cols,
            timestamp_column=mapping.timestamp,
            play_column=mapping.play_time_ms,
            duration_column=mapping.duration_ms,
            rules=rules,
            duration=duration,
            now=utc_now(now),
            rejects=rejects,
        )

    good = rejects.good_mask()
    if good is None:
        staged = pa.Table.from_arrays([arrays[f.name] for f in STAGED_EVENT_SCHEMA], schema=STAGED_EVENT_SCHEMA)
        return ChunkConversion(staged, REJECTED_RECORD_SCHEMA.empty_table(), n)
    bad = pc.invert(good)
    staged = pa.Table.from_arrays(
        [pc.filter(arrays[f.name], good) for f in STAGED_EVENT_SCHEMA], schema=STAGED_EVENT_SCHEMA
    )
    if raw_records is not None:
        # Line texts may still end with their line end (see pipelines.sources.csvio).
        bad_raw = pc.utf8_rtrim(as_array(pc.filter(raw_records, bad)), characters="\r\n")
    else:
        bad_raw = row_text({name: pc.filter(col, bad) for name, col in cols.items()})
    rejected = pa.Table.from_arrays(
        [
            pc.filter(arrays["source"], bad),
            pc.filter(arrays["source_file"], bad),
            pc.filter(arrays["source_line"], bad),
            bad_raw,
            pc.filter(rejects.codes(), bad),
            pc.filter(rejects.reason, bad),
        ],
        schema=REJECTED_RECORD_SCHEMA,
    )
    return ChunkConversion(staged, rejected, n)


def row_text(columns: dict[str, pa.Array]) -> pa.Array:
    """A record's raw text when the source has no lines (Parquet): a JSON object of its fields as text.

    ``{"uid": "7", "ts": "2022-03-27 01:30:00.000", "stars": null}``, vectorised; backslash,
    quote and line breaks in values are escaped.
    """
    parts: list[pa.Array | str] = []
    for i, (name, col) in enumerate(columns.items()):
        text = as_text(col)
        for old, new in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
            text = pc.replace_substring(text, old, new)
        quoted = pc.binary_join_element_wise('"', text, '"', "")
        parts.append(("{" if i == 0 else ", ") + f"{json.dumps(name, ensure_ascii=False)}: ")
        parts.append(pc.fill_null(quoted, "null"))
    if not parts:
        return pa.array([], _STR)
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")


def raise_on_rejected(conversion: ChunkConversion, path: str) -> pa.Table:
    """The staged rows, or :class:`SourceError` for the first rejected row (file and line)."""
    if conversion.rejected.num_rows:
        first = conversion.rejected.slice(0, 1).to_pylist()[0]
        more = conversion.rejected.num_rows - 1
        tail = f" ({more} more bad rows in this chunk)" if more else ""
        reason = first["reason"].replace("\n", "\\n").replace("\r", "\\r")
        raise SourceError(f"{path}: line {first['source_line']}: {reason}{tail}")
    return conversion.staged
