"""Table assets. Each body only wires: it calls one pipeline job and reports metadata."""


import dagster as dg

from features.dimensions import ITEMS, USERS
from features.events import EVENTS
from features.rejections import REJECTED_EVENTS
from features.rote import ROTE_FEATURES
from features.sequences import USER_SEQUENCES
from features.synthetic_truth import SYNTHETIC_TRUTH
from orchestration.checks import build_checks  # noqa: F401  (checks live in orchestration/checks.py)
from orchestration.commits import commit_conflicts, materialize_result, table_pool
from orchestration.metadata import table_metadata
from orchestration.resources import SettingsResource, SparkResource, WarehouseResource
from pipelines.settings import Settings

SOURCES_GROUP = "sources"
CORE_GROUP = "core"
FEATURES_GROUP = "features"


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    p = settings.partitions
    return dg.DailyPartitionsDefinition(
        start_date=p.start_date.isoformat(),
        end_date=p.end_date.isoformat() if p.end_date else None,
        timezone="UTC",
    )


def _window(context: dg.AssetExecutionContext):
    from pipelines.ingest import DateWindow

    tw = context.partition_time_window
    return DateWindow(tw.start.date(), tw.end.date())


def build_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The asset graph for the active source (synthetic adds the generator and its truth)."""
    partitions = daily_partitions(settings)
    synthetic = settings.source.kind == "synthetic"
    upstream = [dg.AssetKey("synthetic_source")] if synthetic else []
    assets: list[dg.AssetsDefinition] = []

    if synthetic:

        @dg.asset(
            name="synthetic_source",
            group_name=SOURCES_GROUP,
            description="The embedded synthetic source: KuaiRand-format logs, user/video files and ground truth (docs/synthetic.md).",
            kinds={"python"},
        )
        def synthetic_source(context: dg.AssetExecutionContext, settings: SettingsResource) -> dg.MaterializeResult:
            from pipelines.synthetic import GeneratorParams, generate

            s = settings.get()
            out = generate(s.source.path, GeneratorParams.from_settings(s.synthetic))
            return dg.MaterializeResult(
                metadata={
                    "events": out.events,
                    "log_files": len(out.log_files),
                    "path": dg.MetadataValue.path(str(out.root)),
                    "seed": s.synthetic.seed,
                }
            )

        assets.append(synthetic_source)

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                EVENTS.name,
                group_name=CORE_GROUP,
                deps=upstream,
                description=EVENTS.description,
                kinds={"beam", "spark", "parquet"},
            ),
            dg.AssetSpec(
                REJECTED_EVENTS.name,
                group_name=CORE_GROUP,
                deps=upstream,
                description=REJECTED_EVENTS.description,
                kinds={"beam", "parquet"},
            ),
        ],
        name="ingest",
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
        pool=table_pool(EVENTS.name),  # also the only writer of rejected_events and ingest_runs
    )
    def events(
        context: dg.AssetExecutionContext,
        settings: SettingsResource,
        warehouse: WarehouseResource,
        spark: SparkResource,
    ):
        """The ingestion run (docs/ingestion.md): events and their dead letters, one commit each."""
        from pipelines.ingest import ingest_with_settings
        from pipelines.sources import adapter_for

        s = settings.get()
        wh = warehouse.get()
        before = {t: wh.current_version(t) for t in (EVENTS.name, REJECTED_EVENTS.name)}
        with commit_conflicts(context):
            result = ingest_with_settings(
                spark.get_session(), wh, adapter_for(s.active_source, s.source), s, _window(context), context.run.run_id
            )
        context.log.info(result.summary())
        meta = table_metadata(wh, result.manifest, result.partitions)
        counts = {
            "records_in": result.records_in,
            "new_events": result.new_events,
            "already_present": result.already_present,
            "outside_window": result.outside_window,
            "rejected": result.rejected,
            "duplicates": result.duplicates,
            "source_files": len(result.files),
        }
        meta.update(counts)
        meta["table_rows_total"] = result.manifest.row_count
        meta["dagster/row_count"] = sum(
            result.manifest.partitions[p].row_count for p in result.partitions if p in result.manifest.partitions
        )
        yield materialize_result(EVENTS.name, result.manifest, before[EVENTS.name], meta)
        rejected_meta = {**counts, "rejected_by_reason": dg.MetadataValue.json(result.by_reason)}
        if result.rejected_manifest is not None:
            rejected_meta.update(table_metadata(wh, result.rejected_manifest))
            yield materialize_result(REJECTED_EVENTS.name, result.rejected_manifest, before[REJECTED_EVENTS.name], rejected_meta)
        else:
            rejected_meta.update({"dagster/row_count": 0, "committed": False})
            yield dg.MaterializeResult(asset_key=REJECTED_EVENTS.name, metadata=rejected_meta)

    assets.append(events)

    def dimension_asset(contract):
        @dg.asset(
            name=contract.name,
            group_name=CORE_GROUP,
            deps=upstream,
            description=contract.description,
            kinds={"parquet"},
            pool=table_pool(contract.name),
        )
        def _dimension(
            context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource
        ) -> dg.MaterializeResult:
            from pipelines.ingest import ingest_dimension
            from pipelines.sources import adapter_for

            s = settings.get()
            wh = warehouse.get()
            before = wh.current_version(contract.name)
            with commit_conflicts(context):
                manifest = ingest_dimension(wh, adapter_for(s.active_source, s.source), contract.name,
                                            follow_symlinks=s.ingest.follow_symlinks)
            if manifest is None:
                return dg.MaterializeResult(
                    metadata={"dagster/row_count": 0, "committed": False, "note": "the source has no such file"}
                )
            return materialize_result(None, manifest, before, table_metadata(wh, manifest))

        return _dimension

    assets += [dimension_asset(USERS), dimension_asset(ITEMS)]

    incremental = settings.sequences.build == "incremental"
    seq_partitions = partitions if incremental else None
    seq_policy = dg.BackfillPolicy.single_run() if incremental else None

    def _days(context: dg.AssetExecutionContext):
        """The run's window of target days (incremental builds), else (None, None)."""
        if not context.has_partition_key_range and not context.has_partition_key:
            return None, None
        w = _window(context)
        return w.start, w.end

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                USER_SEQUENCES.name,
                group_name=FEATURES_GROUP,
                deps=[dg.AssetKey(EVENTS.name)],
                description=USER_SEQUENCES.description,
                kinds={"spark", "parquet"},
                partitions_def=seq_partitions,
            ),
            dg.AssetSpec(
                ROTE_FEATURES.name,
                group_name=FEATURES_GROUP,
                deps=[dg.AssetKey(EVENTS.name)],
                description=ROTE_FEATURES.description,
                kinds={"spark", "parquet"},
                partitions_def=seq_partitions,
            ),
        ],
        name="sequences",
        can_subset=False,
        backfill_policy=seq_policy,
        pool=table_pool(USER_SEQUENCES.name),  # also the only writer of rote_features
    )
    def sequences(
        context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
    ):
        """One pass over the events builds both tables (docs/sequences.md)."""
        from pipelines.sequences import build_sequences_table

        wh = warehouse.get()
        start, end = _days(context)
        versions = {t: wh.current_version(t) for t in (USER_SEQUENCES.name, ROTE_FEATURES.name)}
        with commit_conflicts(context):
            manifests = build_sequences_table(spark.get_session(), wh, settings.get().sequences, start, end)
        for name, manifest in manifests.items():
            meta = table_metadata(wh, manifest)
            if start is not None and manifests[USER_SEQUENCES.name].version == versions[USER_SEQUENCES.name]:
                meta["build/window"] = "nothing to do: every requested day is built and up to date"
            else:  # the days actually built (a late event moves the start back)
                for key in ("window", "requested_window", "stale_days", "missing_days"):
                    if key in manifest.producer:
                        meta[f"build/{key}"] = manifest.producer[key] or "(none)"
            yield materialize_result(name, manifest, versions[name], meta)

    assets.append(sequences)

    if synthetic:

        @dg.asset(
            name=SYNTHETIC_TRUTH.name,
            group_name=CORE_GROUP,
            deps=[dg.AssetKey("synthetic_source"), dg.AssetKey(EVENTS.name)],
            description=SYNTHETIC_TRUTH.description,
            kinds={"spark", "parquet"},
            pool=table_pool(SYNTHETIC_TRUTH.name),
        )
        def synthetic_truth(
            context: dg.AssetExecutionContext, settings: SettingsResource, warehouse: WarehouseResource, spark: SparkResource
        ) -> dg.MaterializeResult:
            from pipelines.synthetic import truth_path
            from pipelines.synthetic_truth import build_synthetic_truth

            s = settings.get()
            wh = warehouse.get()
            before = wh.current_version(SYNTHETIC_TRUTH.name)
            with commit_conflicts(context):
                manifest = build_synthetic_truth(spark.get_session(), wh, str(truth_path(s.source.path)), s.active_source)
            return materialize_result(None, manifest, before, table_metadata(wh, manifest))

        assets.append(synthetic_truth)
    return assets

