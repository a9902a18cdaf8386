"""The ingestion rules (``Settings.rules``), applied to converted rows in one place for every adapter.

:func:`check_field_sizes` runs on the raw fields, :func:`check_enums` on the raw text of
closed-set columns, :func:`apply_rules` on the converted event columns. Each flags the rows it
rejects in a :class:`~pipelines.sources.columns.Rejects` with a
:class:`features.rejections.Reason`, a message naming the column and the value, and never raises.

Durations (:class:`DurationRule`): a negative ``duration_ms`` is always ``nonpositive_duration``
when rules apply. Where a source *requires* a duration, an empty one is
``missing_required_field``; zero is ``nonpositive_duration`` unless the rule allows it. KuaiRand
(and the synthetic source) requires a duration but allows zero: picture posts have
``duration_ms`` 0 (3,568 rows of the Pure slice), and they are real impressions.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from features.rejections import Reason
from features.timeutil import UTC, as_utc, to_micros
from pipelines.sections import IngestRules
from pipelines.sources.columns import Rejects, as_text, is_text
from pipelines.sources.errors import VALUE_PREVIEW_CHARS

_STR = pa.string()


@dataclass(frozen=True)
class DurationRule:
    """Whether records need a duration, and whether zero counts as one."""

    required: bool = False  # an empty duration_ms is missing_required_field
    allow_zero: bool = True  # duration_ms == 0 is accepted (a negative one never is)


#: ``require_duration: false``, and the default of kinds without durations.
OPTIONAL_DURATION = DurationRule(required=False, allow_zero=True)
#: ``require_duration: true``: every record needs duration_ms > 0.
REQUIRED_DURATION = DurationRule(required=True, allow_zero=False)
#: KuaiRand's default: a duration on every record, zero allowed (picture posts).
REQUIRED_DURATION_ZERO_ALLOWED = DurationRule(required=True, allow_zero=True)


def utc_now(now: dt.datetime | None = None) -> dt.datetime:
    """``now`` as an aware UTC time (a naive ``now`` is taken as UTC); the current time if ``None``."""
    return dt.datetime.now(UTC) if now is None else as_utc(now)


def _preview(arr: pa.Array) -> pa.Array:
    return pc.utf8_slice_codeunits(as_text(arr), 0, VALUE_PREVIEW_CHARS)


def _message(*parts) -> pa.Array:
    """Join text pieces and per-row arrays into one message per row (nulls written as empty)."""
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")


def check_field_sizes(
    columns: Mapping[str, pa.Array],
    max_chars: int,
    rejects: Rejects,
    raw_records: pa.Array | pa.ChunkedArray | None = None,
) -> None:
    """``oversized_field`` for every row with a text field longer than ``max_chars`` characters.

    Characters are never more than bytes, so a column (or, given ``raw_records``, a chunk of
    lines) with no value longer than ``max_chars`` bytes is passed without counting characters.
    """
    if raw_records is not None and len(raw_records):
        longest = pc.max(pc.binary_length(raw_records)).as_py()
        if longest is None or longest <= max_chars:
            return
    for name, arr in columns.items():
        if not (is_text(arr.type) or pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
            continue  # numbers, times, flags: never long
        nbytes = pc.binary_length(arr)
        longest = pc.max(nbytes).as_py()
        if longest is None or longest <= max_chars:
            continue
        length = pc.utf8_length(arr) if is_text(arr.type) else nbytes
        rejects.flag(
            pc.greater(length, max_chars),
            Reason.OVERSIZED_FIELD,
            lambda name=name, length=length: _message(
                f"column {name!r}: ", pc.cast(length, _STR), f" characters, more than max_field_chars {max_chars}"
            ),
        )


def check_enums(columns: Mapping[str, pa.Array], enums: Mapping[str, tuple[str, ...]], rejects: Rejects) -> None:
    """``unknown_enum_value`` where a closed-set column holds a text outside its set (empty is allowed)."""
    for name, allowed in enums.items():
        if name not in columns:
            continue
        text = as_text(columns[name])
        bad = pc.invert(pc.is_in(text, value_set=pa.array(list(allowed), _STR)))
        bad = pc.and_(pc.is_valid(text), bad)
        shown = ", ".join(allowed) if len(allowed) <= 6 else f"{allowed[0]}..{allowed[-1]}"
        rejects.flag(
            bad,
            Reason.UNKNOWN_ENUM_VALUE,
            lambda name=name, text=text, shown=shown: _message(
                f"column {name!r}: '", _preview(text), f"' is not one of {shown}"
            ),
        )


def apply_rules(
    arrays: Mapping[str, pa.Array],
    raw: Mapping[str, pa.Array],
    *,
    timestamp_column: str,
    play_column: str | None,
    duration_column: str | None,
    rules: IngestRules,
    duration: DurationRule,
    now: dt.datetime,
    rejects: Rejects,
) -> None:
    """Flag the rows of converted ``arrays`` (staged columns) that break ``rules``.

    ``raw`` holds the source columns (for messages and to tell an empty duration from an
    unreadable one); the ``*_column`` arguments name the source columns of the staged fields.
    """
    ts = pc.cast(arrays["event_ts"], pa.int64())

    def ts_message(what: str):
        def make() -> pa.Array:
            seconds = pc.cast(arrays["event_ts"], pa.timestamp("s", tz="UTC"), safe=False)
            ts_text = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S")
            return _message(
                f"column {timestamp_column!r}: '", _preview(raw[timestamp_column]), "' (", ts_text, f" UTC) {what}"
            )

        return make

    too_early = pc.less(ts, to_micros(rules.min_event_ts))
    rejects.flag(too_early, Reason.TIMESTAMP_OUT_OF_RANGE, ts_message(f"is before min_event_ts {rules.min_event_ts}"))
    if rules.max_event_ts is not None:
        too_late = pc.greater_equal(ts, to_micros(rules.max_event_ts))
        rejects.flag(
            too_late, Reason.TIMESTAMP_OUT_OF_RANGE, ts_message(f"is not before max_event_ts {rules.max_event_ts}")
        )
    horizon = now + dt.timedelta(seconds=rules.future_tolerance_s)
    rejects.flag(
        pc.greater(ts, to_micros(horizon)),
        Reason.TIMESTAMP_IN_FUTURE,
        ts_message(f"is after now + {rules.future_tolerance_s} s ({horizon.strftime('%Y-%m-%dT%H:%M:%S')} UTC)"),
    )

    play = arrays["play_time_ms"] if play_column is not None else None
    if play is not None:
        play_text = pc.cast(play, _STR)
        rejects.flag(
            pc.less(play, 0),
            Reason.NEGATIVE_PLAY_TIME,
            lambda: _message(f"column {play_column!r}: ", play_text, " is negative"),
        )
        rejects.flag(
            pc.greater(play, rules.max_play_time_ms),
            Reason.ABSURD_PLAY_TIME,
            lambda: _message(
                f"column {play_column!r}: ", play_text, f" is more than max_play_time_ms {rules.max_play_time_ms}"
            ),
        )

    if duration_column is None:
        return
    dur = arrays["duration_ms"]
    dur_text = pc.cast(dur, _STR)
    if duration.required:
        rejects.flag(
            pc.is_null(raw[duration_column]),
            Reason.MISSING_REQUIRED_FIELD,
            f"column {duration_column!r} is empty (this source requires a duration)",
        )
    rejects.flag(
        pc.less(dur, 0),
        Reason.NONPOSITIVE_DURATION,
        lambda: _message(f"column {duration_column!r}: ", dur_text, " is negative"),
    )
    if not duration.allow_zero:
        rejects.flag(
            pc.equal(dur, 0),
            Reason.NONPOSITIVE_DURATION,
            f"column {duration_column!r}: 0 is not a duration (this source requires duration_ms > 0)",
        )
    if play is not None:
        limit = pc.multiply(pc.cast(dur, pa.float64()), float(rules.replay_factor))
        beyond = pc.and_(pc.greater(dur, 0), pc.greater(pc.cast(play, pa.float64()), limit))
        rejects.flag(
            beyond,
            Reason.PLAY_BEYOND_DURATION,
            lambda: _message(
                f"column {play_column!r}: ",
                pc.cast(play, _STR),
                f" is more than replay_factor {rules.replay_factor:g} x {duration_column} ",
                dur_text,
            ),
        )
