"""Expectation confirmation: a score per assistant turn from what the user did next.

A :class:`Scorer` gets a :class:`TurnContext` (the assistant turn, the earlier turns of its
dialogue, the user's reply if there is one, and the observable :class:`Signals`) and returns
``(score, reasons)``: a satisfaction in [0, 5] (ECPO's scale: 5 minus penalties) and reason
codes. Its ``name``, ``version`` and ``prompt_version`` (``None`` without a prompt) are
recorded on every row of ``turn_scores``.

:class:`RuleScorer` (``dialogues.scorer: rules``, the default) is deterministic and uses only
observable signals; :class:`LLMJudgeScorer` is the hook for an external judge: it renders the
versioned :data:`JUDGE_PROMPT` and parses the judge's JSON answer, and is given the function that
calls the model (docs/ecpo.md, "Plugging in an LLM").
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from features.dialogues.contracts import SCORE_MAX, SCORE_MIN

_WORD = re.compile(r"[a-z0-9']+")
#: Words that mark a negative reply (the ``negative_reply`` rule).
NEGATIVE_WORDS = frozenset({"no", "not", "nope", "don't", "dont", "didn't", "isn't", "wrong", "else", "another", "never", "nothing"})


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters, digits, apostrophes)."""
    return _WORD.findall(text.lower())


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


@dataclass(frozen=True)
class Signals:
    """What the logs show about an assistant turn."""

    n_recommended: int
    n_accepted: int
    reply_turn_index: int | None
    reply_tokens: int | None
    is_repeated_request: bool
    is_negative_reply: bool


@dataclass(frozen=True)
class TurnContext:
    """An assistant turn to score: the turn, the earlier turns (oldest first), the reply."""

    turn: Mapping[str, Any]
    earlier: tuple[Mapping[str, Any], ...]
    reply: Mapping[str, Any] | None
    signals: Signals

    @property
    def dialogue_id(self) -> str:
        return self.turn["dialogue_id"]


@runtime_checkable
class Scorer(Protocol):
    """Scores an assistant turn; ``name``/``version``/``prompt_version`` go into the table."""

    name: str
    version: str
    prompt_version: str | None

    def score(self, context: TurnContext) -> tuple[float, Sequence[str]]: ...


@dataclass(frozen=True)
class RuleParams:
    """Thresholds of the rule-based scorer (``dialogues`` settings of the same names)."""

    repeat_jaccard: float = 0.6
    short_reply_tokens: int = 3


def signals(turn: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]], reply: Mapping[str, Any] | None,
            params: RuleParams = RuleParams()) -> Signals:
    """The observable signals of ``turn`` given the earlier turns and the reply (or ``None``)."""
    recommended = list(turn.get("recommended_items") or ())
    if reply is None:
        return Signals(len(recommended), 0, None, None, False, False)
    accepted = set(reply.get("accepted_items") or ()) & set(recommended)
    tokens = words(reply["text"])
    requests = [words(t["text"]) for t in earlier if t["role"] == "user"]
    repeated = any(jaccard(tokens, r) >= params.repeat_jaccard for r in requests)
    negative = any(w in NEGATIVE_WORDS for w in tokens)
    return Signals(len(recommended), len(accepted), int(reply["turn_index"]), len(tokens), repeated, negative)


#: Penalties of the rule-based scorer (score = 5 - the sum of the reasons that apply).
RULE_PENALTIES: Mapping[str, float] = {"no_acceptance": 2.0, "repeated_request": 2.0, "short_reply": 1.0, "negative_reply": 1.0}


class RuleScorer:
    """The default scorer: penalties from acceptance, repeated requests and the reply.

    * ``no_acceptance`` (2): the turn recommended items and the reply accepted none of them;
    * ``repeated_request`` (2): the reply accepts nothing and repeats an earlier user turn of the
      dialogue (word-set Jaccard >= ``repeat_jaccard``): the request was not met;
    * ``short_reply`` (1): a reply of at most ``short_reply_tokens`` words accepting nothing;
    * ``negative_reply`` (1): a reply with a negative word (:data:`NEGATIVE_WORDS`) accepting nothing.

    A turn without a reply (the dialogue ends there) has no evidence against it: 5.
    """

    name = "rules"
    version = "1"
    prompt_version = None

    def __init__(self, params: RuleParams = RuleParams()):
        self.params = params

    def score(self, context: TurnContext) -> tuple[float, list[str]]:
        s = context.signals
        if s.reply_turn_index is None:
            return SCORE_MAX, []
        reasons = []
        if s.n_recommended and not s.n_accepted:
            reasons.append("no_acceptance")
        if s.is_repeated_request and not s.n_accepted:
            reasons.append("repeated_request")
        if not s.n_accepted and s.reply_tokens is not None and s.reply_tokens <= self.params.short_reply_tokens:
            reasons.append("short_reply")
        if not s.n_accepted and s.is_negative_reply:
            reasons.append("negative_reply")
        score = max(SCORE_MIN, SCORE_MAX - sum(RULE_PENALTIES[r] for r in reasons))
        return score, sorted(reasons)


def render_turns(turns: Sequence[Mapping[str, Any]]) -> str:
    """Turns as ``role: text`` lines, in the given order."""
    return "\n".join(f"{t['role']}: {t['text']}" for t in turns)


_JSON_OBJECT = re.compile(r"\{.*\}", re.S)
JUDGE_PROMPT_VERSION = "ecpo-judge-1"
#: The judge prompt (``{context}``, ``{response}``, ``{reply}``); change :data:`JUDGE_PROMPT_VERSION` with it.
JUDGE_PROMPT = """You are judging one turn of a conversational recommender against the user's expectations.
Score the assistant's response on the user's satisfaction from 0 to 5: start at 5 and subtract
for poor guidance (up to 1), poor flexibility (up to 2) and poor coherence (up to 2).

Dialogue so far:
{context}

Assistant response:
{response}

User reply:
{reply}

Answer with one JSON object: {{"score": <number 0..5>, "reasons": [<short codes>]}}"""


@dataclass
class LLMJudgeScorer:
    """A scorer that asks an external judge: ``complete(prompt) -> answer text`` does the call.

    The answer must be a JSON object ``{"score": 0..5, "reasons": [...]}`` (text around it is
    ignored); anything else raises ``ValueError`` naming the dialogue and turn, so a bad judge
    fails the step instead of writing guesses. Keep ``prompt_version`` in step with ``prompt``.
    """

    complete: Callable[[str], str]
    name: str = "llm_judge"
    version: str = "1"
    prompt: str = JUDGE_PROMPT
    prompt_version: str | None = JUDGE_PROMPT_VERSION

    def render(self, context: TurnContext) -> str:
        reply = context.reply["text"] if context.reply is not None else "(the dialogue ended here)"
        return self.prompt.format(context=render_turns(context.earlier) or "(none)", response=context.turn["text"], reply=reply)

    def score(self, context: TurnContext) -> tuple[float, list[str]]:
        answer = self.complete(self.render(context))
        where = f"dialogue {context.dialogue_id} turn {context.turn['turn_index']}"
        m = _JSON_OBJECT.search(answer or "")
        try:
            obj = json.loads(m.group(0)) if m else None
            score = float(obj["score"])
            reasons = sorted(str(r) for r in obj.get("reasons", []))
        except (TypeError, ValueError, KeyError, json.JSONDecodeError):
            raise ValueError(f"{self.name}: {where}: the judge's answer is not a JSON score: {(answer or '')[:80]!r}") from None
        if not SCORE_MIN <= score <= SCORE_MAX:
            raise ValueError(f"{self.name}: {where}: score {score} outside [{SCORE_MIN}, {SCORE_MAX}]")
        return score, reasons


def score_dialogue(turns: Sequence[Mapping[str, Any]], scorer: Scorer, params: RuleParams = RuleParams()) -> list[dict]:
    """One row per assistant turn of one dialogue (``turns`` in any order): the turn_scores columns
    except ``turns_version``."""
    ordered = sorted(turns, key=lambda t: t["turn_index"])
    out = []
    for i, turn in enumerate(ordered):
        if turn["role"] != "assistant":
            continue
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        reply = nxt if nxt is not None and nxt["role"] == "user" else None
        earlier = tuple(ordered[:i])
        sig = signals(turn, earlier, reply, params)
        score, reasons = scorer.score(TurnContext(turn, earlier, reply, sig))
        score = float(score)
        if not SCORE_MIN <= score <= SCORE_MAX:
            raise ValueError(f"scorer {scorer.name}: dialogue {turn['dialogue_id']} turn {turn['turn_index']}: "
                             f"score {score} outside [{SCORE_MIN}, {SCORE_MAX}]")
        out.append({
            "dialogue_id": turn["dialogue_id"], "turn_index": int(turn["turn_index"]), "user_id": turn["user_id"],
            "turn_ts": turn["turn_ts"], "score": score, "reasons": sorted(str(r) for r in reasons),
            "n_recommended": sig.n_recommended, "n_accepted": sig.n_accepted,
            "reply_turn_index": sig.reply_turn_index, "reply_tokens": sig.reply_tokens,
            "is_repeated_request": sig.is_repeated_request,
            "scorer_name": str(scorer.name), "scorer_version": str(scorer.version),
            "prompt_version": None if scorer.prompt_version is None else str(scorer.prompt_version),
        })
    return out
