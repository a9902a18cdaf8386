"""The dialogues family (ECPO): dialogue-turn contracts, validation rules, the scorer and
rewriter interfaces and the pairing rules (docs/ecpo.md). Pure: no I/O."""
from features.dialogues.contracts import (
    CONTRACTS,
    DIALOGUE_INGEST_RUNS,
    DIALOGUE_REASON_CODES,
    DIALOGUE_TURNS,
    PREFERENCE_PAIRS,
    REJECTED_DIALOGUE_TURNS,
    ROLES,
    SCORE_MAX,
    SCORE_MIN,
    TURN_SCORES,
    DialogueReason,
)
from features.dialogues.pairing import SYSTEM_PROMPT, Rewriter, TemplateRewriter, context_window, pair_dialogue, pair_id
from features.dialogues.records import Rejected, Turn, parse_record, record_hash, resolve_dialogue
from features.dialogues.scoring import (
    JUDGE_PROMPT,
    JUDGE_PROMPT_VERSION,
    LLMJudgeScorer,
    RuleParams,
    RuleScorer,
    Scorer,
    Signals,
    TurnContext,
    score_dialogue,
    signals,
)

__all__ = [
    "CONTRACTS", "DIALOGUE_INGEST_RUNS", "DIALOGUE_REASON_CODES", "DIALOGUE_TURNS", "JUDGE_PROMPT",
    "JUDGE_PROMPT_VERSION", "LLMJudgeScorer", "PREFERENCE_PAIRS", "REJECTED_DIALOGUE_TURNS", "ROLES", "Rejected",
    "Rewriter", "RuleParams", "RuleScorer", "SCORE_MAX", "SCORE_MIN", "SYSTEM_PROMPT", "Scorer", "Signals",
    "TURN_SCORES", "TemplateRewriter", "Turn", "TurnContext", "DialogueReason", "context_window", "pair_dialogue",
    "pair_id", "parse_record", "record_hash", "resolve_dialogue", "score_dialogue", "signals",
]  # fmt: skip
