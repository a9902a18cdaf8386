"""Running Great Expectations: an ephemeral context with file stores, validation, data docs.

The GX context is ephemeral (created per check, progress bars off), but its suite and
validation-result stores are folders under ``<reports>/gx/_stores``, so one data docs index
lists every table and run. The newest ``keep`` results per suite are kept; older results and
their pages are removed. Index builds are serialised with a file lock, so checks running in
parallel processes do not delete each other's pages.

Data docs pages are rendered from GX's Jinja templates; GX builds a new Jinja environment for
every view, so each check used to parse and compile the same templates again (about 0.7 s a
check on two cores). :func:`share_template_cache` gives every such environment one in-memory
bytecode cache per process, keyed (by Jinja) on the template's name and source checksum: the
pages are the same, only the compile is done once.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlparse

import jinja2

from pipelines.quality.expectations import ERROR, FROM_GX_SEVERITY, Expectation, column_of
from pipelines.quality.frames import is_pandas
from pipelines.quality.preload import wait_for_gx
from pipelines.quality.results import GX_DIR, ExpectationOutcome

DATASOURCE = "warehouse"
SAMPLE_VALUES = 5

#: The result format of a validation that failed: unexpected counts and up to 20 unexpected
#: values per expectation (the report shows them).
DETAILED = "SUMMARY"
#: The first validation of every frame: whether each expectation holds, and nothing more. GX
#: then computes no unexpected values, which on Spark is an extra scan of the whole frame per map
#: expectation even when nothing is unexpected (59 of the 79 Spark jobs of the ``user_sequences``
#: suite at 10M events, docs/benchmarks.md) and on pandas about a sixth of the validation (1.3 s
#: of a 1,000,000-row ``user_sequences`` check). A suite that fails is validated again with
#: :data:`DETAILED`; with every expectation strict (no ``mostly``), a map expectation that holds
#: has 0 unexpected values, which is what the outcome records.
PASS_OR_FAIL = "BOOLEAN_ONLY"

#: (batch name, suite name, expectations, frame): one validation.
Batch = tuple[str, str, list[Expectation], Any]


class _MemoryBytecodeCache(jinja2.BytecodeCache):
    """A process-wide Jinja bytecode cache in memory. Jinja keys each bucket on the template
    name and a checksum of its source, so a changed template is compiled again."""

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        data = self.store.get(bucket.key)
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket) -> None:
        self.store[bucket.key] = bucket.bytecode_to_string()

    def clear(self) -> None:
        self.store.clear()


#: The one template cache of this process (:func:`share_template_cache`).
TEMPLATE_CACHE = _MemoryBytecodeCache()


def share_template_cache() -> None:
    """Make every GX Jinja view of this process use :data:`TEMPLATE_CACHE` (idempotent).

    GX's ``DefaultJinjaView`` (the base of every data docs view) builds its own
    ``jinja2.Environment`` with no bytecode cache; this wraps its ``__init__`` to attach ours.
    If a GX release no longer has that class or attribute, pages still render, uncached."""
    wait_for_gx()
    try:
        from great_expectations.render.view.view import DefaultJinjaView
    except ImportError:  # a GX layout without it: render uncached
        return
    if getattr(DefaultJinjaView, "_recfeat_template_cache", None) is TEMPLATE_CACHE:
        return
    original = DefaultJinjaView.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        env = getattr(self, "env", None)
        if env is not None and getattr(env, "bytecode_cache", None) is None:
            env.bytecode_cache = TEMPLATE_CACHE

    DefaultJinjaView.__init__ = __init__
    DefaultJinjaView._recfeat_template_cache = TEMPLATE_CACHE


def gx_context(reports: str):
    """An ephemeral GX context whose suites and results persist under ``<reports>/gx/_stores``.

    The data docs index lists what the stores hold (and deletes pages whose result is not
    there), so the stores must outlive the process for one index to cover every table and run.
    Datasources, validation definitions and checkpoints stay in memory.
    """
    wait_for_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    base = os.path.join(reports, GX_DIR)

    def files(sub: str) -> dict[str, str]:
        return {"class_name": "TupleFilesystemStoreBackend", "base_directory": os.path.join(base, "_stores", sub)}

    memory = {"class_name": "InMemoryStoreBackend"}
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        stores={
            "expectations_store": {"class_name": "ExpectationsStore", "store_backend": files("expectations")},
            "validation_results_store": {"class_name": "ValidationResultsStore", "store_backend": files("validations")},
            "checkpoint_store": {"class_name": "CheckpointStore", "store_backend": memory},
            "validation_definition_store": {"class_name": "ValidationDefinitionStore", "store_backend": memory},
        },
        expectations_store_name="expectations_store",
        validation_results_store_name="validation_results_store",
        checkpoint_store_name="checkpoint_store",
        data_docs_sites={
            "recfeat": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": base},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_gx(
    reports: str, batches: list[Batch], run_name: str, run_time: dt.datetime, keep: int,
    later: Callable[[], list[Batch]] | None = None,
) -> tuple[list[ExpectationOutcome], dict[str, str], str]:
    """Validate each batch, then the batches ``later()`` returns (called once the first ones are
    validated: a check's invariant counts, counted meanwhile); build data docs; return the
    outcomes, the page per batch, the index."""
    wait_for_gx()
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    share_template_cache()
    ctx = gx_context(reports)
    run_id = RunIdentifier(run_name=run_name, run_time=run_time)
    outcomes: list[ExpectationOutcome] = []
    ids: dict[str, Any] = {}
    validated: list[Batch] = list(batches)

    def every_batch() -> Iterator[Batch]:
        yield from batches
        if later is not None:
            extra = later()
            validated.extend(extra)  # the docs prune below names every suite validated
            yield from extra

    for name, suite_name, expectations, frame in every_batch():
        suite = gx.ExpectationSuite(name=suite_name, expectations=[e.to_gx() for e in expectations])
        suite = ctx.suites.add_or_update(suite)
        add = ctx.data_sources.add_pandas if is_pandas(frame) else ctx.data_sources.add_spark
        batch_def = add(f"{DATASOURCE}_{name}").add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole")
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch_def, suite=suite))
        formats = [PASS_OR_FAIL, DETAILED]
        for fmt in formats:
            cp = ctx.checkpoints.add(
                gx.Checkpoint(name=f"{suite_name}_{fmt.lower()}", validation_definitions=[vd], actions=[], result_format={"result_format": fmt})
            )
            result = cp.run(batch_parameters={"dataframe": frame}, run_id=run_id)
            if all(v.success for v in result.run_results.values()):
                break  # else validate again, in detail: the same run and batch, so it replaces this result
        for key, validation in result.run_results.items():
            ids[name] = key
            outcomes += [_outcome(r, name, fmt) for r in validation.results]
    # Checks of several tables may run at once (Dagster's multiprocess executor). The index
    # build deletes pages whose result it did not list, so pruning and building are serialised
    # with a file lock; validation itself (the slow part) runs outside it.
    with _docs_lock(reports):
        _prune(ctx, [suite_name for _, suite_name, _, _ in validated], keep)
        ctx.build_data_docs(resource_identifiers=list(ids.values()))
        pages = {name: _site_path(ctx.get_docs_sites_urls(resource_identifier=key)) for name, key in ids.items()}
        index = _site_path(ctx.get_docs_sites_urls())
    return outcomes, pages, index


@contextmanager
def _docs_lock(reports: str) -> Iterator[None]:
    import fcntl

    os.makedirs(os.path.join(reports, GX_DIR), exist_ok=True)
    with open(os.path.join(reports, GX_DIR, ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _outcome(r, batch: str, result_format: str = DETAILED) -> ExpectationOutcome:
    cfg = r.expectation_config
    severity = getattr(cfg, "severity", "critical")
    severity = FROM_GX_SEVERITY.get(getattr(severity, "value", str(severity)), ERROR)
    res = r.result or {}
    error = None
    info = r.exception_info or {}
    if info.get("raised_exception"):
        error = str(info.get("exception_message") or "GX raised").splitlines()[0][:200]
    count = res.get("unexpected_count")
    strict = (cfg.kwargs.get("mostly") or 1) >= 1
    if count is None and result_format == PASS_OR_FAIL and r.success and error is None and strict and _is_map(cfg.type):
        count = 0  # a strict map expectation that holds (only suites that hold keep this format)
    sample: list[str] = []
    for v in res.get("partial_unexpected_list") or []:
        text = _short(v)
        if text not in sample and len(sample) < SAMPLE_VALUES:
            sample.append(text)
    return ExpectationOutcome(
        expectation=cfg.type,
        column=column_of(cfg.kwargs),
        severity=severity,
        success=bool(r.success) and error is None,
        unexpected_count=None if count is None else int(count),
        unexpected_sample=sample,
        batch=batch,
        error=error,
    )


def _is_map(expectation_type: str) -> bool:
    """Whether GX evaluates the expectation row by row (its results count unexpected values)."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        impl = get_expectation_impl(expectation_type)
    except Exception:  # noqa: BLE001 - an unknown type: no count claimed
        return False
    return issubclass(impl, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation))


def _prune(ctx, suite_names: list[str], keep: int) -> None:
    """Keep the newest ``keep`` stored results per suite; data docs drop the others' pages."""
    store = ctx.validation_results_store
    by_suite: dict[str, list] = {}
    for key in store.list_keys():
        name = key.expectation_suite_identifier.name
        if name in suite_names:
            by_suite.setdefault(name, []).append(key)
    for keys in by_suite.values():
        keys.sort(key=lambda k: str(k.run_id.run_time))
        for old in keys[:-keep]:
            store.remove_key(old)


def _site_path(urls: list[dict[str, str]]) -> str:
    if not urls:
        return ""
    url = urls[0]["site_url"]
    return unquote(urlparse(url).path) if url.startswith("file://") else url


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
