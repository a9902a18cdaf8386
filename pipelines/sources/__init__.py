"""Source adapters: read a configured source's files into staged events, users and items.

``adapter_for(name, config)`` picks the adapter for ``config.kind``; see ``docs/sources.md``.
"""
from __future__ import annotations

from features.source_kinds import SOURCE_KINDS
from pipelines.sections import SourceConfig
from pipelines.sources.base import SourceAdapter
from pipelines.sources.convert import ChunkConversion
from pipelines.sources.errors import SourceError
from pipelines.sources.generic import CsvAdapter, ParquetAdapter
from pipelines.sources.kuairand import KuaiRandAdapter
from pipelines.sources.movielens import MovieLensAdapter

#: config.kind -> adapter class, one per kind of :data:`features.source_kinds.SOURCE_KINDS`.
#: The synthetic generator writes KuaiRand files.
ADAPTERS: dict[str, type[SourceAdapter]] = {
    "synthetic": KuaiRandAdapter,
    "kuairand": KuaiRandAdapter,
    "movielens": MovieLensAdapter,
    "csv": CsvAdapter,
    "parquet": ParquetAdapter,
}
if tuple(ADAPTERS) != SOURCE_KINDS:  # pragma: no cover - a kind added in one place only
    raise ImportError(f"ADAPTERS {tuple(ADAPTERS)} do not match features.source_kinds.SOURCE_KINDS {SOURCE_KINDS}")


def adapter_for(name: str, config: SourceConfig) -> SourceAdapter:
    """The adapter reading source ``name`` as configured by ``config``."""
    try:
        cls = ADAPTERS[config.kind]
    except KeyError:
        raise SourceError(f"source {name!r}: unknown kind {config.kind!r}; known: {sorted(ADAPTERS)}") from None
    return cls(name, config)


__all__ = [
    "ADAPTERS",
    "SOURCE_KINDS",
    "ChunkConversion",
    "CsvAdapter",
    "KuaiRandAdapter",
    "MovieLensAdapter",
    "ParquetAdapter",
    "SourceAdapter",
    "SourceError",
    "adapter_for",
]
