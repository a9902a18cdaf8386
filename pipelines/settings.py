"""Typed project settings, read from one YAML file and overridden by environment variables.

Resolution order (later wins):

1. defaults declared on the fields below (the documented defaults; ``recfeat.yaml`` at the
   repository root repeats them with comments);
2. the YAML file: ``--config FILE``, else ``$RECFEAT_CONFIG``, else ``./recfeat.yaml`` if present;
3. environment variables: ``RECFEAT_WAREHOUSE`` (warehouse.root), ``RECFEAT_SPARK_MASTER``
   (spark.master), ``RECFEAT_ACTIVE_SOURCE`` (active_source), ``RECFEAT_SOURCES_ROOT``
   (sources_root).

Every model forbids unknown keys, so a typo fails at load with the dotted name of the field
(``warehouse.roots: extra inputs are not permitted``). Relative paths in the file are resolved
against the directory of the file, so a config works from any working directory.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.events import FEEDBACK_FLAGS as FEEDBACK_FLAG_NAMES

ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "RECFEAT_WAREHOUSE": ("warehouse", "root"),
    "RECFEAT_SPARK_MASTER": ("spark", "master"),
    "RECFEAT_ACTIVE_SOURCE": ("active_source",),
    "RECFEAT_SOURCES_ROOT": ("sources_root",),
}
DEFAULT_CONFIG_NAME = "recfeat.yaml"


class ConfigError(ValueError):
    """Bad configuration; the message is one line naming the field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _is_uri(path: str) -> bool:
    return "://" in path


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

    kind: Literal["synthetic", "kuairand", "movielens", "csv", "parquet"]
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
        if self.kind in ("csv", "parquet") and self.mapping is None:
            raise ValueError(f"a {self.kind} source needs 'mapping' (user_id, item_id, timestamp columns)")
        if self.require_duration:
            if self.kind == "movielens":
                raise ValueError("require_duration: MovieLens ratings have no durations")
            if self.kind in ("csv", "parquet") and self.mapping is not None and self.mapping.duration_ms is None:
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


class QualitySettings(StrictModel):
    """Configuration of the quality suites (``quality:`` in ``recfeat.yaml``).

    Used by ``pipelines.quality_suites`` (docs/quality.md).
    """

    row_count_min_ratio: float = Field(
        0.2, ge=0, description="lowest allowed rows(partition) / rows(previous partition); 0 disables the lower bound"
    )
    row_count_max_ratio: float = Field(
        5.0, gt=0, description="highest allowed rows(partition) / rows(previous partition)"
    )
    rating_min: float = Field(0.0, description="lowest allowed events.rating (where present), inclusive")
    rating_max: float = Field(5.0, description="highest allowed events.rating (where present), inclusive")
    referential_integrity: Literal["warning", "error"] = Field(
        "warning",
        description="severity of events.user_id in users / events.item_id in items (warning: sources may log unknown ids)",
    )
    engine: Literal["auto", "spark", "pandas"] = Field(
        "auto", description="where GX validates: auto = pandas up to pandas_max_rows rows, else Spark"
    )
    pandas_max_rows: int = Field(500_000, ge=0, description="engine auto: largest frame validated on pandas")
    keep_validations: int = Field(20, ge=1, description="validation results (and data docs pages) kept per suite")
    reports_dir: str | None = Field(
        None,
        description="local folder for reports; default <warehouse root>/reports (a remote warehouse: ./var/reports)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "QualitySettings":
        if self.row_count_min_ratio > self.row_count_max_ratio:
            raise ValueError("row_count_min_ratio must not exceed row_count_max_ratio")
        if self.rating_min > self.rating_max:
            raise ValueError("rating_min must not exceed rating_max")
        return self


class KCoreSettings(StrictModel):
    """Iterative k-core filter applied to events before sequences are built (0 or 1 = off)."""

    min_user_events: Annotated[int, Field(ge=0)] = Field(0, description="drop users with fewer events (after item filtering)")
    min_item_events: Annotated[int, Field(ge=0)] = Field(0, description="drop items with fewer events (after user filtering)")
    max_iterations: Annotated[int, Field(ge=1)] = Field(50, description="passes before giving up on convergence")

    @property
    def enabled(self) -> bool:
        return self.min_user_events > 1 or self.min_item_events > 1


class SequenceSettings(StrictModel):
    """How ``user_sequences`` and ``rote_features`` are built (docs/sequences.md)."""

    max_len: Annotated[int, Field(ge=1, le=10_000)] = Field(50, description="history positions kept (the most recent)")
    split: Literal["leave_one_out", "temporal"] = Field("leave_one_out", description="split protocol")
    valid_from: dt.datetime | None = Field(None, description="temporal split: first valid target time (UTC)")
    test_from: dt.datetime | None = Field(None, description="temporal split: first test target time (UTC)")
    build: Literal["full", "incremental"] = Field(
        "full",
        description="full: rebuild every partition from all events; incremental: daily partitions, each built "
        "from its day's events plus the earlier partitions (needs the temporal split, no k-core)",
    )
    require_flags: list[Literal[FEEDBACK_FLAG_NAMES]] = Field(  # type: ignore[valid-type]  # the events flags
        default_factory=list,
        description="keep only events whose every named feedback flag is true (e.g. [is_click] for click "
        "sequences, as the official SASRec preprocessing of KuaiRand); applied before the k-core filter",
    )
    k_core: KCoreSettings = Field(default_factory=KCoreSettings, description="k-core filter (full builds)")
    rote_levels: list[Literal["year", "month", "day", "hour", "minute", "second"]] = Field(
        default_factory=lambda: ["year", "month", "day"],
        description="calendar levels of rote_features (the paper's three; hour, minute, second go finer)",
    )
    partitions: Annotated[int, Field(ge=1)] | None = Field(
        None, description="user partitions of the sequence shuffle; default spark.shuffle_partitions"
    )

    @model_validator(mode="after")
    def _temporal_bounds(self) -> "SequenceSettings":
        if self.split == "temporal":
            if self.valid_from is None or self.test_from is None:
                raise ValueError("a temporal split needs valid_from and test_from")
            if self.test_from < self.valid_from:
                raise ValueError("test_from must not be before valid_from")
        if self.build == "incremental":
            if self.split != "temporal":
                raise ValueError(
                    "build: incremental needs split: temporal (leave-one-out labels depend on each user's last event)"
                )
            if self.k_core.enabled:
                raise ValueError("build: incremental cannot apply k_core (it depends on every event); use build: full")
        if len(set(self.rote_levels)) != len(self.rote_levels):
            raise ValueError("rote_levels must not repeat a level")
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

    @field_validator("stage_root")
    @classmethod
    def _local_stage_root(cls, v: str | None) -> str | None:
        return local_stage_root(v, field=None)  # the settings error names the field


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


# --- labels settings (duration_stats, watch_time_labels; docs/labels.md) go here ---


class LabelSettings(StrictModel):
    """How ``duration_stats`` and ``watch_time_labels`` are fitted and computed (docs/labels.md)."""

    fit_start: dt.date = Field(dt.date(2022, 4, 8), description="first UTC day of the training (fit) window, inclusive")
    fit_end: dt.date = Field(dt.date(2022, 4, 17), description="end of the fit window (exclusive); default: the first 9 synthetic days")
    duration_min_s: Annotated[int, Field(ge=1, le=100_000)] = Field(5, description="shortest duration labelled (rounded seconds, inclusive)")
    duration_max_s: Annotated[int, Field(ge=1, le=100_000)] = Field(240, description="longest duration labelled (rounded seconds, inclusive)")
    alpha: Annotated[float, Field(ge=-5.0, le=5.0)] = Field(0.0, description="D²Co exponent α; 0 = the affine form D²Co(A)")
    window_T: Annotated[int, Field(ge=1, le=1_000)] = Field(3, description="D²Co smoothing: window of 2T-1 durations (T=1: none)")
    smoothing: Literal["positional", "seconds"] = Field(
        "positional", description="positional: 2T-1 fitted durations (official code); seconds: durations within T-1 s"
    )
    d2q_bins: Annotated[int, Field(ge=1, le=10_000)] = Field(30, description="D2Q equal-frequency duration bins (fewer if edges coincide)")
    cwm_c_inv: Annotated[float, Field(gt=0)] = Field(40.0, description="CWM cost constant c_inv (the target is logit(exp(-c_inv/(w+1))))")
    min_rows: Annotated[int, Field(ge=3)] = Field(3, description="rows a duration needs for its own GMM fit (at least 3)")
    min_rows_policy: Literal["borrow", "drop"] = Field(
        "borrow", description="durations below min_rows: borrow = w-/w+ from fitted neighbours; drop = no label rows"
    )
    min_gap_s: Annotated[float, Field(gt=0)] = Field(1.0, description="D²Co guard: smallest w+ - w- used as denominator (p ≈ q)")
    long_view_d2co_s: Annotated[float, Field(gt=0)] = Field(18.0, description="D²Co long-view threshold (s)")
    long_view_cwm_quantile: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.7, description="CWM long-view threshold τ: this quantile of w over the fit window"
    )
    long_view_cwm_completion: Literal["rounded_s", "raw_ms"] = Field(
        "rounded_s",
        description="CWM long view 'played to the end': rounded_s = play rounded to seconds >= d (official code); raw_ms = play_time_ms >= duration_ms",
    )

    @model_validator(mode="after")
    def _ordered(self) -> "LabelSettings":
        if self.fit_end <= self.fit_start:
            raise ValueError("fit_end must be after fit_start")
        if self.duration_max_s < self.duration_min_s:
            raise ValueError("duration_max_s must not be below duration_min_s")
        return self

    def params(self):
        """The same knobs as a :class:`features.label_math.LabelParams` (what features/ takes)."""
        from features.label_math import LabelParams

        return LabelParams(
            duration_min_s=self.duration_min_s,
            duration_max_s=self.duration_max_s,
            alpha=self.alpha,
            window_T=self.window_T,
            smoothing=self.smoothing,
            d2q_bins=self.d2q_bins,
            cwm_c_inv=self.cwm_c_inv,
            min_rows=self.min_rows,
            min_rows_policy=self.min_rows_policy,
            min_gap_s=self.min_gap_s,
            long_view_d2co_s=self.long_view_d2co_s,
            long_view_cwm_quantile=self.long_view_cwm_quantile,
            long_view_cwm_completion=self.long_view_cwm_completion,
        )

# --- lookalike settings (user_vectors, lookalike_users, item_neighbors, recall_items; docs/lookalike.md) go here ---


class LookalikeSettings(StrictModel):
    """RAR look-alike users and recall items (docs/lookalike.md)."""

    cutoff_ts: dt.datetime = Field(
        dt.datetime(2022, 4, 18, tzinfo=dt.timezone.utc),
        description="UTC cutoff: only events strictly before it are used; examples after it may use the tables",
    )
    min_rating: float = Field(4.0, description="sources without clicks: a rating >= this is a positive event")
    profile_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="weight of the profile block in user vectors")
    behaviour_weight: Annotated[float, Field(ge=0)] = Field(1.0, description="weight of the ALS behaviour block")
    profile_exclude: list[str] = Field(default_factory=lambda: ["zip_code"], description="user columns (glob) left out")
    categorical_columns: list[str] = Field(
        default_factory=lambda: ["onehot_feat*"], description="numeric user columns (glob) one-hot encoded as categories"
    )
    max_categories: Annotated[int, Field(ge=1, le=1000)] = Field(32, description="one-hot values kept per categorical column")
    als_rank: Annotated[int, Field(ge=1, le=512)] = Field(32, description="ALS factors (behaviour block width)")
    als_iterations: Annotated[int, Field(ge=1, le=100)] = Field(10, description="ALS iterations")
    als_reg: Annotated[float, Field(ge=0)] = Field(0.05, description="ALS regularisation")
    als_alpha: Annotated[float, Field(gt=0)] = Field(10.0, description="ALS implicit confidence: 1 + alpha * positives")
    k: Annotated[int, Field(ge=1, le=1000)] = Field(50, description="look-alike users kept per user")
    lsh_bands: Annotated[int, Field(ge=1, le=1024)] = Field(32, description="SimHash bands (orderings)")
    lsh_bits_per_band: Annotated[int, Field(ge=1, le=62)] = Field(16, description="hyperplanes (sign bits) per band")
    lsh_window: Annotated[int, Field(ge=1, le=10_000)] = Field(
        32, description="users compared on each side of a user in each band's order (2 * window >= k)"
    )
    lsh_projection_dims: Annotated[int, Field(ge=0, le=4096)] = Field(
        32, description="hash the centred vectors' leading principal directions (0 = hash the raw vectors)"
    )
    lsh_recall_sample: Annotated[int, Field(ge=0, le=100_000)] = Field(
        1000,
        description="users per sample whose exact top-k is brute-forced on every build: a selection sample "
        "(lsh_auto_bands) and a disjoint held-out one that estimates recall@k (0 = off; at most half the users each)",
    )
    lsh_target_recall: Annotated[float, Field(ge=0, le=1)] = Field(
        0.95, description="the lookalike_users_recall check warns when the held-out recall@k is below this"
    )
    lsh_auto_bands: bool = Field(
        True,
        description="double lsh_bands until the recall@k of a selection sample reaches lsh_target_recall (or "
        "lsh_max_bands); the recall reported is measured on a disjoint held-out sample",
    )
    lsh_max_bands: Annotated[int, Field(ge=1, le=1024)] = Field(256, description="cap on the bands lsh_auto_bands may reach")
    seed: int = Field(20220408, description="seed of the hyperplanes, the PCA sample, the recall sample and ALS")
    window_days: Annotated[int, Field(ge=1, le=366)] = Field(7, description="item_neighbors: days of positives before the cutoff")
    max_items_per_user: Annotated[int, Field(ge=2, le=10_000)] = Field(
        100, description="item_neighbors: a user's most recent distinct positive items counted"
    )
    min_co_users: Annotated[int, Field(ge=1)] = Field(2, description="item_neighbors: fewest co-occurring users of a pair")
    item_k: Annotated[int, Field(ge=1, le=1000)] = Field(50, description="item_neighbors: neighbours kept per item")
    item_similarity: Literal["cosine", "swing"] = Field(
        "swing", description="item_neighbors: co-occurrence cosine, or Swing with user weights (docs/lookalike.md)"
    )
    swing_alpha: Annotated[float, Field(gt=0)] = Field(1.0, description="item_neighbors (swing): alpha in 1 / (alpha + |I_u ∩ I_v|)")
    swing_max_users_per_item: Annotated[int, Field(ge=2, le=100_000)] = Field(
        200, description="item_neighbors (swing): an item's most recent users paired (bounds the work per item)"
    )
    history_items: Annotated[int, Field(ge=1, le=1000)] = Field(20, description="recall_items: recent positive items that vote")
    decay: Annotated[float, Field(gt=0, le=1)] = Field(0.9, description="recall_items: vote weight decay^position (0 = most recent)")
    recall_size: Annotated[int, Field(ge=1, le=10_000)] = Field(100, description="recall_items: pool size N per user")
    recall_fill: Literal["none", "popular"] = Field(
        "none", description="recall_items: top up short pools with the window's popular unseen items (source 'popular')"
    )

    @field_validator("cutoff_ts")
    @classmethod
    def _utc(cls, v: dt.datetime) -> dt.datetime:
        return v.replace(tzinfo=dt.timezone.utc) if v.tzinfo is None else v.astimezone(dt.timezone.utc)

    @model_validator(mode="after")
    def _consistent(self) -> "LookalikeSettings":
        if self.profile_weight + self.behaviour_weight <= 0:
            raise ValueError("profile_weight and behaviour_weight must not both be 0")
        if 2 * self.lsh_window < self.k:
            raise ValueError("lsh_window must be at least k / 2 (every user needs k candidates)")
        if self.lsh_auto_bands and self.lsh_recall_sample == 0:
            raise ValueError("lsh_auto_bands needs lsh_recall_sample > 0 (the bands are chosen on the sampled recall)")
        if self.lsh_auto_bands and self.lsh_max_bands < self.lsh_bands:
            raise ValueError("lsh_max_bands must be at least lsh_bands")
        return self

# --- training settings (trainers; docs/training.md) go here ---


class TrainingSplitSettings(StrictModel):
    """Date split of the trainers: consecutive whole UTC days ending at ``last_date``."""

    train_days: Annotated[int, Field(ge=1)] = Field(9, description="training days")
    valid_days: Annotated[int, Field(ge=1)] = Field(2, description="validation days (model and label selection)")
    test_days: Annotated[int, Field(ge=1)] = Field(3, description="test days (reported, never used to choose)")
    last_date: dt.date | None = Field(None, description="last test day (inclusive); null: the last day in the data")


class TrainingSettings(StrictModel):
    """PyTorch trainers (docs/training.md): where runs go, the split, per-model overrides."""

    runs_root: str = Field("var/runs", description="root of the run directories (config, metrics, checkpoint, table versions)")
    seed: int = Field(61, description="default seed of every trainer")
    split: TrainingSplitSettings = Field(default_factory=TrainingSplitSettings, description="date split")
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


class Settings(StrictModel):
    """The whole project configuration."""

    warehouse: WarehouseSettings = WarehouseSettings()
    spark: SparkSettings = SparkSettings()
    sources_root: str = Field("var/sources", description="where generated sources are written")
    sources: dict[str, SourceConfig] = Field(
        default_factory=lambda: {"synthetic": SourceConfig(kind="synthetic", path="var/sources/synthetic")}
    )
    active_source: str = Field("synthetic", description="the source the Dagster assets ingest")
    partitions: PartitionSettings = PartitionSettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    ingest_chunk_rows: Annotated[int, Field(ge=1_000)] = Field(
        500_000, description="rows per chunk when streaming a source file (bounds memory)"
    )
    rules: IngestRules = Field(default_factory=IngestRules, description="record validation rules of ingestion")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="ingestion engine and Beam runner")
    sequences: SequenceSettings = Field(default_factory=SequenceSettings, description="user_sequences protocol")
    quality: QualitySettings = Field(
        default_factory=QualitySettings,
        description="data-quality suites: row-count band, rating range, severities, GX engine (docs/quality.md)",
    )
    labels: LabelSettings = Field(default_factory=LabelSettings, description="debiased watch-time labels (docs/labels.md)")
    lookalike: LookalikeSettings = Field(
        default_factory=LookalikeSettings, description="RAR look-alike users and recall items (docs/lookalike.md)"
    )
    training: TrainingSettings = Field(default_factory=TrainingSettings, description="trainers (docs/training.md)")

    @model_validator(mode="after")
    def _active_source_known(self) -> "Settings":
        if self.active_source not in self.sources:
            raise ValueError(f"active_source {self.active_source!r} is not one of sources {sorted(self.sources)}")
        return self

    @property
    def source(self) -> SourceConfig:
        return self.sources[self.active_source]


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative local paths in the file relative to the file's directory."""

    def fix(p: Any) -> Any:
        if isinstance(p, str) and p and not _is_uri(p) and not os.path.isabs(p):
            return str((base / p).resolve())
        return p

    data = dict(data)
    if isinstance(data.get("warehouse"), dict) and "root" in data["warehouse"]:
        data["warehouse"] = {**data["warehouse"], "root": fix(data["warehouse"]["root"])}
    if isinstance(data.get("quality"), dict) and data["quality"].get("reports_dir"):
        data["quality"] = {**data["quality"], "reports_dir": fix(data["quality"]["reports_dir"])}
    if isinstance(data.get("training"), dict) and data["training"].get("runs_root"):
        data["training"] = {**data["training"], "runs_root": fix(data["training"]["runs_root"])}
    if isinstance(data.get("ingest"), dict) and data["ingest"].get("stage_root"):
        data["ingest"] = {**data["ingest"], "stage_root": fix(data["ingest"]["stage_root"])}
    if "sources_root" in data:
        data["sources_root"] = fix(data["sources_root"])
    if isinstance(data.get("sources"), dict):
        fixed = {}
        for name, src in data["sources"].items():
            if isinstance(src, dict):
                src = dict(src)
                if "path" in src:
                    src["path"] = fix(src["path"])
                for dim in ("users", "items"):
                    if isinstance(src.get(dim), dict) and "path" in src[dim]:
                        src[dim] = {**src[dim], "path": fix(src[dim]["path"])}
            fixed[name] = src
        data["sources"] = fixed
    return data


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _describe(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required field is missing"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"bad configuration in {origin}: {loc}: {msg}{more}"


def find_config_file(explicit: str | os.PathLike | None = None) -> Path | None:
    """The config file to read: explicit, else ``$RECFEAT_CONFIG``, else ``./recfeat.yaml``."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    env = os.environ.get("RECFEAT_CONFIG")
    if env:
        path = Path(env)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from RECFEAT_CONFIG)")
        return path
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    return default if default.is_file() else None


def load_settings(
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Read, merge and validate the settings; raise :class:`ConfigError` with one line on error.

    ``overrides`` maps dotted field names to values (used by CLI flags such as
    ``--warehouse``) and wins over everything.
    """
    environ = os.environ if environ is None else environ
    path = find_config_file(config_file)
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"bad configuration in {origin}:{where} not valid YAML") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"bad configuration in {origin}: the file must hold a mapping of settings")
        data = _resolve_paths(loaded, path.parent.resolve())
    for var, dotted in ENV_OVERRIDES.items():
        if environ.get(var):
            _set_path(data, dotted, environ[var])
            origin += f" + ${var}"
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(data, tuple(dotted.split(".")), value)
    if "sources" not in data:
        # The default synthetic source lives under sources_root.
        root = data.get("sources_root", Settings.model_fields["sources_root"].default)
        data["sources"] = {"synthetic": {"kind": "synthetic", "path": str(Path(root) / "synthetic")}}
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, origin)) from None
