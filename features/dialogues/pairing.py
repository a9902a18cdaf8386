"""ECPO preference pairs: low-scoring assistant turns, their rewrites and their contexts.

The pairing rules (:func:`pair_dialogue`):

* a turn is paired only when its score is below the threshold (``score < threshold``);
* its context is the up to ``context_turns`` turns right before it in the same dialogue
  (:func:`context_window`): never the turn itself, never a later turn;
* ``chosen`` is the :class:`Rewriter`'s text; a rewriter that returns nothing (``None`` or
  only white space), or the original text, gives no pair;
* ``pair_id`` depends only on the turn and on the scorer's and rewriter's names and versions,
  so a re-run gives the same pairs.

:class:`TemplateRewriter` is the default: a deterministic template that stands in for an LLM
rewriter (ECPO's backward expectation derivation) so the pipeline runs end to end. Plug in a
real one with ``dialogues.rewriter: package.module:attr`` (docs/ecpo.md).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from features.dialogues.scoring import render_turns
from features.events import ID_SEPARATOR

#: The system prompt of every pair (the DPO record's ``system`` field).
SYSTEM_PROMPT = (
    "You are a conversational recommender. Read the dialogue and give the next assistant turn: "
    "meet the user's stated expectations and recommend items that fit them."
)


@runtime_checkable
class Rewriter(Protocol):
    """Rewrites an unsatisfying assistant turn; ``name``/``version`` go into the table."""

    name: str
    version: str

    def rewrite(self, context: Sequence[Mapping[str, Any]], turn: Mapping[str, Any]) -> str | None: ...


class TemplateRewriter:
    """A placeholder for an LLM rewriter: restates the user's last request and asks to refine it.

    Deterministic; returns ``None`` when the context has no user turn (nothing to restate), so
    such turns get no pair.
    """

    name = "template"
    version = "1"

    def rewrite(self, context: Sequence[Mapping[str, Any]], turn: Mapping[str, Any]) -> str | None:
        requests = [t["text"].strip() for t in context if t["role"] == "user" and t["text"].strip()]
        if not requests:
            return None
        return (f'Sorry, I missed what you asked for: "{requests[-1]}". '
                "Here are picks that match that request more closely; tell me what to change if they still miss.")


def context_window(turns: Sequence[Mapping[str, Any]], turn_index: int, context_turns: int) -> list[Mapping[str, Any]]:
    """The up to ``context_turns`` turns with ``turn_index`` below ``turn_index``, oldest first."""
    earlier = sorted((t for t in turns if t["turn_index"] < turn_index), key=lambda t: t["turn_index"])
    return earlier[-context_turns:] if context_turns > 0 else []


def pair_id(dialogue_id: str, turn_index: int, scorer_name: str, scorer_version: str, rewriter_name: str, rewriter_version: str) -> str:
    text = ID_SEPARATOR.join((dialogue_id, str(turn_index), scorer_name, scorer_version, rewriter_name, rewriter_version))
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:24]


def pair_dialogue(
    turns: Sequence[Mapping[str, Any]],
    scores: Sequence[Mapping[str, Any]],
    threshold: float,
    context_turns: int,
    rewriter: Rewriter,
) -> tuple[list[dict], int]:
    """Pairs of one dialogue: (rows of ``preference_pairs``, turns below the threshold without a rewrite).

    ``turns``: the dialogue's turns (``dialogue_turns`` columns); ``scores``: its ``turn_scores`` rows.
    """
    by_index = {int(t["turn_index"]): t for t in turns}
    rows, no_rewrite = [], 0
    for s in sorted(scores, key=lambda s: s["turn_index"]):
        if not s["score"] < threshold:
            continue
        turn = by_index.get(int(s["turn_index"]))
        if turn is None:
            continue
        context = context_window(turns, int(s["turn_index"]), context_turns)
        text = rewriter.rewrite([dict(c) for c in context], dict(turn))
        if text is None or not str(text).strip() or str(text) == turn["text"]:
            no_rewrite += 1
            continue
        rows.append({
            "pair_id": pair_id(turn["dialogue_id"], int(turn["turn_index"]), s["scorer_name"], s["scorer_version"],
                               str(rewriter.name), str(rewriter.version)),
            "dialogue_id": turn["dialogue_id"], "turn_index": int(turn["turn_index"]), "user_id": turn["user_id"],
            "system": SYSTEM_PROMPT, "instruction": render_turns(context),
            "context_turn_indexes": [int(c["turn_index"]) for c in context],
            "chosen": str(text), "rejected": turn["text"], "score": float(s["score"]), "reasons": list(s["reasons"]),
            "threshold": float(threshold),
            "scorer_name": s["scorer_name"], "scorer_version": s["scorer_version"], "prompt_version": s["prompt_version"],
            "rewriter_name": str(rewriter.name), "rewriter_version": str(rewriter.version),
        })
    return rows, no_rewrite
