"""Dagster definitions of the look-alike family (RAR, docs/lookalike.md): ``user_vectors``,
``lookalike_users``, ``item_neighbors`` and ``recall_items``, each with a blocking invariant
check. Asset bodies call one pipeline job and report metadata."""

import dagster as dg

from features.dimensions import USERS
from features.events import EVENTS
from features.lookalike import LOOKALIKE_USERS, USER_VECTORS
from features.recall import ITEM_NEIGHBORS, RECALL_ITEMS
from orchestration.commits import commit_conflicts, materialize_result, table_pool
from orchestration.extensions import Extension
from orchestration.metadata import invariant_check_result, table_metadata
from orchestration.resources import SettingsResource, SparkResource, WarehouseResource
from pipelines.settings import Settings

LOOKALIKE_GROUP = "lookalike"


def _meta(wh, manifest, s: Settings) -> dict:
    meta = table_metadata(wh, manifest)
    meta["cutoff_ts"] = s.lookalike.cutoff_ts.isoformat()
    return meta


def _run(context: dg.AssetExecutionContext, wh, table: str, job, *args):
    """Run the table's job (commit conflicts retried); (its output, the version it found)."""
    before = wh.current_version(table)
    with commit_conflicts(context):
        return job(*args), before


def build(settings: Settings) -> Extension:
    @dg.asset(
        name=USER_VECTORS.name,
        group_name=LOOKALIKE_GROUP,
        deps=[dg.AssetKey(EVENTS.name), dg.AssetKey(USERS.name)],
        description=USER_VECTORS.description,
        kinds={"spark", "parquet"},
        pool=table_pool(USER_VECTORS.name),
    )
    def user_vectors(
        context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
    ) -> dg.MaterializeResult:
        from pipelines.lookalike import build_user_vectors_table

        s, wh = settings.get(), warehouse.get()
        manifest, before = _run(context, wh, USER_VECTORS.name, build_user_vectors_table, spark.get_session(), wh, s.lookalike)
        return materialize_result(None, manifest, before, _meta(wh, manifest, s))

    @dg.asset(
        name=LOOKALIKE_USERS.name,
        group_name=LOOKALIKE_GROUP,
        deps=[dg.AssetKey(USER_VECTORS.name)],
        description=LOOKALIKE_USERS.description,
        kinds={"spark", "parquet"},
        pool=table_pool(LOOKALIKE_USERS.name),
    )
    def lookalike_users(
        context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
    ) -> dg.MaterializeResult:
        from pipelines.lookalike import build_lookalike_table

        s, wh = settings.get(), warehouse.get()
        (manifest, stats), before = _run(context, wh, LOOKALIKE_USERS.name, build_lookalike_table, spark.get_session(), wh, s.lookalike)
        return materialize_result(None, manifest, before, {**_meta(wh, manifest, s), **{f"lsh_{k}": v for k, v in stats.items()}})

    @dg.asset(
        name=ITEM_NEIGHBORS.name,
        group_name=LOOKALIKE_GROUP,
        deps=[dg.AssetKey(EVENTS.name)],
        description=ITEM_NEIGHBORS.description,
        kinds={"spark", "parquet"},
        pool=table_pool(ITEM_NEIGHBORS.name),
    )
    def item_neighbors(
        context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
    ) -> dg.MaterializeResult:
        from pipelines.recall import build_item_neighbors_table

        s, wh = settings.get(), warehouse.get()
        manifest, before = _run(context, wh, ITEM_NEIGHBORS.name, build_item_neighbors_table, spark.get_session(), wh, s.lookalike)
        return materialize_result(None, manifest, before, _meta(wh, manifest, s))

    @dg.asset(
        name=RECALL_ITEMS.name,
        group_name=LOOKALIKE_GROUP,
        deps=[dg.AssetKey(EVENTS.name), dg.AssetKey(ITEM_NEIGHBORS.name)],
        description=RECALL_ITEMS.description,
        kinds={"spark", "parquet"},
        pool=table_pool(RECALL_ITEMS.name),
    )
    def recall_items(
        context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
    ) -> dg.MaterializeResult:
        from pipelines.recall import build_recall_table

        s, wh = settings.get(), warehouse.get()
        manifest, before = _run(context, wh, RECALL_ITEMS.name, build_recall_table, spark.get_session(), wh, s.lookalike)
        return materialize_result(None, manifest, before, _meta(wh, manifest, s))

    def invariant_check(table: str, job: str, description: str):
        @dg.asset_check(asset=table, name=f"{table}_invariants", blocking=True, description=description)
        def _check(settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource) -> dg.AssetCheckResult:
            import importlib

            module, func = job.rsplit(".", 1)
            counts = getattr(importlib.import_module(module), func)(spark.get_session(), warehouse.get(), settings.get().lookalike)
            return invariant_check_result(counts)

        return _check

    checks = [
        invariant_check(USER_VECTORS.name, "pipelines.lookalike.check_user_vectors",
                        "Width = profile_dim + behaviour_dim, unit norm, every user has a past event, rows and build at the configured cutoff_ts."),
        invariant_check(LOOKALIKE_USERS.name, "pipelines.lookalike.check_lookalike",
                        "No self-neighbour, min(K, users - 1) distinct ranked neighbours per user, similarity in [-1, 1] and sorted; "
                        "rows, build and the user_vectors it read at the configured cutoff_ts."),
        invariant_check(ITEM_NEIGHBORS.name, "pipelines.recall.check_item_neighbors",
                        "No self-neighbour, similarity > 0 (<= 1 for cosine), co_users >= min_co_users, ranks contiguous, rows and build at the configured cutoff_ts."),
        invariant_check(RECALL_ITEMS.name, "pipelines.recall.check_recall",
                        "No item seen before the cutoff, positive scores, ranks contiguous and <= recall_size; "
                        "rows, build and the item_neighbors it read at the configured cutoff_ts."),
    ]

    @dg.asset_check(
        asset=LOOKALIKE_USERS.name,
        name="lookalike_users_recall",
        blocking=False,
        description="Warns when the SimHash candidates' recall@k on a held-out seeded user sample (exact top-k; "
        "users not used to choose the bands) is below lsh_target_recall.",
    )
    def lookalike_users_recall(settings: SettingsResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        from pipelines.lookalike import lsh_recall_estimate

        s = settings.get().lookalike
        estimate, sample = lsh_recall_estimate(warehouse.get())
        meta = {"target": s.lsh_target_recall, "sample_users": sample, "sample": "held-out (did not choose the bands)"}
        if estimate is None:
            return dg.AssetCheckResult(
                passed=True, severity=dg.AssetCheckSeverity.WARN,
                metadata={**meta, "note": "not estimated (lsh_recall_sample is 0 or fewer than 2 users)"},
            )
        remedy = ("raise lsh_max_bands or lsh_window" if s.lsh_auto_bands else "raise lsh_bands, or set lsh_auto_bands")
        return dg.AssetCheckResult(
            passed=estimate >= s.lsh_target_recall, severity=dg.AssetCheckSeverity.WARN,
            metadata={**meta, "recall_estimate": estimate},
            description=None if estimate >= s.lsh_target_recall else
            f"held-out recall@{s.k} {estimate:.3f} < target {s.lsh_target_recall}: {remedy} (docs/lookalike.md)",
        )

    checks.append(lookalike_users_recall)
    return Extension(assets=[user_vectors, lookalike_users, item_neighbors, recall_items], asset_checks=checks)
