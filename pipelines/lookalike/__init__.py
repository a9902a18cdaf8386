"""The look-alike family (RAR u2u): ``user_vectors`` and ``lookalike_users`` as of a cutoff.

``params`` is the ``lookalike`` settings section, ``job`` the two steps, ``checks`` the
invariant counters (docs/lookalike.md). :data:`FAMILY` is the catalog entry; besides the
per-table checks it warns when the held-out recall of the candidates (HNSW or SimHash, by
``candidates``) is below the engine's target.
"""
from features.dimensions import USERS
from features.events import EVENTS
from features.lookalike import LOOKALIKE_USERS, USER_VECTORS
from pipelines.family import CheckOutcome, ExtraCheck, Family, JobContext, Step
from pipelines.lookalike.checks import check_lookalike, check_user_vectors
from pipelines.lookalike.job import (
    build_lookalike_table,
    build_user_vectors_table,
    lsh_recall_estimate,
    lsh_recall_summary,
    run_lookalike_users,
    run_user_vectors,
)
from pipelines.lookalike.params import HnswSettings, LookalikeSettings, LshSettings


def recall_check(ctx: JobContext) -> CheckOutcome:
    """Warn when the held-out recall@k of the current build is below the target of the engine
    that built it (``hnsw.target_recall`` or ``lsh.target_recall``)."""
    s = ctx.params
    estimate, sample = lsh_recall_estimate(ctx.warehouse)
    engine = ctx.warehouse.manifest(LOOKALIKE_USERS.name).producer.get("candidates", "simhash")
    if engine == "hnsw":
        target, sample_key = s.hnsw.target_recall, "hnsw.recall_sample"
        remedy = ("raise hnsw.max_ef_search, or hnsw.m and hnsw.ef_construction" if s.hnsw.auto_ef_search
                  else "raise hnsw.ef_search (or hnsw.m), or set hnsw.auto_ef_search")
        held = ("held-out (did not choose ef_search)" if s.hnsw.auto_ef_search
                else "held-out (a seeded sample; exact top-k by brute force)")
    else:
        target, sample_key = s.lsh.target_recall, "lsh.recall_sample"
        remedy = "raise lsh.max_bands or lsh.window" if s.lsh.auto_bands else "raise lsh.bands, or set lsh.auto_bands"
        held = "held-out (did not choose the bands)"
    meta = {"target": target, "sample_users": sample, "sample": held, "candidates": engine}
    if estimate is None:
        return CheckOutcome(True, metadata={**meta, "note": f"not estimated ({sample_key} is 0 or fewer than 2 users)"})
    passed = estimate >= target
    return CheckOutcome(
        passed,
        None if passed else f"held-out recall@{s.k} {estimate:.3f} < target {target}: {remedy} (docs/lookalike.md)",
        {**meta, "recall_estimate": estimate},
    )


FAMILY = Family(
    name="lookalike",
    description="RAR look-alike users: user vectors and their top-k neighbours (HNSW or SimHash candidates, exact cosine) "
    "as of a cutoff (docs/lookalike.md)",
    params=LookalikeSettings,
    steps=(
        Step(
            name=USER_VECTORS.name,
            tables=(USER_VECTORS,),
            run=run_user_vectors,
            deps=(EVENTS.name, USERS.name),
            description="Profile block plus ALS behaviour block per user, from events before the cutoff.",
        ),
        Step(
            name=LOOKALIKE_USERS.name,
            tables=(LOOKALIKE_USERS,),
            run=run_lookalike_users,
            deps=(USER_VECTORS.name,),
            description="Top-k look-alike users per user: HNSW or SimHash candidates (lookalike.candidates) re-ranked by exact cosine.",
        ),
    ),
    invariants={
        USER_VECTORS.name: lambda ctx: check_user_vectors(ctx.spark, ctx.warehouse, ctx.params),
        LOOKALIKE_USERS.name: lambda ctx: check_lookalike(ctx.spark, ctx.warehouse, ctx.params),
    },
    extra_checks=(
        ExtraCheck(
            name="lookalike_users_recall",
            table=LOOKALIKE_USERS.name,
            description="Warns when the candidates' recall@k on a held-out seeded user sample (exact top-k; "
            "for SimHash, users not used to choose the bands) is below hnsw.target_recall or lsh.target_recall.",
            run=recall_check,
        ),
    ),
    docs="docs/lookalike.md",
)

__all__ = [
    "FAMILY", "HnswSettings", "LookalikeSettings", "LshSettings", "build_lookalike_table", "build_user_vectors_table",
    "check_lookalike", "check_user_vectors", "lsh_recall_estimate", "lsh_recall_summary", "recall_check",
    "run_lookalike_users", "run_user_vectors",
]
