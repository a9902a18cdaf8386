"""Typed project settings, read from one YAML file and overridden by environment variables.

Resolution order (later wins):

1. defaults declared on the fields of the section models (the core sections in
   :mod:`pipelines.sections`, :class:`~pipelines.quality.settings.QualitySettings`, and each
   family's ``pipelines/<family>/params.py``; the documented defaults; ``recfeat.yaml`` at the
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

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, create_model, model_validator

from pipelines.config import ConfigError, StrictModel, is_uri as _is_uri  # noqa: F401  (re-exported)
from pipelines.quality.settings import QualitySettings
from pipelines.sections import (  # noqa: F401  (re-exported: each is defined once, in pipelines.sections)
    ColumnMapping,
    DimensionFile,
    IngestRules,
    IngestSettings,
    PartitionSettings,
    RunSettings,
    SourceConfig,
    SparkSettings,
    SyntheticSettings,
    TrainingSettings,
    TrainingSplitSettings,
    WarehouseSettings,
    local_stage_root,
    secret_conf_keys,
)

ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "RECFEAT_WAREHOUSE": ("warehouse", "root"),
    "RECFEAT_SPARK_MASTER": ("spark", "master"),
    "RECFEAT_ACTIVE_SOURCE": ("active_source",),
    "RECFEAT_SOURCES_ROOT": ("sources_root",),
}
DEFAULT_CONFIG_NAME = "recfeat.yaml"


class CoreSettings(StrictModel):
    """The sections every project has; each catalogued family adds its own (:func:`settings_model`)."""

    warehouse: WarehouseSettings = WarehouseSettings()
    spark: SparkSettings = SparkSettings()
    run: RunSettings = Field(default_factory=RunSettings, description="how a run's steps are executed")
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
    quality: QualitySettings = Field(
        default_factory=QualitySettings,
        description="data-quality suites: row-count band, rating range, severities, GX engine (docs/quality.md)",
    )
    training: TrainingSettings = Field(default_factory=TrainingSettings, description="trainers (docs/training.md)")

    @model_validator(mode="after")
    def _active_source_known(self) -> "CoreSettings":
        if self.active_source not in self.sources:
            raise ValueError(f"active_source {self.active_source!r} is not one of sources {sorted(self.sources)}")
        return self

    @property
    def source(self) -> SourceConfig:
        return self.sources[self.active_source]


def settings_model(families, base: type[CoreSettings] = CoreSettings) -> type[CoreSettings]:
    """The settings model of ``families``: ``base`` plus one section per family with parameters.

    A family's section is named by its ``settings_key`` and validated by its ``params`` model
    (defaults from the model; a typo in it fails at load with the dotted field name).
    """
    fields = {}
    for family in families:
        if family.params is None:
            continue
        if family.settings_key in base.model_fields or family.settings_key in fields:
            raise ValueError(f"family {family.name!r}: settings section {family.settings_key!r} is already taken")
        fields[family.settings_key] = (
            family.params, Field(default_factory=family.params, description=family.description)
        )
    model = create_model("Settings", __base__=base, __module__=__name__, **fields)
    model.__doc__ = "The whole project configuration: the core sections and one section per catalogued family."
    return model


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative local paths in the file relative to the file's directory.

    Core path fields are listed here; a family's path fields say so in their declaration
    (``Field(..., json_schema_extra={"path": True})``).
    """

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
    from pipelines import catalog

    for family in catalog.families():  # family path fields: marked json_schema_extra={"path": True}
        section = data.get(family.settings_key) if family.params is not None else None
        if isinstance(section, dict):
            paths = [n for n, f in family.params.model_fields.items()
                     if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("path")]
            data[family.settings_key] = {k: fix(v) if k in paths else v for k, v in section.items()}
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
) -> "Settings":
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
        root = data.get("sources_root", CoreSettings.model_fields["sources_root"].default)
        data["sources"] = {"synthetic": {"kind": "synthetic", "path": str(Path(root) / "synthetic")}}
    try:
        return _model().model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, origin)) from None


def _sections(families) -> tuple:
    """What a settings model depends on: each family's section name and model."""
    return tuple((f.settings_key, f.params) for f in families if f.params is not None)


_MODELS: dict[tuple, type[CoreSettings]] = {}


def _model() -> type[CoreSettings]:
    """The settings model of the catalog as it is now: :data:`Settings` for the built-in
    sections, else a model of the catalog's sections (a test's toy family), built once each."""
    from pipelines import catalog

    key = _sections(catalog.families())
    if key not in _MODELS:
        _MODELS[key] = settings_model(catalog.families())
    return _MODELS[key]


def _built_in():
    from pipelines import catalog

    return catalog.FAMILIES


#: The settings model of the built-in catalog (what ``load_settings`` returns unless the catalog
#: was changed at run time).
Settings = settings_model(_built_in())
_MODELS[_sections(_built_in())] = Settings
