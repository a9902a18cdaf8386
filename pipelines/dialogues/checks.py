"""Invariant counters of the dialogues family: ``{violation: count}``, all 0 when the table holds.

The tables are small (one row per turn), so the counters read them with Arrow on the driver.
"""
from __future__ import annotations

from collections import defaultdict

from features.dialogues.contracts import (
    DIALOGUE_INGEST_RUNS,
    DIALOGUE_TURNS,
    PREFERENCE_PAIRS,
    SCORE_MAX,
    SCORE_MIN,
    TURN_SCORES,
)
from features.dialogues.scoring import RULE_PENALTIES
from pipelines.family import JobContext


def check_dialogue_turns(ctx: JobContext) -> dict[str, int]:
    rows = ctx.warehouse.read_arrow(DIALOGUE_TURNS.name).to_pylist()
    by_dialogue = defaultdict(list)
    for r in rows:
        by_dialogue[r["dialogue_id"]].append(r)
    users, unknown_accepts = 0, 0
    for turns in by_dialogue.values():
        turns.sort(key=lambda r: r["turn_index"])
        users += len({t["user_id"] for t in turns}) - 1
        seen: set[str] = set()
        for t in turns:
            unknown_accepts += any(i not in seen for i in t["accepted_items"])
            seen.update(t["recommended_items"])
    return {
        "rows": len(rows),
        "duplicate_keys": len(rows) - len({(r["dialogue_id"], r["turn_index"]) for r in rows}),
        "items_on_the_wrong_role": sum((r["role"] == "user" and bool(r["recommended_items"]))
                                       or (r["role"] == "assistant" and bool(r["accepted_items"])) for r in rows),
        "extra_users_in_a_dialogue": users,
        "accepted_items_not_recommended_before": unknown_accepts,
    }


def check_dialogue_ingest_runs(ctx: JobContext) -> dict[str, int]:
    from pipelines.dialogues.ingest import balance_holds

    rows = ctx.warehouse.read_arrow(DIALOGUE_INGEST_RUNS.name).to_pylist()
    return {"rows": len(rows), "runs_out_of_balance": sum(not balance_holds(r) for r in rows)}


def check_turn_scores(ctx: JobContext) -> dict[str, int]:
    wh = ctx.warehouse
    manifest = wh.manifest(TURN_SCORES.name)
    scores = wh.read_arrow(TURN_SCORES.name).to_pylist()
    version = int(manifest.producer.get("turns_version", wh.current_version(DIALOGUE_TURNS.name)))
    turns = wh.read_arrow(DIALOGUE_TURNS.name, version=version, columns=["dialogue_id", "turn_index", "role"]).to_pylist()
    assistant = {(t["dialogue_id"], t["turn_index"]) for t in turns if t["role"] == "assistant"}
    scored = {(s["dialogue_id"], s["turn_index"]) for s in scores}
    rules = [s for s in scores if s["scorer_name"] == "rules"]
    return {
        "rows": len(scores),
        "scores_out_of_range": sum(not SCORE_MIN <= s["score"] <= SCORE_MAX for s in scores),
        "scored_turns_not_assistant_turns": len(scored - assistant),
        "assistant_turns_without_a_score": len(assistant - scored),
        "rules_score_not_5_minus_penalties": sum(
            abs(s["score"] - max(SCORE_MIN, SCORE_MAX - sum(RULE_PENALTIES.get(r, 0.0) for r in s["reasons"]))) > 1e-9 for s in rules
        ),
    }


def check_preference_pairs(ctx: JobContext) -> dict[str, int]:
    wh, p = ctx.warehouse, ctx.params
    pairs = wh.read_arrow(PREFERENCE_PAIRS.name).to_pylist()
    version = wh.manifest(PREFERENCE_PAIRS.name).producer.get("turn_scores_version")
    scores = wh.read_arrow(TURN_SCORES.name, version=int(version) if version else None).to_pylist()
    by_key = {(s["dialogue_id"], s["turn_index"]): s for s in scores}

    def matches(pair) -> bool:
        s = by_key.get((pair["dialogue_id"], pair["turn_index"]))
        return s is not None and all(s[c] == pair[c] for c in ("score", "reasons", "scorer_name", "scorer_version", "prompt_version"))

    def window_ok(pair) -> bool:
        idx = pair["context_turn_indexes"]
        return (all(i < pair["turn_index"] for i in idx) and idx == sorted(idx) and len(set(idx)) == len(idx)
                and len(idx) <= p.context_turns)

    return {
        "rows": len(pairs),
        "context_not_strictly_before_the_turn": sum(not window_ok(x) for x in pairs),
        "score_not_below_threshold": sum(not x["score"] < x["threshold"] for x in pairs),
        "empty_or_unchanged_rewrite": sum((not x["chosen"].strip()) or x["chosen"] == x["rejected"] for x in pairs),
        "pairs_not_matching_their_turn_score": sum(not matches(x) for x in pairs),
    }
