"""One dialogue-log record (a JSON Lines line) to a turn or a reason: the pure validation rules.

A record is a JSON object with the fields of :data:`RECORD_FIELDS`::

    {"dialogue_id": "d0007", "turn_index": 2, "role": "assistant", "text": "How about ...?",
     "turn_ts": "2022-04-08T10:00:05Z", "user_id": "u12",
     "recommended_items": ["b17", "b40"], "accepted_items": []}

``turn_ts`` is an ISO-8601 time with a zone (``Z`` or an offset; a time without a zone is read as
UTC) or epoch milliseconds. Ids may be strings or integers (stored as strings). The item lists
may be absent (empty). Unknown fields are ignored (they do not enter ``record_hash``).

:func:`parse_record` applies the per-record rules in priority order and returns a
:class:`Turn` or a :class:`Rejected` with the first reason that applies: the record's
structure (``unparseable_line``), sizes (``oversized_field``), presence
(``missing_required_field``), types (``wrong_type``), the role (``unknown_enum_value``), time
(``timestamp_out_of_range``, ``timestamp_in_future``), then the dialogue reasons
``invalid_turn_index`` and ``misplaced_items``. The rules across records of one dialogue
(duplicates, conflicts, consistency) are :func:`resolve_dialogue`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

from features.dialogues.contracts import ROLES, DialogueReason
from features.rejections import Reason

UTC = dt.timezone.utc
RECORD_FIELDS = ("dialogue_id", "turn_index", "role", "text", "turn_ts", "user_id", "recommended_items", "accepted_items")
REQUIRED_FIELDS = ("dialogue_id", "turn_index", "role", "text", "turn_ts", "user_id")
_PREVIEW = 40


@dataclass(frozen=True)
class Turn:
    """A valid record, normalised (ids as strings, ``turn_ts`` an aware UTC datetime)."""

    dialogue_id: str
    turn_index: int
    role: str
    text: str
    turn_ts: dt.datetime
    user_id: str
    recommended_items: tuple[str, ...] = ()
    accepted_items: tuple[str, ...] = ()
    source_file: str = ""
    source_line: int = 0
    raw_record: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.dialogue_id, self.turn_index)

    @property
    def record_hash(self) -> str:
        """16 hex of the sha256 of the canonical JSON of the record's fields."""
        return record_hash(self)


@dataclass(frozen=True)
class Rejected:
    """A record rejected with ``reason_code`` and a one-line ``reason``."""

    reason_code: str
    reason: str
    source_file: str = ""
    source_line: int = 0
    raw_record: str = ""


def canonical(turn: Turn) -> str:
    """The record's fields as canonical JSON (sorted keys, ``turn_ts`` in microseconds)."""
    body = {
        "accepted_items": list(turn.accepted_items),
        "dialogue_id": turn.dialogue_id,
        "recommended_items": list(turn.recommended_items),
        "role": turn.role,
        "text": turn.text,
        "turn_index": turn.turn_index,
        "turn_ts_us": int(turn.turn_ts.timestamp() * 1_000_000),
        "user_id": turn.user_id,
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def record_hash(turn: Turn) -> str:
    return hashlib.sha256(canonical(turn).encode("utf-8", errors="surrogatepass")).hexdigest()[:16]


def _preview(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "..."


def _id(value) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None


def _items(value) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list):
        return None
    out = []
    for v in value:
        s = _id(v)
        if s is None or not s:
            return None
        out.append(s)
    return tuple(out)


def parse_ts(value) -> dt.datetime | None:
    """``turn_ts`` as an aware UTC datetime, or ``None`` when it is not a time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return dt.datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            ts = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return None


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_record(
    text: str,
    *,
    max_field_chars: int,
    min_ts: dt.datetime,
    max_ts: dt.datetime | None,
    latest_ts: dt.datetime,
    source_file: str = "",
    source_line: int = 0,
) -> Turn | Rejected:
    """Validate one record (already decoded text, without its line end).

    ``min_ts`` (inclusive) .. ``max_ts`` (exclusive, ``None``: unbounded) is the allowed range of
    ``turn_ts`` (``timestamp_out_of_range``); a time after ``latest_ts`` (now plus the tolerance)
    is ``timestamp_in_future``.
    """

    def reject(code, message: str) -> Rejected:
        return Rejected(str(code), message, source_file, source_line, text)

    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return reject(Reason.UNPARSEABLE_LINE, f"not a JSON object: {exc.msg} at character {exc.pos}")
    except RecursionError:
        return reject(Reason.UNPARSEABLE_LINE, "not a JSON object: nested too deeply")
    if not isinstance(obj, dict):
        return reject(Reason.UNPARSEABLE_LINE, f"not a JSON object: a JSON {type(obj).__name__}")
    for name in RECORD_FIELDS:
        value = obj.get(name)
        if isinstance(value, str) and len(value) > max_field_chars:
            return reject(Reason.OVERSIZED_FIELD, f"{name}: {len(value):,} characters > rules.max_field_chars {max_field_chars:,}")
    for name in REQUIRED_FIELDS:
        if _missing(obj.get(name)):
            return reject(Reason.MISSING_REQUIRED_FIELD, f"{name}: missing or empty")
    dialogue_id, user_id = _id(obj["dialogue_id"]), _id(obj["user_id"])
    for name, value in (("dialogue_id", dialogue_id), ("user_id", user_id)):
        if value is None:
            return reject(Reason.WRONG_TYPE, f"{name}: not a string or an integer: {_preview(obj[name])}")
    index = obj["turn_index"]
    if isinstance(index, bool) or not isinstance(index, int):
        return reject(Reason.WRONG_TYPE, f"turn_index: not an integer: {_preview(index)}")
    if not isinstance(obj["text"], str):
        return reject(Reason.WRONG_TYPE, f"text: not a string: {_preview(obj['text'])}")
    if not isinstance(obj["role"], str):
        return reject(Reason.WRONG_TYPE, f"role: not a string: {_preview(obj['role'])}")
    ts = parse_ts(obj["turn_ts"])
    if ts is None:
        return reject(Reason.WRONG_TYPE, f"turn_ts: not an ISO-8601 time or epoch milliseconds: {_preview(obj['turn_ts'])}")
    lists = {}
    for name in ("recommended_items", "accepted_items"):
        items = _items(obj.get(name))
        if items is None:
            return reject(Reason.WRONG_TYPE, f"{name}: not a list of item ids: {_preview(obj.get(name))}")
        lists[name] = items
    if obj["role"] not in ROLES:
        return reject(Reason.UNKNOWN_ENUM_VALUE, f"role: {_preview(obj['role'])} is not one of {', '.join(ROLES)}")
    if ts < min_ts or (max_ts is not None and ts >= max_ts):
        bound = f"[{min_ts.isoformat()}, {max_ts.isoformat() if max_ts else 'none'})"
        return reject(Reason.TIMESTAMP_OUT_OF_RANGE, f"turn_ts: {ts.isoformat()} outside {bound}")
    if ts > latest_ts:
        return reject(Reason.TIMESTAMP_IN_FUTURE, f"turn_ts: {ts.isoformat()} is after {latest_ts.isoformat()}")
    if index < 0:
        return reject(DialogueReason.INVALID_TURN_INDEX, f"turn_index: {index} is negative")
    if obj["role"] == "user" and lists["recommended_items"]:
        return reject(DialogueReason.MISPLACED_ITEMS, f"recommended_items on a user turn: {_preview(list(lists['recommended_items']))}")
    if obj["role"] == "assistant" and lists["accepted_items"]:
        return reject(DialogueReason.MISPLACED_ITEMS, f"accepted_items on an assistant turn: {_preview(list(lists['accepted_items']))}")
    return Turn(
        dialogue_id=dialogue_id, turn_index=index, role=obj["role"], text=obj["text"], turn_ts=ts, user_id=user_id,
        recommended_items=lists["recommended_items"], accepted_items=lists["accepted_items"],
        source_file=source_file, source_line=source_line, raw_record=text,
    )


def duplicate_reason(source_file: str, first_file: str, first_line: int) -> str:
    """The message of a ``duplicate`` letter (the wording of event ingestion)."""
    if source_file == first_file:
        return f"exact repeat of line {first_line} of the same file"
    return f"same record as {first_file} line {first_line}"


def resolve_dialogue(turns: list[Turn], committed: list[Turn] = ()) -> tuple[list[Turn], list[Rejected]]:
    """The rules across the records of one dialogue: (accepted turns by turn_index, letters).

    ``committed`` are the dialogue's turns already in ``dialogue_turns``: they are never
    rejected, they give the state the run's records are checked against.

    Walking the turn indexes in order, with the records of each index in ``(source_file,
    source_line)`` order:

    * an index already committed: a record with the committed content is accepted (the commit
      counts it as already present), a later copy of it is ``duplicate``, other content is
      ``conflicting_turn``;
    * else the first record consistent with the dialogue so far is accepted; a record is
      inconsistent when its ``user_id`` differs from the dialogue's first turn's, its
      ``turn_ts`` is before the previous turn's, or it accepts an item no earlier assistant turn
      recommended. The other records of the index are ``duplicate`` (same content as an earlier
      record of the index), ``conflicting_turn`` (other content than the accepted one) or
      ``inconsistent_dialogue`` (no record of the index is consistent).
    """
    letters: list[Rejected] = []
    known = {t.turn_index: t for t in committed}
    by_index: dict[int, list[Turn]] = {}
    for t in sorted(turns, key=lambda t: (t.source_file, t.source_line)):
        by_index.setdefault(t.turn_index, []).append(t)

    def letter(code, t: Turn, message: str) -> None:
        letters.append(Rejected(str(code), message, t.source_file, t.source_line, t.raw_record))

    accepted: list[Turn] = []
    state: list[Turn] = []
    recommended: set[str] = set()
    for index in sorted(set(by_index) | set(known)):
        candidates = by_index.get(index, [])
        chosen = known.get(index)
        if chosen is None:
            chosen = next((t for t in candidates if _inconsistency(t, state, recommended) is None), None)
        first_of: dict[str, Turn] = {}
        for t in candidates:
            if t is chosen or (index in known and t.record_hash == chosen.record_hash and t.record_hash not in first_of):
                first_of[t.record_hash] = t
                accepted.append(t)
            elif t.record_hash in first_of:
                kept = first_of[t.record_hash]
                letter(Reason.DUPLICATE, t, duplicate_reason(t.source_file, kept.source_file, kept.source_line))
            elif chosen is not None:
                where = ("the committed turn" if index in known else "the accepted turn") + f" ({chosen.source_file} line {chosen.source_line})"
                first_of.setdefault(t.record_hash, t)
                letter(DialogueReason.CONFLICTING_TURN, t, f"turn {index} of dialogue {_preview(t.dialogue_id)} differs from {where}")
            else:
                first_of.setdefault(t.record_hash, t)
                letter(DialogueReason.INCONSISTENT_DIALOGUE, t, _inconsistency(t, state, recommended))
        if chosen is not None:
            state.append(chosen)
            recommended.update(chosen.recommended_items)
    accepted.sort(key=lambda t: t.turn_index)
    return accepted, letters


def _inconsistency(t: Turn, state: list[Turn], recommended: set[str]) -> str | None:
    """Why ``t`` contradicts the dialogue so far (``state``: its turns by index), or ``None``."""
    if state and t.user_id != state[0].user_id:
        return f"user_id {_preview(t.user_id)} differs from the dialogue's {_preview(state[0].user_id)}"
    if state and t.turn_ts < state[-1].turn_ts:
        return f"turn_ts {t.turn_ts.isoformat()} is before turn {state[-1].turn_index}'s {state[-1].turn_ts.isoformat()}"
    unknown = [i for i in t.accepted_items if i not in recommended]
    if unknown:
        return f"accepted_items {_preview(unknown)} were not recommended by an earlier turn"
    return None
