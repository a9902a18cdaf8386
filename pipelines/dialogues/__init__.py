"""The dialogues family (ECPO): dialogue logs to ``dialogue_turns`` (with dead letters and run
counts), ``turn_scores`` and ``preference_pairs`` (docs/ecpo.md).

``params`` is the ``dialogues`` settings section, ``source`` the JSON Lines adapter, ``ingest``
the Beam ingestion, ``synthetic`` the generator of the embedded default, ``plugins`` the scorer and
rewriter loader, ``job`` the three steps, ``checks`` the invariant counters. :data:`FAMILY` is the
catalog entry.
"""
from features.dialogues.contracts import (
    DIALOGUE_INGEST_RUNS,
    DIALOGUE_TURNS,
    PREFERENCE_PAIRS,
    REJECTED_DIALOGUE_TURNS,
    TURN_SCORES,
)
from pipelines.dialogues.checks import (
    check_dialogue_ingest_runs,
    check_dialogue_turns,
    check_preference_pairs,
    check_turn_scores,
)
from pipelines.dialogues.job import (
    build_preference_pairs,
    build_turn_scores,
    run_dialogue_ingest,
    run_preference_pairs,
    run_turn_scores,
)
from pipelines.dialogues.params import DialogueGeneratorSettings, DialoguesSettings
from pipelines.family import Family, Step

INGEST_STEP = "dialogue_ingest"

FAMILY = Family(
    name="dialogues",
    description="ECPO: dialogue turns, per-turn expectation-confirmation scores and turn-level preference pairs (docs/ecpo.md)",
    params=DialoguesSettings,
    steps=(
        Step(
            name=INGEST_STEP,
            tables=(DIALOGUE_TURNS, REJECTED_DIALOGUE_TURNS, DIALOGUE_INGEST_RUNS),
            run=run_dialogue_ingest,
            kinds=frozenset({"beam", "python", "delta"}),
            description="Dialogue ingestion (docs/ecpo.md): the synthetic dialogues when configured, then turns, their dead letters and the run's counts.",
        ),
        Step(
            name=TURN_SCORES.name,
            tables=(TURN_SCORES,),
            run=run_turn_scores,
            deps=(DIALOGUE_TURNS.name,),
            description=TURN_SCORES.description,
        ),
        Step(
            name=PREFERENCE_PAIRS.name,
            tables=(PREFERENCE_PAIRS,),
            run=run_preference_pairs,
            deps=(DIALOGUE_TURNS.name, TURN_SCORES.name),
            description=PREFERENCE_PAIRS.description,
        ),
    ),
    invariants={
        DIALOGUE_TURNS.name: check_dialogue_turns,
        DIALOGUE_INGEST_RUNS.name: check_dialogue_ingest_runs,
        TURN_SCORES.name: check_turn_scores,
        PREFERENCE_PAIRS.name: check_preference_pairs,
    },
    enabled=lambda settings: getattr(getattr(settings, "dialogues", None), "enabled", False),
    docs="docs/ecpo.md",
)

__all__ = [
    "FAMILY", "INGEST_STEP", "DialogueGeneratorSettings", "DialoguesSettings", "build_preference_pairs",
    "build_turn_scores", "check_dialogue_ingest_runs", "check_dialogue_turns", "check_preference_pairs",
    "check_turn_scores", "run_dialogue_ingest", "run_preference_pairs", "run_turn_scores",
]  # fmt: skip
