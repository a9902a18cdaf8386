"""The dialogues jobs: Beam ingestion with dead letters, the generator, turn_scores and preference_pairs."""
from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import sys

import pyarrow as pa
import pytest

from features.dialogues import DIALOGUE_REASON_CODES
from pipelines.dialogues.checks import check_dialogue_ingest_runs, check_dialogue_turns, check_preference_pairs, check_turn_scores
from pipelines.dialogues.ingest import ingest_dialogues
from pipelines.dialogues.params import DialogueGeneratorSettings, DialoguesSettings
from pipelines.dialogues.plugins import PluginError, load_rewriter, load_scorer
from pipelines.dialogues.synthetic import generate, read_truth
from pipelines.family import JobContext
from pipelines.sections import IngestRules
from pipelines.warehouse import Warehouse

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def line(**over) -> str:
    base = {"dialogue_id": "d1", "turn_index": 0, "role": "user", "text": "a fantasy book please",
            "turn_ts": "2022-04-08T10:00:00Z", "user_id": "u1", "recommended_items": [], "accepted_items": []}
    base.update(over)
    return json.dumps(base)


GOOD = [
    line(),
    line(turn_index=1, role="assistant", text="Try b1 or b2", turn_ts="2022-04-08T10:00:05Z", recommended_items=["b1", "b2"]),
    line(turn_index=2, text="I take b1", turn_ts="2022-04-08T10:00:30Z", accepted_items=["b1"]),
]
BAD = [  # (line, reason)
    ("{broken", "unparseable_line"),
    (line(dialogue_id="d2", text=""), "missing_required_field"),
    (line(dialogue_id="d2", turn_index="one"), "wrong_type"),
    (line(dialogue_id="d2", role="bot"), "unknown_enum_value"),
    (line(dialogue_id="d2", turn_ts="1980-01-01T00:00:00Z"), "timestamp_out_of_range"),
    (line(dialogue_id="d2", turn_ts="2027-01-01T00:00:00Z"), "timestamp_in_future"),
    (line(dialogue_id="d2", turn_index=-3), "invalid_turn_index"),
    (line(dialogue_id="d2", recommended_items=["x"]), "misplaced_items"),
    (line(dialogue_id="d2", text="y" * 5000), "oversized_field"),
    (GOOD[1], "duplicate"),
    (line(turn_index=1, role="assistant", text="something else", turn_ts="2022-04-08T10:00:05Z"), "conflicting_turn"),
    (line(turn_index=3, role="assistant", user_id="u9", turn_ts="2022-04-08T10:01:00Z"), "inconsistent_dialogue"),
]


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "dialogues"
    src.mkdir()
    (src / "a.jsonl").write_text("\n".join(GOOD) + "\n")
    body = "\n".join(l for l, _ in BAD).encode() + b"\n" + b'{"text": "\xff\xfe"}\n' + b"z" * 10000 + b"\n\n"
    (src / "b.jsonl").write_bytes(body)
    (src / "empty.jsonl").write_bytes(b"")
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb") as fh:
        fh.write(("\n".join(line(dialogue_id=f"g{i}") for i in range(4000)) + "\n").encode())
    (src / "cut.jsonl.gz").write_bytes(gz.getvalue()[: len(gz.getvalue()) // 2])
    os.symlink(src / "a.jsonl", src / "link.jsonl")
    (src / "notes.txt").write_text("not a dialogue file")
    return src


RULES = IngestRules(max_line_bytes=8192)


def test_bad_dialogue_records_become_dead_letters_and_the_counts_balance(folder, tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    r = ingest_dialogues(wh, str(folder), RULES, run_id="run1", now=NOW)
    turns = wh.read_arrow("dialogue_turns").to_pylist()
    keys = [(t["dialogue_id"], t["turn_index"]) for t in turns]
    assert keys == sorted(keys) and [k for k in keys if k[0] == "d1"] == [("d1", 0), ("d1", 1), ("d1", 2)]
    gz_turns = sum(t["dialogue_id"].startswith("g") for t in turns)
    assert 0 < gz_turns < 4000  # the lines before the cut are records; then one unreadable_file letter
    letters = wh.read_arrow("rejected_dialogue_turns").to_pylist()
    by_reason: dict[str, int] = {}
    for row in letters:
        by_reason[row["reason_code"]] = by_reason.get(row["reason_code"], 0) + 1
    expected = {reason: 1 for _, reason in BAD}
    expected.update({"invalid_encoding": 1, "oversized_line": 1, "unreadable_file": 2, "symlink_refused": 1})
    assert by_reason == expected
    assert all(row["reason_code"] in DIALOGUE_REASON_CODES and row["run_id"] == "run1" for row in letters)
    cut = next(row for row in letters if row["source_file"] == "cut.jsonl.gz")
    assert cut["source_line"] == gz_turns and "cannot read after line" in cut["reason"]
    dup = next(row for row in letters if row["reason_code"] == "duplicate")
    assert (dup["source_file"], dup["source_line"], dup["reason"]) == ("b.jsonl", 10, "same record as a.jsonl line 2")
    # records in = accepted + rejected + duplicates
    assert r.records_in == 3 + len(BAD) + 2 + 2 + 1 + gz_turns
    assert r.records_in == r.new_turns + r.already_present + r.rejected + r.duplicates
    assert (r.new_turns, r.duplicates, r.rejected) == (3 + gz_turns, 1, len(BAD) - 1 + 2 + 2 + 1)
    run = wh.read_arrow("dialogue_ingest_runs").to_pylist()[0]
    assert json.loads(run["counts_by_reason"]) == expected and run["files"] == 5
    ctx = JobContext(warehouse=wh, settings=None, params=DialoguesSettings())
    assert check_dialogue_ingest_runs(ctx) == {"rows": 1, "runs_out_of_balance": 0}
    assert check_dialogue_turns(ctx) == {"rows": 3 + gz_turns, "duplicate_keys": 0, "items_on_the_wrong_role": 0,
                                         "extra_users_in_a_dialogue": 0, "accepted_items_not_recommended_before": 0}

    # A re-run over the same files adds nothing: no new turns version, no new letters.
    turns_version = wh.current_version("dialogue_turns")
    r2 = ingest_dialogues(wh, str(folder), RULES, run_id="run2", now=NOW)
    assert (r2.new_turns, r2.already_present) == (0, 3 + gz_turns)
    assert wh.current_version("dialogue_turns") == turns_version
    assert wh.read_arrow("rejected_dialogue_turns").num_rows == len(letters)
    assert check_dialogue_ingest_runs(ctx) == {"rows": 2, "runs_out_of_balance": 0}

    # A later file with the dialogue's next turns is checked against the committed ones.
    (folder / "c.jsonl").write_text(line(turn_index=3, role="assistant", text="More: b3", turn_ts="2022-04-08T10:02:00Z",
                                         recommended_items=["b3"]) + "\n"
                                    + line(turn_index=4, text="b3 and b2 then", turn_ts="2022-04-08T10:02:30Z",
                                           accepted_items=["b3", "b2"]) + "\n"
                                    + line(turn_index=0, text="changed my mind") + "\n")
    r3 = ingest_dialogues(wh, str(folder), RULES, run_id="run3", now=NOW)
    # conflicting: b.jsonl's turn 1 (now against the committed turn), b.jsonl's turn 3 (against
    # the consistent turn 3 of c.jsonl, which is accepted) and c.jsonl's changed turn 0
    assert r3.new_turns == 2 and r3.by_reason.get("conflicting_turn") == 3 and "inconsistent_dialogue" not in r3.by_reason
    assert check_dialogue_turns(ctx)["accepted_items_not_recommended_before"] == 0


def test_the_generator_is_seeded_and_deterministic(tmp_path):
    p = DialogueGeneratorSettings(dialogues=40, files=3)
    a, b = generate(str(tmp_path / "a"), p), generate(str(tmp_path / "b"), p)
    assert [open(f, "rb").read() for f in a.files] == [open(f, "rb").read() for f in b.files]
    assert a.planted == b.planted and 0 < len(a.planted) < a.turns and read_truth(str(tmp_path / "a")) == set(a.planted)
    c = generate(str(tmp_path / "c"), p.model_copy(update={"seed": 1}))
    assert [open(f, "rb").read() for f in c.files] != [open(f, "rb").read() for f in a.files]


PLUGIN = '''
class FixedJudge:
    """A stand-in for an LLM judge: scores every turn 2 with a versioned prompt."""
    version = "7"
    prompt_version = "judge-prompt-3"

    def __init__(self, name="fixed_judge", score=2.0):
        self.name, self._score = name, score

    def score(self, context):
        return self._score, ["judged"]


class EchoRewriter:
    name, version = "echo", "2"

    def rewrite(self, context, turn):
        return "better: " + turn["text"]
'''


@pytest.fixture
def plugin_module(spark, tmp_path, monkeypatch):
    path = tmp_path / "ecpo_test_plugins.py"
    path.write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    spark.sparkContext.addPyFile(str(path))
    yield "ecpo_test_plugins"
    sys.modules.pop("ecpo_test_plugins", None)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_scores_and_pairs_on_synthetic_dialogues_and_a_rerun_is_identical(spark, tmp_path):
    from pipelines.dialogues.job import build_preference_pairs, build_turn_scores

    params = DialoguesSettings(generator=DialogueGeneratorSettings(dialogues=60), partitions=2)
    generate(str(tmp_path / "src"), params.generator)
    wh = Warehouse(str(tmp_path / "wh"))
    ingest_dialogues(wh, str(tmp_path / "src"), IngestRules())
    scores = build_turn_scores(spark, wh, params)
    pairs = build_preference_pairs(spark, wh, params)
    ctx = JobContext(warehouse=wh, settings=None, params=params)
    s_table, p_table = wh.read_arrow("turn_scores"), wh.read_arrow("preference_pairs")
    assert scores.stats["turn_scores"]["turns_scored"] == s_table.num_rows > 0
    assert pairs.stats["preference_pairs"]["pairs"] == p_table.num_rows == scores.stats["turn_scores"]["below_threshold"]
    assert all(v == 0 for k, v in check_turn_scores(ctx).items() if k != "rows")
    assert all(v == 0 for k, v in check_preference_pairs(ctx).items() if k != "rows")
    # parity: the Spark job gives the rows of the plain kernel over the committed turns
    from features.dialogues import RuleScorer, score_dialogue

    by_dialogue: dict[str, list] = {}
    for t in wh.read_arrow("dialogue_turns").to_pylist():
        by_dialogue.setdefault(t["dialogue_id"], []).append(t)
    plain = [r for d in sorted(by_dialogue) for r in score_dialogue(by_dialogue[d], RuleScorer(params.rule_params()), params.rule_params())]
    spark_rows = [{k: v for k, v in r.items() if k != "turns_version"} for r in s_table.to_pylist()]
    assert spark_rows == plain
    truth = read_truth(str(tmp_path / "src"))
    found = {(r["dialogue_id"], r["turn_index"]) for r in p_table.to_pylist()}
    assert len(found & truth) / len(truth) > 0.7 and len(found & truth) / len(found) > 0.9

    build_turn_scores(spark, wh, params)
    build_preference_pairs(spark, wh, params)
    assert _ipc(wh.read_arrow("turn_scores")) == _ipc(s_table)
    assert _ipc(wh.read_arrow("preference_pairs")) == _ipc(p_table)


@pytest.mark.slow
def test_plugin_scorer_and_rewriter_by_class_path(spark, tmp_path, plugin_module):
    from pipelines.dialogues.job import build_preference_pairs, build_turn_scores

    params = DialoguesSettings(generator=DialogueGeneratorSettings(dialogues=20), partitions=2)
    generate(str(tmp_path / "src"), params.generator)
    wh = Warehouse(str(tmp_path / "wh"))
    ingest_dialogues(wh, str(tmp_path / "src"), IngestRules())
    # name, version and prompt version land in both tables: name, version and prompt version land in both tables.
    plugged = params.model_copy(update={"scorer": f"{plugin_module}:FixedJudge", "scorer_options": {"score": 2.5},
                                        "rewriter": f"{plugin_module}:EchoRewriter"})
    build_turn_scores(spark, wh, plugged)
    build_preference_pairs(spark, wh, plugged)
    s2, p2 = wh.read_arrow("turn_scores").to_pylist(), wh.read_arrow("preference_pairs").to_pylist()
    assert {(r["scorer_name"], r["scorer_version"], r["prompt_version"], r["score"]) for r in s2} == {("fixed_judge", "7", "judge-prompt-3", 2.5)}
    assert len(p2) == len(s2)  # every turn is below the threshold now
    assert {(r["rewriter_name"], r["rewriter_version"], r["prompt_version"]) for r in p2} == {("echo", "2", "judge-prompt-3")}
    assert all(r["chosen"] == "better: " + r["rejected"] for r in p2)
    ctx = JobContext(warehouse=wh, settings=None, params=plugged)
    assert all(v == 0 for k, v in check_preference_pairs(ctx).items() if k != "rows")


def test_plugin_specs_are_checked():
    with pytest.raises(ValueError, match="scorer must be 'rules' or 'package.module:attr'"):
        DialoguesSettings(scorer="my_judge")
    with pytest.raises(PluginError, match="cannot import"):
        load_scorer("no_such_module_xyz:Judge")
    with pytest.raises(PluginError, match="has no attribute"):
        load_rewriter("features.dialogues.pairing:NoSuchRewriter")
    with pytest.raises(PluginError, match="without"):
        load_scorer("features.dialogues.pairing:TemplateRewriter")
    assert load_scorer("features.dialogues.scoring:RuleScorer").name == "rules"
