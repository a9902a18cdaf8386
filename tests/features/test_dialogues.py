"""The dialogues kernels: record validation, the rules across a dialogue, scoring and pairing."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.dialogues import (
    DIALOGUE_REASON_CODES,
    JUDGE_PROMPT_VERSION,
    LLMJudgeScorer,
    Rejected,
    RuleScorer,
    TemplateRewriter,
    Turn,
    context_window,
    pair_dialogue,
    parse_record,
    resolve_dialogue,
    score_dialogue,
)
from features.rejections import Reason

UTC = dt.timezone.utc
T0 = dt.datetime(2022, 4, 8, 10, tzinfo=UTC)
LIMITS = dict(max_field_chars=200, min_ts=dt.datetime(1995, 1, 1, tzinfo=UTC), max_ts=None,
              latest_ts=dt.datetime(2030, 1, 1, tzinfo=UTC))


def record(**over) -> dict:
    base = {"dialogue_id": "d1", "turn_index": 1, "role": "assistant", "text": "How about b1?",
            "turn_ts": "2022-04-08T10:00:05Z", "user_id": "u1", "recommended_items": ["b1"], "accepted_items": []}
    base.update(over)
    return base


def parse(obj, **kw) -> Turn | Rejected:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return parse_record(text, **{**LIMITS, **kw}, source_file="f.jsonl", source_line=3)


# --------------------------------------------------------------------------- one record

def test_a_good_record_is_normalised():
    t = parse(record(dialogue_id=7, user_id=12, turn_ts=1649412005000))
    assert isinstance(t, Turn)
    assert (t.dialogue_id, t.user_id, t.turn_ts) == ("7", "12", dt.datetime(2022, 4, 8, 10, 0, 5, tzinfo=UTC))
    assert t.recommended_items == ("b1",) and t.accepted_items == ()
    assert len(t.record_hash) == 16
    assert parse(record(extra_field="ignored")).record_hash == parse(record()).record_hash


@pytest.mark.parametrize(
    "obj, code",
    [
        ("{not json", Reason.UNPARSEABLE_LINE),
        ("[1, 2]", Reason.UNPARSEABLE_LINE),
        (record(text="x" * 201), Reason.OVERSIZED_FIELD),
        (record(dialogue_id=""), Reason.MISSING_REQUIRED_FIELD),
        ({k: v for k, v in record().items() if k != "user_id"}, Reason.MISSING_REQUIRED_FIELD),
        (record(text="   "), Reason.MISSING_REQUIRED_FIELD),
        (record(turn_index="2"), Reason.WRONG_TYPE),
        (record(turn_index=True), Reason.WRONG_TYPE),
        (record(turn_ts="yesterday"), Reason.WRONG_TYPE),
        (record(recommended_items="b1"), Reason.WRONG_TYPE),
        (record(user_id=[1]), Reason.WRONG_TYPE),
        (record(role="system"), Reason.UNKNOWN_ENUM_VALUE),
        (record(turn_ts="1990-01-01T00:00:00Z"), Reason.TIMESTAMP_OUT_OF_RANGE),
        (record(turn_ts="2031-01-01T00:00:00Z"), Reason.TIMESTAMP_IN_FUTURE),
        (record(turn_index=-1), "invalid_turn_index"),
        (record(role="user", recommended_items=["b1"]), "misplaced_items"),
        (record(role="assistant", recommended_items=[], accepted_items=["b1"]), "misplaced_items"),
    ],
)
def test_each_bad_record_gets_its_reason(obj, code):
    r = parse(obj)
    assert isinstance(r, Rejected), r
    assert r.reason_code == str(code) and r.reason_code in DIALOGUE_REASON_CODES
    assert (r.source_file, r.source_line) == ("f.jsonl", 3) and r.raw_record and r.reason


def test_the_first_reason_in_priority_order_wins():
    # missing text and an unknown role: presence comes before the enum
    assert parse(record(text="", role="bot")).reason_code == Reason.MISSING_REQUIRED_FIELD
    # a wrong type and a negative index: the type comes first
    assert parse(record(turn_ts="x", turn_index=-1)).reason_code == Reason.WRONG_TYPE


# --------------------------------------------------------------------------- across a dialogue

def turn(i, role="user", text=None, user="u1", rec=(), acc=(), ts=None, file="f.jsonl", line=None) -> Turn:
    return Turn("d1", i, role, text or f"turn {i}", ts or T0 + dt.timedelta(seconds=10 * i), user, tuple(rec), tuple(acc),
                file, line if line is not None else i + 1, raw_record=f"raw {i} {line}")


def test_repeats_conflicts_and_inconsistent_turns():
    turns = [
        turn(0), turn(1, "assistant", rec=["b1"]), turn(2, acc=["b1"]),
        turn(1, "assistant", rec=["b1"], file="g.jsonl", line=1),          # exact repeat in another file
        turn(2, text="other", acc=["b1"], file="g.jsonl", line=2),        # same key, other content
        turn(3, "assistant", user="u2"),                                  # another user
        turn(4, acc=["b9"]),                                              # accepts an unknown item
        turn(5, "assistant", ts=T0),                                       # earlier than turn 2
        turn(6, acc=["b1"]),
    ]
    accepted, letters = resolve_dialogue(turns)
    assert [t.turn_index for t in accepted] == [0, 1, 2, 6]
    codes = sorted((r.reason_code, r.source_file, r.source_line) for r in letters)
    assert codes == sorted([
        ("duplicate", "g.jsonl", 1), ("conflicting_turn", "g.jsonl", 2),
        ("inconsistent_dialogue", "f.jsonl", 4), ("inconsistent_dialogue", "f.jsonl", 5), ("inconsistent_dialogue", "f.jsonl", 6),
    ])
    assert len(accepted) + len(letters) == len(turns)
    dup = next(r for r in letters if r.reason_code == "duplicate")
    assert dup.reason == "same record as f.jsonl line 2"


def test_committed_turns_give_the_state():
    committed = [turn(0), turn(1, "assistant", rec=["b1"])]
    accepted, letters = resolve_dialogue([turn(1, "assistant", rec=["b1"]), turn(2, acc=["b1"]),
                                          turn(0, text="changed")], committed)
    assert [t.turn_index for t in accepted] == [1, 2]  # turn 1 again (already present), turn 2 accepts b1 of turn 1
    assert [r.reason_code for r in letters] == ["conflicting_turn"]


# --------------------------------------------------------------------------- scoring

def rows(*turns) -> list[dict]:
    return [{"dialogue_id": "d1", "turn_index": i, "role": role, "text": text, "turn_ts": T0, "user_id": "u1",
             "recommended_items": list(rec), "accepted_items": list(acc)} for i, (role, text, rec, acc) in enumerate(turns)]


DIALOGUE = rows(
    ("user", "I want a fantasy book with dragons", (), ()),
    ("assistant", "Try b1, b2", ("b1", "b2"), ()),                      # accepted: 5
    ("user", "Great, I will take b1 thanks", (), ("b1",)),
    ("assistant", "How about c7?", ("c7",), ()),                         # no acceptance, repeated request: 1
    ("user", "I want a fantasy book with dragons please", (), ()),
    ("assistant", "Then c8?", ("c8",), ()),                              # no acceptance, short, negative: 1
    ("user", "No, not that", (), ()),
    ("assistant", "Here is b3", ("b3",), ()),                            # no acceptance only: 3
    ("user", "Could you show a few more options first", (), ()),
    ("assistant", "Bye", (), ()),                                        # no reply: 5
)


def test_rule_scorer_on_a_hand_made_dialogue():
    out = {r["turn_index"]: r for r in score_dialogue(DIALOGUE, RuleScorer())}
    assert sorted(out) == [1, 3, 5, 7, 9]
    assert {i: (r["score"], r["reasons"]) for i, r in out.items()} == {
        1: (5.0, []),
        3: (1.0, ["no_acceptance", "repeated_request"]),
        5: (1.0, ["negative_reply", "no_acceptance", "short_reply"]),
        7: (3.0, ["no_acceptance"]),
        9: (5.0, []),
    }
    assert (out[1]["n_recommended"], out[1]["n_accepted"], out[1]["reply_turn_index"]) == (2, 1, 2)
    assert out[9]["reply_turn_index"] is None and out[9]["reply_tokens"] is None
    assert out[3]["is_repeated_request"] and (out[3]["scorer_name"], out[3]["prompt_version"]) == ("rules", None)


def test_llm_judge_hook_renders_the_versioned_prompt_and_parses_its_answer():
    prompts = []

    def complete(prompt: str) -> str:
        prompts.append(prompt)
        return 'Sure. {"score": 2.5, "reasons": ["off_topic"]}'

    out = score_dialogue(DIALOGUE[:4], LLMJudgeScorer(complete))
    assert [(r["turn_index"], r["score"], r["reasons"], r["prompt_version"]) for r in out] == [
        (1, 2.5, ["off_topic"], JUDGE_PROMPT_VERSION), (3, 2.5, ["off_topic"], JUDGE_PROMPT_VERSION)]
    assert "user: I want a fantasy book with dragons" in prompts[0] and "Try b1, b2" in prompts[0]
    assert "Great, I will take b1" not in prompts[0].split("User reply:")[0]  # the reply is not part of the context
    with pytest.raises(ValueError, match="not a JSON score"):
        score_dialogue(DIALOGUE[:3], LLMJudgeScorer(lambda p: "no idea"))
    with pytest.raises(ValueError, match="outside"):
        score_dialogue(DIALOGUE[:3], LLMJudgeScorer(lambda p: '{"score": 9}'))


# --------------------------------------------------------------------------- pairing

def scores_of(d) -> list[dict]:
    return score_dialogue(d, RuleScorer())


def test_thresholds_are_honoured():
    s = scores_of(DIALOGUE)
    at = lambda thr: [r["turn_index"] for r in pair_dialogue(DIALOGUE, s, thr, 6, TemplateRewriter())[0]]  # noqa: E731
    assert at(3.0) == [3, 5]           # 3.0 is not below 3.0
    assert at(3.5) == [3, 5, 7]
    assert at(5.0) == [3, 5, 7]        # a 5 is never below 5
    assert at(0.5) == []


def test_no_pair_without_a_rewrite():
    class Declines:
        name, version = "declines", "1"

        def rewrite(self, context, turn):
            return None if turn["turn_index"] == 3 else ("   " if turn["turn_index"] == 5 else turn["text"])

    pairs, without = pair_dialogue(DIALOGUE, scores_of(DIALOGUE), 4.0, 6, Declines())
    assert pairs == [] and without == 3   # None, blank, and the original text unchanged
    # the template rewriter declines a turn whose context has no user turn
    opening = rows(("assistant", "Hello, want b1?", ("b1",), ()), ("user", "no", (), ()))
    pairs, without = pair_dialogue(opening, scores_of(opening), 4.0, 6, TemplateRewriter())
    assert pairs == [] and without == 1


def test_a_context_is_earlier_turns_only():
    pairs, _ = pair_dialogue(DIALOGUE, scores_of(DIALOGUE), 4.0, 2, TemplateRewriter())
    by = {p["turn_index"]: p for p in pairs}
    assert {i: p["context_turn_indexes"] for i, p in by.items()} == {3: [1, 2], 5: [3, 4], 7: [5, 6]}
    assert by[5]["instruction"] == "assistant: How about c7?\nuser: I want a fantasy book with dragons please"
    assert by[5]["rejected"] == "Then c8?" and "c8" not in by[5]["instruction"] and "No, not that" not in by[5]["instruction"]
    assert by[5]["chosen"].startswith('Sorry, I missed what you asked for: "I want a fantasy book with dragons please"')
    assert (by[5]["rewriter_name"], by[5]["scorer_name"], by[5]["threshold"]) == ("template", "rules", 4.0)


def test_pairs_are_deterministic():
    a = pair_dialogue(DIALOGUE, scores_of(DIALOGUE), 4.0, 6, TemplateRewriter())
    b = pair_dialogue(list(reversed(DIALOGUE)), list(reversed(scores_of(DIALOGUE))), 4.0, 6, TemplateRewriter())
    assert a == b and len({p["pair_id"] for p in a[0]}) == 3


@given(
    indexes=st.lists(st.integers(0, 60), min_size=1, max_size=30, unique=True),
    target=st.integers(0, 61),
    n=st.integers(0, 12),
)
def test_context_window_property(indexes, target, n):
    turns = [{"turn_index": i, "role": "user", "text": str(i)} for i in indexes]
    window = [t["turn_index"] for t in context_window(turns, target, n)]
    earlier = sorted(i for i in indexes if i < target)
    assert all(i < target for i in window)                # never the turn itself or a later one
    assert window == sorted(window) and len(window) <= n  # oldest first, at most n
    assert window == (earlier[-n:] if n else [])          # exactly the n right before it


@st.composite
def dialogues(draw):
    n = draw(st.integers(1, 14))
    out = []
    for i in range(n):
        role = draw(st.sampled_from(["user", "assistant"]))
        rec = [f"b{i}"] if role == "assistant" else []
        acc = [f"b{i - 1}"] if role == "user" and i and out[-1]["role"] == "assistant" and draw(st.booleans()) else []
        text = draw(st.sampled_from(["I want a fantasy book", "no", "not those", "ok I take it", "more please", "x y z w v"]))
        out.append({"dialogue_id": "d", "turn_index": i, "role": role, "text": text, "turn_ts": T0, "user_id": "u",
                    "recommended_items": rec, "accepted_items": acc})
    return out


@given(d=dialogues(), threshold=st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]), n=st.integers(0, 5))
def test_pairs_property(d, threshold, n):
    scores = score_dialogue(d, RuleScorer())
    pairs, without = pair_dialogue(d, scores, threshold, n, TemplateRewriter())
    below = {s["turn_index"] for s in scores if s["score"] < threshold}
    assert {p["turn_index"] for p in pairs} <= below and len(pairs) + without == len(below)
    for p in pairs:
        expected = [t["turn_index"] for t in d if t["turn_index"] < p["turn_index"]][-n:] if n else []
        assert p["context_turn_indexes"] == expected and all(i < p["turn_index"] for i in expected)
        assert p["rejected"] == d[p["turn_index"]]["text"] and p["chosen"] != p["rejected"]
