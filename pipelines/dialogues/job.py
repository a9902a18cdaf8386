"""Jobs of the dialogues family (docs/ecpo.md): ingestion, ``turn_scores``, ``preference_pairs``.

* :func:`run_dialogue_ingest`: (the synthetic dialogues, when configured, then) the Beam
  ingestion of :mod:`.ingest` into ``dialogue_turns``, ``rejected_dialogue_turns`` and
  ``dialogue_ingest_runs``.
* :func:`build_turn_scores`: a Spark job. The turns are hash-partitioned by ``dialogue_id``
  (``dialogues.partitions``) and each task loads the configured scorer (``dialogues.scorer``)
  and scores every assistant turn of its dialogues (:func:`features.dialogues.score_dialogue`).
* :func:`build_preference_pairs`: a Spark job. The turns scoring below
  ``dialogues.pair_threshold`` are joined with their dialogue's turns (read at the version
  the scores were built on); each task loads the configured rewriter and builds the pairs
  (:func:`features.dialogues.pair_dialogue`).

Both tables are collected on the driver, sorted by key and written as one file, so a re-run on the
same input gives byte-identical table content.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import pyarrow as pa

from features.dialogues.contracts import (
    DIALOGUE_INGEST_RUNS,
    DIALOGUE_TURNS,
    PREFERENCE_PAIRS,
    REJECTED_DIALOGUE_TURNS,
    TURN_SCORES,
)
from pipelines.family import JobContext, JobResult

_TURN_COLUMNS = ["dialogue_id", "turn_index", "role", "text", "turn_ts", "user_id", "recommended_items", "accepted_items"]
_SCORE_COLUMNS = ["score", "reasons", "scorer_name", "scorer_version", "prompt_version"]


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(pa.schema([f.with_nullable(True) for f in schema]))


def _collect(df, contract) -> pa.Table:
    """The DataFrame on the driver, conformed to ``contract`` and sorted by its key."""
    table = contract.conform(df.toArrow())
    return table.sort_by([(k, "ascending") for k in contract.key]) if table.num_rows else table


def _by_dialogue(batches) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for batch in batches:
        for row in batch.to_pylist():
            groups[row["dialogue_id"]].append(row)
    return groups


def _scoring_task(spec: str, options: dict, rules, turns_version: int):
    def run(batches):
        from features.dialogues.scoring import score_dialogue
        from pipelines.dialogues.plugins import load_scorer

        scorer = load_scorer(spec, options, rules)
        out = []
        groups = _by_dialogue(batches)
        for dialogue_id in sorted(groups):
            out += score_dialogue(groups[dialogue_id], scorer, rules)
        for row in out:
            row["turns_version"] = turns_version
        if out:
            yield from pa.Table.from_pylist(out, schema=TURN_SCORES.schema).to_batches()

    return run


def _pairing_task(spec: str, options: dict, threshold: float, context_turns: int):
    def run(batches):
        from features.dialogues.pairing import pair_dialogue
        from pipelines.dialogues.plugins import load_rewriter

        rewriter = load_rewriter(spec, options)
        out = []
        groups = _by_dialogue(batches)
        for dialogue_id in sorted(groups):
            turns = groups[dialogue_id]
            scores = [t for t in turns if t["score"] is not None]
            rows, _ = pair_dialogue(turns, scores, threshold, context_turns, rewriter)
            out += rows
        if out:
            yield from pa.Table.from_pylist(out, schema=PREFERENCE_PAIRS.schema).to_batches()

    return run


def build_turn_scores(spark, warehouse, params) -> JobResult:
    """Score every assistant turn of the committed ``dialogue_turns`` (module docstring)."""
    from pipelines.dialogues.plugins import load_scorer

    scorer = load_scorer(params.scorer, params.scorer_options, params.rule_params())  # fail early, on the driver
    version = warehouse.current_version(DIALOGUE_TURNS.name)
    turns = warehouse.read_spark(spark, DIALOGUE_TURNS.name, version=version).select(*_TURN_COLUMNS)
    task = _scoring_task(params.scorer, dict(params.scorer_options), params.rule_params(), int(version))
    df = turns.repartition(params.partitions, "dialogue_id").mapInArrow(task, _spark_schema(TURN_SCORES.schema))
    table = _collect(df, TURN_SCORES)
    producer = {"job": "build_turn_scores", "scorer": f"{scorer.name}:{scorer.version}",
                "prompt_version": str(scorer.prompt_version), "turns_version": str(version)}
    manifest = warehouse.write_arrow(TURN_SCORES, table, producer=producer)
    scores = table.column("score").to_pylist()
    reasons = Counter(r for rs in table.column("reasons").to_pylist() for r in rs)
    stats = {
        "turns_scored": table.num_rows, "scorer": f"{scorer.name}:{scorer.version}", "turns_version": int(version),
        "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
        "below_threshold": sum(s < params.pair_threshold for s in scores), "reasons": dict(sorted(reasons.items())),
    }
    return JobResult({TURN_SCORES.name: manifest}, {TURN_SCORES.name: stats})


def build_preference_pairs(spark, warehouse, params) -> JobResult:
    """Pair the committed ``turn_scores`` below the threshold with their rewrites (module docstring)."""
    from pyspark.sql import functions as F

    from pipelines.dialogues.plugins import load_rewriter

    rewriter = load_rewriter(params.rewriter, params.rewriter_options)  # fail early, on the driver
    scores_manifest = warehouse.manifest(TURN_SCORES.name)
    turns_version = int(scores_manifest.producer.get("turns_version", warehouse.current_version(DIALOGUE_TURNS.name)))
    low = (warehouse.read_spark(spark, TURN_SCORES.name, version=scores_manifest.version)
           .filter(F.col("score") < F.lit(params.pair_threshold))
           .select("dialogue_id", "turn_index", *_SCORE_COLUMNS))
    below = low.count()
    turns = warehouse.read_spark(spark, DIALOGUE_TURNS.name, version=turns_version).select(*_TURN_COLUMNS)
    dialogues = low.select("dialogue_id").distinct()
    joined = turns.join(dialogues, "dialogue_id", "left_semi").join(low, ["dialogue_id", "turn_index"], "left")
    task = _pairing_task(params.rewriter, dict(params.rewriter_options), params.pair_threshold, params.context_turns)
    df = joined.repartition(params.partitions, "dialogue_id").mapInArrow(task, _spark_schema(PREFERENCE_PAIRS.schema))
    table = _collect(df, PREFERENCE_PAIRS)
    producer = {"job": "build_preference_pairs", "rewriter": f"{rewriter.name}:{rewriter.version}",
                "threshold": str(params.pair_threshold), "context_turns": str(params.context_turns),
                "turn_scores_version": str(scores_manifest.version), "turns_version": str(turns_version)}
    manifest = warehouse.write_arrow(PREFERENCE_PAIRS, table, producer=producer)
    stats = {"pairs": table.num_rows, "below_threshold": below, "without_rewrite": below - table.num_rows,
             "rewriter": f"{rewriter.name}:{rewriter.version}", "threshold": params.pair_threshold}
    return JobResult({PREFERENCE_PAIRS.name: manifest}, {PREFERENCE_PAIRS.name: stats})


def run_dialogue_ingest(ctx: JobContext) -> JobResult:
    """Write the synthetic dialogues (``dialogues.synthetic``) and ingest the dialogue folder."""
    from pipelines.dialogues.ingest import ingest_dialogues
    from pipelines.dialogues.synthetic import generate

    p, s = ctx.params, ctx.settings
    folder = p.source_path(s.sources_root)
    generated = generate(folder, p.generator) if p.synthetic else None
    result = ingest_dialogues(
        ctx.warehouse, folder, s.rules, source=p.source_name, run_id=ctx.run_id or None, runner=s.ingest.runner,
        runner_args=list(s.ingest.runner_args), stage_root=s.ingest.stage_root, follow_symlinks=s.ingest.follow_symlinks,
    )
    counts = {"records_in": result.records_in, "new_turns": result.new_turns, "already_present": result.already_present,
              "rejected": result.rejected, "duplicates": result.duplicates, "source_files": len(result.files)}
    if generated is not None:
        counts["synthetic_dialogues"] = generated.dialogues
        counts["planted_unsatisfying_turns"] = len(generated.planted)
    return JobResult(
        result.manifests,
        stats={DIALOGUE_TURNS.name: counts, REJECTED_DIALOGUE_TURNS.name: {"rejected_by_reason": result.by_reason},
               DIALOGUE_INGEST_RUNS.name: {"run_id": result.run_id}},
        summary=result.summary(),
    )


def run_turn_scores(ctx: JobContext) -> JobResult:
    return build_turn_scores(ctx.spark, ctx.warehouse, ctx.params)


def run_preference_pairs(ctx: JobContext) -> JobResult:
    return build_preference_pairs(ctx.spark, ctx.warehouse, ctx.params)
