"""Contracts of the dialogues family (ECPO turn-level preference pairs, docs/ecpo.md).

Five tables:

* ``dialogue_turns``: the accepted turns of conversational-recommendation logs, one row per
  ``(dialogue_id, turn_index)``;
* ``rejected_dialogue_turns``: their dead letters (the ``rejected_events`` columns, with the
  event reason codes where they apply and :class:`DialogueReason` codes where they do not);
* ``dialogue_ingest_runs``: one row per ingestion run with its balance
  ``records_in = new_turns + already_present + rejected + duplicates``;
* ``turn_scores``: one satisfaction score per assistant turn, from a pluggable scorer whose
  name, version and prompt version are recorded on every row;
* ``preference_pairs``: assistant turns scoring below ``dialogues.pair_threshold``, with the
  rewriter's text as ``chosen``, the original as ``rejected`` and a context made of earlier turns
  of the same dialogue only.

Every timestamp is UTC (``timestamp[us, tz=UTC]``).
"""
from __future__ import annotations

import enum

import pyarrow as pa

from features.contracts import (
    WARNING,
    Param,
    TableContract,
    between,
    each_between,
    one_of,
    ordered,
    row_count_band,
    utc_date_of,
)
from features.events import TS_TYPE
from features.rejections import REJECTED_EVENTS, Reason

#: Roles a turn may have.
ROLES = ("user", "assistant")
#: The satisfaction scale of ``turn_scores.score`` (ECPO: 5 minus penalties).
SCORE_MIN, SCORE_MAX = 0.0, 5.0
_ITEMS = pa.list_(pa.string())


class DialogueReason(enum.StrEnum):
    """Reason codes of dialogue records that the event reasons (:class:`Reason`) do not cover.

    The event reasons are used wherever they apply (``unreadable_file``, ``oversized_line``,
    ``invalid_encoding``, ``unparseable_line``, ``oversized_field``, ``missing_required_field``,
    ``wrong_type``, ``unknown_enum_value``, ``timestamp_out_of_range``, ``timestamp_in_future``,
    ``duplicate``). These come after the record-level event reasons and before ``duplicate`` in
    priority, declared in priority order.
    """

    #: ``turn_index`` is negative.
    INVALID_TURN_INDEX = "invalid_turn_index"
    #: Recommended items on a user turn, or accepted items on an assistant turn.
    MISPLACED_ITEMS = "misplaced_items"
    #: Same ``(dialogue_id, turn_index)`` as an accepted (or committed) turn, different content.
    CONFLICTING_TURN = "conflicting_turn"
    #: The turn contradicts the earlier turns of its dialogue: another ``user_id``, a time before
    #: the previous turn's, or an accepted item that no earlier assistant turn recommended.
    INCONSISTENT_DIALOGUE = "inconsistent_dialogue"


#: Every reason code a dialogue dead letter may carry.
DIALOGUE_REASON_CODES: tuple[str, ...] = tuple(
    [r.value for r in Reason if r is not Reason.DUPLICATE] + [r.value for r in DialogueReason] + [Reason.DUPLICATE.value]
)

DIALOGUE_TURNS = TableContract(
    name="dialogue_turns",
    schema=pa.schema(
        [
            pa.field("dialogue_id", pa.string(), nullable=False),
            pa.field("turn_index", pa.int32(), nullable=False),
            pa.field("role", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("turn_ts", TS_TYPE, nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("recommended_items", _ITEMS, nullable=False),
            pa.field("accepted_items", _ITEMS, nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("source_line", pa.int64(), nullable=False),
            pa.field("record_hash", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
        ]
    ),
    column_docs={
        "dialogue_id": "the dialogue (a string id from the log)",
        "turn_index": "0-based position of the turn in its dialogue",
        "role": "`user` or `assistant` (the recommending agent)",
        "text": "what was said, as logged",
        "turn_ts": "when the turn was said, UTC",
        "user_id": "the user of the dialogue (the same on every turn of a dialogue)",
        "recommended_items": "items the assistant recommended in this turn (empty on user turns)",
        "accepted_items": "items the user accepted in this turn, each recommended by an earlier assistant turn (empty on assistant turns)",
        "source": "the dialogue source's name (`dialogues.source_name`)",
        "source_file": "base name of the source file",
        "source_line": "1-based line in the source file",
        "record_hash": "16 hex: sha256 of the record's canonical JSON (its fields, sorted keys); tells a repeat from a conflicting turn",
        "run_id": "the ingestion run that committed the turn",
    },
    expectations=(
        between("turn_index", 0),
        one_of("role", ROLES),
        between("source_line", 1),
        row_count_band("version", severity=WARNING),
    ),
    key=("dialogue_id", "turn_index"),
    description="Accepted turns of conversational-recommendation dialogues, validated and de-duplicated.",
    invariants=(
        "(dialogue_id, turn_index) unique; role in {user, assistant}",
        "recommended_items empty on user turns, accepted_items empty on assistant turns",
        "one user_id per dialogue; turn_ts non-decreasing with turn_index (within a run's turns)",
        "every accepted item was recommended by an earlier assistant turn of the dialogue",
    ),
)

REJECTED_DIALOGUE_TURNS = TableContract(
    name="rejected_dialogue_turns",
    schema=REJECTED_EVENTS.schema,
    column_docs={
        **REJECTED_EVENTS.column_docs,
        "source": "the dialogue source's name (`dialogues.source_name`)",
        "source_line": "1-based line of the JSON Lines file; a file-level letter (`symlink_refused`, `unreadable_file`): 0, or the line where reading stopped",
        "raw_record": "the line as read, without its line end; non-UTF-8 bytes as `\\xNN`; `oversized_line`: the first 1,024 bytes only; file-level letters: empty",
        "reason_code": "a `features.rejections.Reason` value, or a `features.dialogues.DialogueReason` value (docs/ecpo.md lists them)",
        "rejected_date": "UTC date of `rejected_at`",
    },
    expectations=(
        between("source_line", 0),
        one_of("reason_code", DIALOGUE_REASON_CODES),
        utc_date_of("rejected_date", "rejected_at"),
    ),
    key=("rejection_id",),
    description="Dead letters of dialogue ingestion: one row per dialogue record that was rejected, with its raw text, place and reason.",
    invariants=(
        "rejection_id = features.rejections.rejection_id(source, source_file, source_line, reason_code, raw_record)",
        "reason_code is a Reason or DialogueReason value",
    ),
)

DIALOGUE_INGEST_RUNS = TableContract(
    name="dialogue_ingest_runs",
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("started_at", TS_TYPE, nullable=False),
            pa.field("finished_at", TS_TYPE, nullable=False),
            pa.field("files", pa.int64(), nullable=False),
            pa.field("records_in", pa.int64(), nullable=False),
            pa.field("new_turns", pa.int64(), nullable=False),
            pa.field("already_present", pa.int64(), nullable=False),
            pa.field("rejected", pa.int64(), nullable=False),
            pa.field("duplicates", pa.int64(), nullable=False),
            pa.field("counts_by_reason", pa.string(), nullable=False),
            pa.field("turns_version", pa.int64(), nullable=False),
        ]
    ),
    column_docs={
        "run_id": "the run (Dagster run id, or a random id)",
        "source": "the dialogue source's name",
        "started_at": "when the run started, UTC",
        "finished_at": "when its commits finished, UTC",
        "files": "source files read",
        "records_in": "records read from them (a file-level dead letter counts as one)",
        "new_turns": "accepted turns added to `dialogue_turns`",
        "already_present": "accepted turns already committed with the same content",
        "rejected": "records rejected (dead letters other than `duplicate`, including `conflicting_turn` found at commit)",
        "duplicates": "exact repeats of an accepted record of the run (dead letters `duplicate`)",
        "counts_by_reason": "JSON object: reason code → count",
        "turns_version": "the `dialogue_turns` version the run left current",
    },
    expectations=(
        *(between(c, 0) for c in ("files", "records_in", "new_turns", "already_present", "rejected", "duplicates", "turns_version")),
        ordered("started_at", "finished_at"),
    ),
    key=("run_id",),
    description="One row per dialogue ingestion run: what it read, accepted, rejected (by reason) and committed.",
    invariants=("records_in = new_turns + already_present + rejected + duplicates",),
)

_SCORER_FIELDS = [
    pa.field("scorer_name", pa.string(), nullable=False),
    pa.field("scorer_version", pa.string(), nullable=False),
    pa.field("prompt_version", pa.string()),
]
_SCORER_DOCS = {
    "scorer_name": "the scorer (`rules`, or the plugin's `name`)",
    "scorer_version": "the scorer's version (a change of rules or model changes it)",
    "prompt_version": "version of the judge prompt the scorer used (an LLM judge); null for a scorer without a prompt (`rules`)",
}

TURN_SCORES = TableContract(
    name="turn_scores",
    schema=pa.schema(
        [
            pa.field("dialogue_id", pa.string(), nullable=False),
            pa.field("turn_index", pa.int32(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("turn_ts", TS_TYPE, nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("reasons", pa.list_(pa.string()), nullable=False),
            pa.field("n_recommended", pa.int32(), nullable=False),
            pa.field("n_accepted", pa.int32(), nullable=False),
            pa.field("reply_turn_index", pa.int32()),
            pa.field("reply_tokens", pa.int32()),
            pa.field("is_repeated_request", pa.bool_(), nullable=False),
            *_SCORER_FIELDS,
            pa.field("turns_version", pa.int64(), nullable=False),
        ]
    ),
    column_docs={
        "dialogue_id": "the dialogue",
        "turn_index": "the scored assistant turn",
        "user_id": "the dialogue's user",
        "turn_ts": "when the assistant turn was said, UTC",
        "score": "satisfaction in [0, 5] (5: the turn met the user's expectation; ECPO's scale); `rules`: 5 minus the penalties of `reasons`",
        "reasons": "why the score is below 5, as codes (`rules`: `no_acceptance`, `repeated_request`, `short_reply`, `negative_reply`; an LLM judge: its own), sorted",
        "n_recommended": "items recommended in the turn (count)",
        "n_accepted": "of those, items the user accepted in the reply turn (count)",
        "reply_turn_index": "the user turn that answers this one (the next turn); null when the dialogue ends here",
        "reply_tokens": "words in the reply turn (whitespace-separated); null without a reply",
        "is_repeated_request": "whether the reply repeats an earlier user request of the dialogue (word-set Jaccard >= `dialogues.repeat_jaccard`)",
        **_SCORER_DOCS,
        "turns_version": "the `dialogue_turns` version scored",
    },
    expectations=(
        between("score", SCORE_MIN, SCORE_MAX),
        between("turn_index", 0),
        between("n_recommended", 0),
        between("n_accepted", 0),
        ordered("n_accepted", "n_recommended"),
        ordered("turn_index", "reply_turn_index", strict=True),
        between("reply_tokens", 0),
        row_count_band("version", severity=WARNING),
    ),
    key=("dialogue_id", "turn_index"),
    description="One expectation-confirmation score per assistant turn, from the configured scorer (rules by default, or an LLM judge plugin).",
    invariants=(
        "one row per assistant turn of dialogue_turns, none for user turns",
        "score in [0, 5]; rules: score = 5 - penalties of reasons",
    ),
)

PREFERENCE_PAIRS = TableContract(
    name="preference_pairs",
    schema=pa.schema(
        [
            pa.field("pair_id", pa.string(), nullable=False),
            pa.field("dialogue_id", pa.string(), nullable=False),
            pa.field("turn_index", pa.int32(), nullable=False),
            pa.field("user_id", pa.string(), nullable=False),
            pa.field("system", pa.string(), nullable=False),
            pa.field("instruction", pa.string(), nullable=False),
            pa.field("context_turn_indexes", pa.list_(pa.int32()), nullable=False),
            pa.field("chosen", pa.string(), nullable=False),
            pa.field("rejected", pa.string(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("reasons", pa.list_(pa.string()), nullable=False),
            pa.field("threshold", pa.float64(), nullable=False),
            *_SCORER_FIELDS,
            pa.field("rewriter_name", pa.string(), nullable=False),
            pa.field("rewriter_version", pa.string(), nullable=False),
        ]
    ),
    column_docs={
        "pair_id": "24 hex: sha256 of dialogue_id, turn_index, scorer name and version, rewriter name and version",
        "dialogue_id": "the dialogue",
        "turn_index": "the rewritten assistant turn",
        "user_id": "the dialogue's user",
        "system": "the system prompt of the DPO record (`features.dialogues.SYSTEM_PROMPT`)",
        "instruction": "the context rendered as `role: text` lines, oldest first",
        "context_turn_indexes": "turns in the context: the up to `dialogues.context_turns` turns right before `turn_index` (never the turn itself or a later one), ascending",
        "chosen": "the rewriter's text for the turn (the preferred response)",
        "rejected": "the turn's original text",
        "score": "the turn's `turn_scores.score`, below `threshold`",
        "reasons": "the turn's `turn_scores.reasons`",
        "threshold": "`dialogues.pair_threshold` when the pairs were built: turns scoring below it are paired",
        **_SCORER_DOCS,
        "rewriter_name": "the rewriter (`template`, or the plugin's `name`)",
        "rewriter_version": "the rewriter's version",
    },
    expectations=(
        between("score", SCORE_MIN, Param("pair_threshold"), strict_max=True),
        between("turn_index", 0),
        each_between("context_turn_indexes", 0),
        row_count_band("version", severity=WARNING),
    ),
    key=("dialogue_id", "turn_index"),
    description="ECPO turn-level preference pairs: (context of earlier turns, rewrite = chosen, original = rejected) for assistant turns scoring below the threshold.",
    invariants=(
        "every element of context_turn_indexes < turn_index; at most dialogues.context_turns of them, the ones right before the turn",
        "score < threshold; chosen non-empty and != rejected (a turn without a rewrite has no pair)",
        "score, reasons and the scorer columns equal the turn's turn_scores row",
    ),
)

CONTRACTS = (DIALOGUE_TURNS, REJECTED_DIALOGUE_TURNS, DIALOGUE_INGEST_RUNS, TURN_SCORES, PREFERENCE_PAIRS)
