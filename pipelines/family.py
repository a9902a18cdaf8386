"""The one shape of a feature family in the pipelines layer.

A family is a set of tables built by the same code, for example ``labels``
(``duration_stats`` and ``watch_time_labels``). It has

* in ``features/<family>/``: its table contracts (columns with descriptions and units, key,
  partitioning, invariants in prose, quality expectations) and its pure kernels;
* in ``pipelines/<family>/``: its parameters (``params.py``, a settings section validated at load
  and named as in ``recfeat.yaml``), its jobs and its invariant counters, and a :class:`Family`
  value that ties them together (``pipelines/<family>/__init__.py``);
* one line in :data:`pipelines.catalog.FAMILIES`.

From that line, ``orchestration.factory`` makes the Dagster assets (one per :class:`Step`), one
blocking quality check per table (the Great Expectations suite built from the contract, plus the
family's invariant counter), ``recfeat tables``, ``recfeat report`` and the docs test see the
tables, and ``Settings`` gains the family's section. Nothing else is edited to add a family.

Time convention: every window is a half-open range of UTC calendar days ``[start, end)``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from features.contracts import TableContract
from features.layout import Manifest
from features.timeutil import DateWindow

if TYPE_CHECKING:  # imported for annotations only: the settings module imports the catalog
    from pipelines.settings import Settings
    from pipelines.warehouse import Warehouse


@dataclass
class JobContext:
    """What a job, an invariant counter or a check gets: the I/O handles and its parameters.

    ``spark`` is created on first use (a family whose jobs need no Spark never starts it).
    ``params`` is the family's settings section (``settings.<family>``), ``None`` for a family
    without one. ``tables`` are the tables the caller wants built (a subset of the step's,
    for a selection); ``window`` the UTC days of a partitioned run, else ``None``.
    """

    warehouse: "Warehouse"
    settings: "Settings"
    params: Any = None
    spark_session: Callable[[], Any] | None = None
    window: DateWindow | None = None
    run_id: str = ""
    tables: tuple[str, ...] = ()
    log: Callable[[str], None] = field(default=lambda message: None)

    @property
    def spark(self):
        if self.spark_session is None:
            raise RuntimeError("this job needs Spark but its context has no Spark session")
        return self.spark_session()

    def reports_root(self) -> str:
        """Where figures and data docs are written (``quality.reports_dir``, else under the warehouse)."""
        from pipelines.quality import reports_root

        return reports_root(self.warehouse, self.settings.quality)


@dataclass
class JobResult:
    """What every job returns: the manifest of each table it built and figures about the build.

    ``manifests`` maps table name to the manifest now current (a job that found nothing to do
    returns the unchanged current manifest: ``version`` tells whether it committed).
    ``stats`` maps table name to figures for the Dagster materialization metadata (ints,
    floats, short strings, small dicts); ``figures`` maps table name to ``{name: PNG path}``;
    ``partitions`` maps a partitioned table to the partitions the run covered (its preview and
    row count in the metadata are taken over those). A step without a table (a source
    generator) reports under its step name.
    """

    manifests: dict[str, Manifest]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: dict[str, dict[str, str]] = field(default_factory=dict)
    partitions: dict[str, list[str]] = field(default_factory=dict)
    summary: str = ""

    def manifest(self, table: str) -> Manifest:
        return self.manifests[table]


@dataclass(frozen=True)
class CheckOutcome:
    """The result of a family's extra check (for example a recall estimate)."""

    passed: bool
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExtraCheck:
    """A check beyond the per-table quality check; ``blocking=False`` only warns."""

    name: str
    table: str
    description: str
    run: Callable[[JobContext], CheckOutcome]
    blocking: bool = False


@dataclass(frozen=True)
class View:
    """A catalogued table that, under the settings, is not stored but derived on read.

    ``source`` is the stored table it is derived from: a view's ``version`` / ``as_of`` name a
    version of ``source``. ``read_arrow(ctx, version, partitions, columns)`` returns a pyarrow
    Table, ``read_spark(ctx, version, partitions)`` a Spark DataFrame, ``schema(ctx)`` the
    Arrow schema (``ctx`` is the family's :class:`JobContext`). A view has no asset and no
    commit of its own; the family checks it through its source (docs/architecture.md).
    """

    table: str
    source: str
    read_arrow: Callable[..., Any]
    read_spark: Callable[..., Any]
    schema: Callable[..., Any]


@dataclass(frozen=True)
class Step:
    """Tables built together in one pass (one asset, one commit per table).

    ``deps`` are the upstream asset keys (tables of other families, or the synthetic source);
    one that is not in the graph (the synthetic source with a real source) is left out. A step
    without tables is an asset of its own name that writes no table (the synthetic generator).
    ``run`` builds the tables and returns their manifests; ``kinds`` tag the Dagster asset.
    """

    name: str
    tables: tuple[TableContract, ...]
    run: Callable[[JobContext], JobResult]
    deps: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset({"spark", "delta"})
    description: str = ""
    group: str = ""

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)


def _always(settings: "Settings") -> bool:
    return True


@dataclass(frozen=True)
class Family:
    """One feature family: its steps, invariant counters, parameters and Dagster conventions.

    ``params`` is the family's settings model and ``settings_key`` its section in
    ``recfeat.yaml`` (default: the family's name); ``None`` for a family configured by the core
    sections. ``invariants`` maps a table to its invariant counter (``{violation: count}``, 0 =
    holds). The parameters the tables' quality expectations refer to (``Param("max_len")``) are
    the fields of the family's settings section, by name; ``check_params`` replaces them. ``partitioned(settings)`` says whether the steps are daily
    partitioned (a run builds a :class:`DateWindow`); ``views(settings)`` the tables that those
    settings make :class:`View` s (derived on read: no asset, no table check); ``enabled(settings)`` whether the family is
    in the graph at all (``synthetic`` only with the synthetic source). ``resolve(section,
    settings)`` fills fields of the section that default to another section's (the recall
    cutoff defaults to the look-alike one).
    """

    name: str
    description: str
    steps: tuple[Step, ...]
    group: str = ""
    params: type | None = None
    settings_key: str | None = None
    invariants: Mapping[str, Callable[[JobContext], dict[str, int]]] = field(default_factory=dict)
    check_params: Callable[["Settings"], dict[str, Any]] | None = None
    extra_checks: tuple[ExtraCheck, ...] = ()
    partitioned: Callable[["Settings"], bool] = field(default=lambda settings: False)
    enabled: Callable[["Settings"], bool] = _always
    owners: tuple[str, ...] = ("team:recfeat",)
    docs: str = ""
    resolve: Callable[[Any, "Settings"], Any] | None = None
    code_modules: tuple[str, ...] = ()
    version_settings: Callable[["Settings"], Any] | None = None
    views: Callable[["Settings"], tuple[View, ...]] = field(default=lambda settings: ())

    def __post_init__(self) -> None:
        if self.params is not None and self.settings_key is None:
            object.__setattr__(self, "settings_key", self.name)
        if not self.group:
            object.__setattr__(self, "group", self.name)
        names = [t.name for s in self.steps for t in s.tables]
        if len(set(names)) != len(names):
            raise ValueError(f"family {self.name!r}: a table is built by two steps: {names}")
        unknown = set(self.invariants) - set(names)
        if unknown:
            raise ValueError(f"family {self.name!r}: invariants for tables it does not build: {sorted(unknown)}")

    @property
    def tables(self) -> tuple[TableContract, ...]:
        return tuple(t for s in self.steps for t in s.tables)

    def stored_tables(self, settings: "Settings") -> tuple[TableContract, ...]:
        """The tables stored under ``settings``: :attr:`tables` less the ``views(settings)``."""
        viewed = {v.table for v in self.views(settings)}
        return tuple(t for t in self.tables if t.name not in viewed)

    def section(self, settings: "Settings"):
        """The family's parameters in ``settings`` (``None`` without a section), resolved."""
        if not self.settings_key:
            return None
        section = getattr(settings, self.settings_key)
        return self.resolve(section, settings) if self.resolve is not None else section

    def versioned_settings(self, settings: "Settings") -> Any:
        """The settings the tables' contents depend on (part of the code version)."""
        if self.version_settings is not None:
            return self.version_settings(settings)
        section = self.section(settings)
        return section.model_dump(mode="json") if section is not None else None

    def expectation_params(self, settings: "Settings") -> dict[str, Any]:
        """The values of the ``Param`` bounds of this family's expectations."""
        if self.check_params is not None:
            return self.check_params(settings)
        section = self.section(settings)
        return section.model_dump() if section is not None else {}

    def context(self, warehouse: "Warehouse", settings: "Settings", **kwargs) -> JobContext:
        """A :class:`JobContext` for this family (its section as ``params``)."""
        return JobContext(warehouse=warehouse, settings=settings, params=self.section(settings), **kwargs)
