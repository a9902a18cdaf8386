"""Finding source files and streaming them chunk by chunk (format-independent parts, and Parquet).

Event files are read in chunks of exactly ``chunk_rows`` rows (the last may be shorter; see
:func:`rechunk`), and :func:`pipelined` converts chunk *k* in a background thread while chunk
*k+1* is read. Parquet chunks are numbered by 1-based row. Delimited text files are streamed by
:mod:`pipelines.sources.csvio`.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.sources.errors import SourceError, error_line

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RawChunk:
    """Consecutive records of one file, before conversion.

    ``table`` holds the file's columns (text for delimited files, native types for Parquet),
    one row per record, in file order; ``first_line`` is the 1-based data line (Parquet: row) of
    its first row. ``raw_records`` is each record's raw text (a delimited file's line; ``None``
    for Parquet, whose records are described from their fields). ``codes`` / ``reasons`` mark
    records the reader already rejected (a :class:`features.rejections.Reason` value and a
    message per row, null for the others; ``None`` when there are none): their fields in
    ``table`` are null. ``keys`` overrides the record keys (``::``-separated files).
    """

    first_line: int
    table: pa.Table
    raw_records: pa.Array | pa.ChunkedArray | None = None
    codes: pa.Array | None = None
    reasons: pa.Array | None = None
    keys: pa.Array | None = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def existing_path(path: str | Path, what: str = "source path") -> Path:
    """``path`` as a ``Path``; :class:`SourceError` (naming ``what``) if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{p}: {what} does not exist")
    return p


def strip_gz(name: str) -> str:
    """A file name without its ``.gz`` suffix (``x.csv.gz`` -> ``x.csv``)."""
    return name[:-3] if name.endswith(".gz") else name


def match_files(directory: Path, patterns: Iterable[str]) -> list[Path]:
    """Files in ``directory`` (not recursive) matching any glob, sorted by name.

    A file and its gzipped copy (``x.csv`` and ``x.csv.gz``) count once: the plain one is kept.
    Symbolic links are listed too (even dangling ones), so that the reader can refuse them
    (``ingest.follow_symlinks``) or report them as unreadable instead of skipping them silently.
    """
    found: dict[str, Path] = {}
    for pattern in patterns:
        for p in directory.glob(pattern):
            if p.is_file() or p.is_symlink():
                found[p.name] = p
    names = set(found)
    keep = [p for name, p in found.items() if not (name.endswith(".gz") and strip_gz(name) in names)]
    return sorted(keep, key=lambda p: p.name)


def rechunk(batches: Iterable[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``chunk_rows`` rows (the last may be shorter) from a stream of batches."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    buffered: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buffered.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(buffered)
            yield table.slice(0, chunk_rows).combine_chunks()
            rest = table.slice(chunk_rows)
            buffered = rest.to_batches() if rest.num_rows else []
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(buffered).combine_chunks()


def pipelined(items: Iterable[T], convert: Callable[[T], R], depth: int = 2) -> Iterator[R]:
    """``convert(item)`` for every item, in order, converting in background threads.

    While chunk *k* is converted, chunk *k+1* is read: pyarrow releases the GIL in both, so
    reading and converting overlap. At most ``depth`` chunks wait converted or in conversion,
    which bounds memory. Errors come out in file order: when reading fails, the chunks read
    before are still handed out (converted) first, and a conversion that fails among them
    surfaces its error (the earlier line) instead of the read error.
    """
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="recfeat-source") as pool:
        try:
            while True:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                except Exception:
                    # Reading failed: hand out what was read before it (an earlier chunk's
                    # conversion error names an earlier line, so it comes first).
                    while pending:
                        yield pending.popleft().result()
                    raise
                pending.append(pool.submit(convert, item))
                while len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def iter_parquet(path: str | Path, chunk_rows: int) -> Iterator[tuple[int, pa.Table]]:
    """Stream a Parquet file as (first row number, table) chunks of ``chunk_rows`` rows."""
    try:
        pf = pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {error_line(exc)}") from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from pf.iter_batches(batch_size=chunk_rows)
        except (pa.ArrowException, OSError) as exc:
            raise SourceError(f"{path}: cannot read: {error_line(exc)}") from None

    line = 1
    try:
        for table in rechunk(batches(), chunk_rows):
            yield line, table
            line += table.num_rows
    finally:
        pf.close()


def parquet_columns(path: str | Path) -> list[str]:
    """The column names of a Parquet file (its schema only is read)."""
    try:
        return list(pq.read_schema(str(path)).names)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {error_line(exc)}") from None


def read_parquet(path: str | Path) -> pa.Table:
    """A whole Parquet file as one table (for dimension files)."""
    try:
        return pq.read_table(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {error_line(exc)}") from None
