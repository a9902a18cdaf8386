"""Source adapters: read a configured source's files into staged events, users and items.

``adapter_for(name, config)`` picks the adapter for ``config.kind``; see ``docs/sources.md``.
"""
from __future__ import annotations

from pipelines.settings import SourceConfig
from pipelines.sources.base import SourceAdapter
from pipelines.sources.convert import ChunkConversion
from pipelines.sources.errors import SourceError
from pipelines.sources.generic import CsvAdapter, ParquetAdapter
from pipelines.sources.kuairand import KuaiRandAdapter
from pipelines.sources.movielens import MovieLensAdapter

#: config.kind -> adapter class. The synthetic generator writes KuaiRand files.
ADAPTERS: dict[str, type[SourceAdapter]] = {
    "synthetic": KuaiRandAdapter,
    "kuairand": KuaiRandAdapter,
    "movielens": MovieLensAdapter,
    "csv": CsvAdapter,
    "parquet": ParquetAdapter,
}


def adapter_for(name: str, config: SourceConfig) -> SourceAdapter:
    """The adapter reading source ``name`` as configured by ``config``."""
    try:
        cls = ADAPTERS[config.kind]
    except KeyError:
        raise SourceError(f"source {name!r}: unknown kind {config.kind!r}; known: {sorted(ADAPTERS)}") from None
    return cls(name, config)


__all__ = [
    "ADAPTERS",
    "ChunkConversion",
    "CsvAdapter",
    "KuaiRandAdapter",
    "MovieLensAdapter",
    "ParquetAdapter",
    "SourceAdapter",
    "SourceError",
    "adapter_for",
]
