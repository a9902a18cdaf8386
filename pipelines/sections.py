"""The core sections of ``recfeat.yaml``: warehouse, Spark, sources, partitions, the synthetic
generator, ingestion rules and engine, and training. Families' sections live with the families
(``pipelines/<family>/params.py``); :mod:`pipelines.settings` composes them all.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from features.source_kinds import GENERIC_KINDS, SOURCE_KINDS
from features.uris import check_not_blank, check_tracking_uri
from pipelines.config import StrictModel, is_uri as _is_uri

class WarehouseSettings(StrictModel):
    root: str = Field("var/warehouse", description="Warehouse root: a local path or an fsspec URI (s3://, gs://, hdfs://, file://).")
    retention_days: Annotated[float, Field(ge=0)] = Field(
        7.0, description="How long a table version stays readable (time travel) after a newer one replaced it; "
        "files no kept version refers to are deleted after a commit. Versions pinned by a training run that still "
        "exists or by training.models.*.table_versions are kept however old (docs/warehouse.md)."
    )
    keep_versions: Annotated[int, Field(ge=1)] = Field(
        5, description="The newest versions of each table kept however old, besides the retention period."
    )

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


#: Spark conf keys that hold secrets (case-insensitive regexes, searched in the key). Such keys
#: are refused in ``spark.conf``: the conf is copied into Dagster's resource config, so its
#: values would be stored with every run. Secrets come from environment variables
#: (docs/configuration.md, "Secrets").
SECRET_CONF_PATTERNS = (
    r"secret", r"password", r"passwd", r"token", r"credentials?$",
    r"(^|[._-])access[._-]?key", r"account[._-]key", r"private[._-]?key", r"encryption[._-]?key",
)


def secret_conf_keys(conf: dict[str, str]) -> list[str]:
    """The keys of ``conf`` that look like secrets (see :data:`SECRET_CONF_PATTERNS`)."""
    import re

    return sorted(k for k in conf if any(re.search(p, k, re.IGNORECASE) for p in SECRET_CONF_PATTERNS))


class RunSettings(StrictModel):
    """How ``recfeat materialize`` and ``recfeat demo`` run a selection's steps (docs/orchestration.md)."""

    concurrent_steps: Annotated[int, Field(ge=1, le=64)] = Field(
        1,
        description="steps of one run that may run at once, in threads of the command's process (one model "
        "training, in a child process, one Beam pipeline and one quality validation at a time, whatever the "
        "limit); 1 (the default) runs them one after another, which is the fastest on 2 cores",
    )


class SparkSettings(StrictModel):
    master: str = Field("local[*]", description="Spark master URL: local[*], local[N], spark://host:7077, yarn, k8s://...")
    app_name: str = "recfeat"
    driver_memory: str = Field("4g", description="spark.driver.memory (local mode: the whole job's memory).")
    shuffle_partitions: Annotated[int, Field(ge=1)] = Field(8, description="spark.sql.shuffle.partitions.")
    conf: dict[str, str] = Field(default_factory=dict, description="Further Spark conf, passed as is.")

    @field_validator("master")
    @classmethod
    def _master_form(cls, v: str) -> str:
        import re

        ok = bool(re.fullmatch(r"local(\[(\*|\d+)(,\s*\d+)?\])?", v)) or v == "yarn" or v.startswith(
            ("spark://", "k8s://", "mesos://", "sc://")
        )
        if not ok:
            raise ValueError(f"{v!r} is not a Spark master URL (local[*], spark://host:port, yarn, k8s://...)")
        return v

    @field_validator("conf")
    @classmethod
    def _no_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        secret = secret_conf_keys(v)
        if secret:
            raise ValueError(
                f"{secret[0]!r} looks like a secret, and spark.conf is stored in Dagster's run records: set it "
                "through an environment variable instead (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN "
                "for S3; docs/configuration.md, Secrets)"
            )
        return v


class ColumnMapping(StrictModel):
    """Source column names for the canonical event fields (generic CSV/Parquet sources)."""

    user_id: str
    item_id: str
    timestamp: str
    play_time_ms: str | None = None
    duration_ms: str | None = None
    rating: str | None = None
    flags: dict[str, str] = Field(default_factory=dict, description="canonical flag (is_click, ...) -> source column")

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, v: dict[str, str]) -> dict[str, str]:
        from features.events import FEEDBACK_FLAGS

        unknown = sorted(set(v) - set(FEEDBACK_FLAGS))
        if unknown:
            raise ValueError(f"unknown flags {unknown}; known: {list(FEEDBACK_FLAGS)}")
        return v


class DimensionFile(StrictModel):
    """A user or item attribute file of a generic source."""

    path: str
    id_column: str


class SourceConfig(StrictModel):
    """One source of events.

    ``kind`` picks the adapter: ``synthetic`` (the generator's output, KuaiRand format),
    ``kuairand`` (official KuaiRand CSVs, plain or gzipped), ``movielens`` (RecBole atomic
    files or GroupLens ``u.data`` / ``ratings.dat`` / ``ratings.csv``), ``csv`` and ``parquet``
    (generic files described by ``mapping``). ``path`` is a directory or a single file.
    """

    kind: Literal[SOURCE_KINDS]  # type: ignore[valid-type]  # features.source_kinds
    path: str
    mapping: ColumnMapping | None = None
    timestamp_unit: Literal["s", "ms", "us", "iso"] = Field(
        "s", description="generic sources: unit of numeric timestamps, or iso for ISO-8601 text"
    )
    time_zone: str = Field("UTC", description="generic sources: zone of timestamps that carry none")
    delimiter: str = Field(",", description="generic CSV: field delimiter")
    users: DimensionFile | None = None
    items: DimensionFile | None = None
    require_duration: bool | None = Field(
        None,
        description=(
            "true: every record needs duration_ms > 0 (empty: missing_required_field; <= 0: "
            "nonpositive_duration); false: duration optional, 0 allowed, negative rejected; "
            "null: the kind's default (kuairand/synthetic: required but 0 allowed, for picture "
            "posts; others: false). Checked only when ingestion rules apply."
        ),
    )

    @model_validator(mode="after")
    def _mapping_for_generic(self) -> "SourceConfig":
        if self.kind in GENERIC_KINDS and self.mapping is None:
            raise ValueError(f"a {self.kind} source needs 'mapping' (user_id, item_id, timestamp columns)")
        if self.require_duration:
            if self.kind == "movielens":
                raise ValueError("require_duration: MovieLens ratings have no durations")
            if self.kind in GENERIC_KINDS and self.mapping is not None and self.mapping.duration_ms is None:
                raise ValueError("require_duration needs mapping.duration_ms")
        return self

    @field_validator("time_zone")
    @classmethod
    def _zone_exists(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class SyntheticSettings(StrictModel):
    """Size and shape of the embedded synthetic source (see docs/synthetic.md)."""

    events: Annotated[int, Field(ge=1_000, le=100_000_000)] = 200_000
    users: Annotated[int, Field(ge=10)] | None = Field(None, description="default: events // 50")
    items: Annotated[int, Field(ge=10)] | None = Field(None, description="default: events // 100")
    seed: int = 20220408
    start_date: dt.date = dt.date(2022, 4, 8)
    days: Annotated[int, Field(ge=1, le=366)] = 14


class PartitionSettings(StrictModel):
    """Daily partitions of the event tables (UTC days)."""

    start_date: dt.date = Field(dt.date(2022, 4, 8), description="first partition (inclusive)")
    end_date: dt.date | None = Field(dt.date(2022, 4, 22), description="last partition (exclusive); null: up to today")

    @model_validator(mode="after")
    def _ordered(self) -> "PartitionSettings":
        if self.end_date is not None and self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        return self


class IngestRules(StrictModel):
    """Record-level validation rules of ingestion; a record that breaks one is rejected (docs/sources.md).

    Applied by ``SourceAdapter.read_records`` to every adapter alike. Event-time bounds are UTC
    dates (midnight UTC).
    """

    replay_factor: Annotated[float, Field(gt=0)] = Field(
        100.0,
        description=(
            "play_time_ms > replay_factor * duration_ms is play_beyond_duration (only where "
            "duration_ms > 0). Short clips loop: the KuaiRand-Pure slice reaches 62.9x (49 rows above 10x)."
        ),
    )
    max_play_time_ms: Annotated[int, Field(ge=1)] = Field(
        6 * 3600 * 1000, description="play_time_ms above this (6 hours) is absurd_play_time"
    )
    min_event_ts: dt.date = Field(
        dt.date(1995, 1, 1),
        description="events before this UTC date are timestamp_out_of_range (MovieLens starts 1995-01-09)",
    )
    max_event_ts: dt.date | None = Field(
        None, description="events on or after this UTC date are timestamp_out_of_range; null: no upper bound"
    )
    future_tolerance_s: Annotated[int, Field(ge=0)] = Field(
        3600, description="events later than now + this many seconds are timestamp_in_future (clock skew)"
    )
    max_field_chars: Annotated[int, Field(ge=1)] = Field(
        4096, description="a field longer than this many characters is oversized_field"
    )
    max_line_bytes: Annotated[int, Field(ge=1)] = Field(
        1 << 20,
        description="a line longer than this many bytes (1 MiB; line end excluded) is oversized_line: "
        "skipped to its line end in bounded memory, its length and sha256 in the message, raw_record "
        "truncated to its first 1,024 bytes (reading stays linear in the file size, gzipped or not)",
    )

    @model_validator(mode="after")
    def _window(self) -> "IngestRules":
        if self.max_event_ts is not None and self.max_event_ts <= self.min_event_ts:
            raise ValueError("max_event_ts must be after min_event_ts")
        return self


class IngestSettings(StrictModel):
    """How ingestion runs (docs/ingestion.md)."""

    engine: Literal["beam", "spark"] = Field(
        "beam", description="beam: the Beam pipeline with `runner`; spark: the same validation as a Spark job"
    )
    runner: str = Field(
        "DirectRunner",
        description="Beam runner: DirectRunner (in process), FlinkRunner, SparkRunner, DataflowRunner, ...",
    )
    runner_args: list[str] = Field(default_factory=list, description="Beam pipeline options for the runner, as is")
    repeated_lines: Literal["duplicate", "distinct"] = Field(
        "duplicate",
        description="an exact repeat of a line within one file: duplicate = a `duplicate` dead letter; "
        "distinct = an event of its own (parity with the published code; configs/kuairand.yaml)",
    )
    stage_root: str | None = Field(
        None,
        description="where runs stage their output: a local directory (or file:// URI); default "
        "<warehouse>/_tmp (local warehouse) or the system temp dir; a cluster runner needs a directory "
        "mounted at the same path on the driver and every worker (NFS, a FUSE-mounted bucket). "
        "Other URIs (hdfs://, s3://, gs://) are refused",
    )
    follow_symlinks: bool = Field(
        False,
        description="false: a source file that is a symbolic link is not read (one symlink_refused dead "
        "letter; a linked users/items file fails its job); true: links are followed",
    )
    settle_s: Annotated[float, Field(ge=0)] = Field(
        30.0,
        description="the new_source_files sensor ingests a new or changed file only once its size and mtime "
        "have stayed the same for this many seconds (a file still being written is left alone); 0: at once",
    )
    direct_num_workers: Annotated[int, Field(ge=0)] = Field(
        1,
        description="DirectRunner workers (Beam's --direct_num_workers; 0: one per CPU). Above 1 needs "
        "direct_running_mode multi_processing or multi_threading. 1 (in process) measured fastest on 2 cores "
        "(docs/benchmarks.md, Ingestion); other runners ignore it",
    )
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = Field(
        "in_memory",
        description="how the DirectRunner runs its workers (Beam's --direct_running_mode): in_memory = one "
        "worker in this process; multi_threading = threads (one GIL); multi_processing = worker processes",
    )
    buckets: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="keys of the Beam pipeline's de-duplication shuffle: each chunk of records is split by a "
        "stable hash of its identity into this many buckets, resolved (occurrences, duplicates) one bucket at "
        "a time; default 4 per DirectRunner worker, 256 on any other runner. Does not change the result",
    )

    @field_validator("stage_root")
    @classmethod
    def _local_stage_root(cls, v: str | None) -> str | None:
        return local_stage_root(v, field=None)  # the settings error names the field

    @model_validator(mode="after")
    def _workers_need_a_parallel_mode(self) -> "IngestSettings":
        if self.direct_running_mode == "in_memory" and self.direct_num_workers != 1:
            raise ValueError(
                f"ingest.direct_num_workers: {self.direct_num_workers} needs ingest.direct_running_mode "
                "multi_processing or multi_threading (in_memory runs one worker)"
            )
        return self


def local_stage_root(path: str | None, field: str | None = "ingest.stage_root") -> str | None:
    """``path`` as a local directory (``file://`` removed); ``ValueError`` for any other URI.

    The stage is written by Beam or Spark workers and read back with local file I/O, so it must
    be a directory on this machine (on a cluster: one mounted at the same path everywhere).
    """
    if path is None or not _is_uri(path):
        return path
    named = f"{field}: " if field else ""
    if path.lower().startswith("file://"):
        local = path[len("file://"):]
        if not local.startswith("/"):
            raise ValueError(f"{named}{path!r} is not an absolute file:// URI (file:///dir)")
        return local
    raise ValueError(
        f"{named}{path!r}: only a local directory (or file:// URI) can hold the stage; "
        "on a cluster use a directory mounted at the same path on the driver and every worker"
    )




class TrainingSplitSettings(StrictModel):
    """Date split of the trainers: consecutive whole UTC days ending at ``last_date``."""

    train_days: Annotated[int, Field(ge=1)] = Field(9, description="training days")
    valid_days: Annotated[int, Field(ge=1)] = Field(2, description="validation days (model and label selection)")
    test_days: Annotated[int, Field(ge=1)] = Field(3, description="test days (reported, never used to choose)")
    last_date: dt.date | None = Field(None, description="last test day (inclusive); null: the last day in the data")


class TrackingSettings(StrictModel):
    """MLflow index of the run directories (docs/training.md, "Tracked runs").

    ``uri`` null: the local store ``sqlite:///<dir>/mlflow.db`` with artifacts under
    ``<dir>/artifacts`` (MLflow 3's default local backend; ``dir`` null: ``mlflow`` beside
    ``runs_root``, so ``var/runs`` -> ``var/mlflow``; relative paths are relative to the
    working directory, as ``runs_root``). Otherwise any MLflow tracking URI, typically a
    server ``http://host:5000``; credentials go in ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` (or ``MLFLOW_TRACKING_TOKEN``), never in the URI, which is
    stored in every run's ``config.json`` and in Dagster's run records.
    """

    enabled: bool = Field(True, description="log every complete run to MLflow (false: run directories only)")
    uri: str | None = Field(None, description="MLflow tracking URI; null: the local store under dir")
    dir: str | None = Field(None, description="the local store's folder (mlflow.db, artifacts/) when uri is null; "
                            "null: mlflow beside runs_root (var/runs -> var/mlflow)")
    experiment: str = Field("recfeat", description="MLflow experiment the runs are logged to")

    # features/uris.py: the checks trainers.config.TrackingConfig makes too (pipelines may not import trainers).
    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        return check_tracking_uri(v)

    @field_validator("dir", "experiment")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        return check_not_blank(v)


class TrainingSettings(StrictModel):
    """PyTorch trainers (docs/training.md): where runs go, the split, per-model overrides."""

    runs_root: str = Field("var/runs", description="root of the run directories (config, metrics, checkpoint, table versions)")
    seed: int = Field(61, description="default seed of every trainer")
    split: TrainingSplitSettings = Field(default_factory=TrainingSplitSettings, description="date split")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="MLflow index of the runs")
    models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="model name -> overrides of its config fields (validated against the model's config class "
        "when the model is built: at Dagster load and by `recfeat train`)",
    )

    @field_validator("runs_root")
    @classmethod
    def _runs_root_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    def pinned_versions(self) -> dict[str, list[int]]:
        """Table -> the versions a model's ``table_versions`` pins (retention keeps them)."""
        out: dict[str, set[int]] = {}
        for overrides in self.models.values():
            for table, version in (overrides.get("table_versions") or {}).items():
                out.setdefault(str(table), set()).add(int(version))
        return {t: sorted(v) for t, v in out.items()}
