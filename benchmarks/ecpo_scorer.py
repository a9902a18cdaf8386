"""ECPO rule-based scorer on the synthetic dialogues: precision and recall on the planted turns.

Generates the synthetic dialogues of ``recfeat.yaml`` (``dialogues.generator``; 300 dialogues
by default), reads them back through the dialogue source adapter and its validation rules
(``pipelines/dialogues/source.py``, ``features.dialogues.resolve_dialogue``), scores every
assistant turn with the configured rule-based scorer (the kernel the ``turn_scores`` Spark job
runs in each task) and compares the turns scoring below ``dialogues.pair_threshold`` (the ones
``preference_pairs`` rewrites) with the planted unsatisfying turns of ``truth.json``. The
baseline, measured in the same run, flags every recommending turn whose reply accepts nothing
(acceptance alone). ``--seeds N`` repeats it over N generator seeds; ``--dialogues`` overrides
the generator's size.

    nice -n 10 .venv/bin/python benchmarks/ecpo_scorer.py
    nice -n 10 .venv/bin/python benchmarks/ecpo_scorer.py --seeds 5 --dialogues 1000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _prf(flagged: set, truth: set) -> tuple[float, float, float]:
    tp = len(flagged & truth)
    p = tp / len(flagged) if flagged else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def run(params, seed: int, dialogues: int | None) -> dict:
    from features.dialogues import RuleScorer, Turn, resolve_dialogue, score_dialogue
    from pipelines.dialogues.ingest import turn_row
    from pipelines.dialogues.source import Limits, dialogue_files, read_file
    from pipelines.dialogues.synthetic import generate, read_truth
    from pipelines.sections import IngestRules

    update = {"seed": seed} | ({"dialogues": dialogues} if dialogues else {})
    gen = params.generator.model_copy(update=update)
    with tempfile.TemporaryDirectory() as folder:
        generate(folder, gen)
        truth = read_truth(folder)
        by_dialogue: dict[str, list] = {}
        for path in dialogue_files(folder):
            for rec in read_file(path, Limits.from_rules(IngestRules())):
                assert isinstance(rec, Turn), rec
                by_dialogue.setdefault(rec.dialogue_id, []).append(rec)
    scorer = RuleScorer(params.rule_params())
    scores = []
    for d in sorted(by_dialogue):
        accepted, letters = resolve_dialogue(by_dialogue[d])
        assert not letters, letters
        scores += score_dialogue([turn_row(t) for t in accepted], scorer, params.rule_params())
    out = {"dialogues": len(by_dialogue), "assistant_turns": len(scores), "planted": len(truth)}
    for thr in sorted({2.0, 3.0, params.pair_threshold, 5.0}):
        flagged = {(s["dialogue_id"], s["turn_index"]) for s in scores if s["score"] < thr}
        out[f"rules<{thr:g}"] = (len(flagged), *_prf(flagged, truth))
    base = {(s["dialogue_id"], s["turn_index"]) for s in scores if s["n_recommended"] and s["reply_turn_index"] is not None and not s["n_accepted"]}
    out["baseline"] = (len(base), *_prf(base, truth))
    return out


def main() -> None:
    from pipelines.settings import load_settings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "recfeat.yaml"))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--dialogues", type=int, default=None)
    args = ap.parse_args()
    params = load_settings(args.config).dialogues
    print(f"rule scorer {params.scorer!r}, pair_threshold {params.pair_threshold:g}, repeat_jaccard {params.repeat_jaccard:g}, "
          f"short_reply_tokens {params.short_reply_tokens}")
    print(f"{'seed':>9} {'dialogues':>9} {'turns':>6} {'planted':>7}  {'scorer':<11} {'flagged':>7} {'precision':>9} {'recall':>6} {'F1':>6}")
    for k in range(args.seeds):
        seed = params.generator.seed + k
        out = run(params, seed, args.dialogues)
        keys = [k for k in out if k.startswith("rules<")] + ["baseline"]
        for i, key in enumerate(keys):
            n, p, r, f1 = out[key]
            head = f"{seed:>9} {out['dialogues']:>9} {out['assistant_turns']:>6} {out['planted']:>7}" if i == 0 else " " * 34
            print(f"{head}  {key:<11} {n:>7} {p:>9.3f} {r:>6.3f} {f1:>6.3f}")
        _, p, r, f1 = out[f"rules<{params.pair_threshold:g}"]
        _, bp, br, bf1 = out["baseline"]
        print(f"{'':>34}  at the threshold: precision {p:.3f} (x{p / bp:.2f} the baseline), recall {r:.3f} (x{r / br:.2f}), F1 x{f1 / bf1:.2f}")


if __name__ == "__main__":
    main()
