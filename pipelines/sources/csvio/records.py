"""Event files: every line a record, parsed by pyarrow per block, rejected lines kept with their raw text."""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from features.rejections import OVERSIZED_LINE_KEPT_BYTES, Reason
from pipelines.sources.csvio.header import CsvFormat, file_columns, read_header
from pipelines.sources.csvio.lines import (
    _BAD_ENCODING,
    _CODE,
    _CODE_OF,
    DEFAULT_MAX_LINE_BYTES,
    _OK,
    _OVERSIZED,
    _RAW,
    _REASON,
    _STR,
    _UNPARSEABLE,
    _WRONG_COUNT,
    _block_size,
    _blocks,
    _decode,
    line_pattern,
    _Lines,
    _open,
    OversizedLine,
    _preview,
    split_lines,
    _StreamError,
    strip_line_end,
    _without_lines,
)
from pipelines.sources.errors import SourceError
from pipelines.sources.files import RawChunk, pipelined


class _CsvBlockParser:
    """One block of a delimited file to a record batch: the file's columns, then raw text, code, reason."""

    def __init__(self, fmt: CsvFormat, names: list[str], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        if fmt.encoding.lower().replace("-", "").replace("_", "") != "utf8":
            raise SourceError(f"event files must be UTF-8 (encoding {fmt.encoding!r} is not supported)")
        self.fmt = fmt
        self.names = names
        self.max_line_bytes = max_line_bytes
        self.pattern = line_pattern(fmt.delimiter) if fmt.quoting else None
        self.convert_options = pcsv.ConvertOptions(
            column_types={n: _STR for n in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=[""],
            check_utf8=False,  # checked per line before parsing
        )
        self.schema = pa.schema(
            [pa.field(n, _STR) for n in names] + [pa.field(_RAW, _STR), pa.field(_CODE, _STR), pa.field(_REASON, _STR)]
        )

    def _read(self, buf: bytes, invalid: list | None = None) -> pa.Table:
        """Parse ``buf``; with ``invalid``, rows with the wrong field count are skipped and listed there."""

        def on_invalid(row) -> str:
            invalid.append((row.number, row.actual_columns))
            return "skip"

        return pcsv.read_csv(
            pa.BufferReader(buf),
            # One parse block per call, no threads: measured fastest here (conversion runs in
            # other threads meanwhile).
            read_options=pcsv.ReadOptions(column_names=self.names, use_threads=False, block_size=len(buf) + 1),
            parse_options=self.fmt.parse_options(on_invalid if invalid is not None else None),
            convert_options=self.convert_options,
        )

    def _parse_fed(
        self, block: bytes, lines: _Lines, text: pa.Array, status: np.ndarray
    ) -> tuple[pa.Table | None, np.ndarray]:
        """Parse the lines whose status is OK: their rows, and per such line its field count if wrong (else 0)."""
        fed = np.flatnonzero(status == _OK)
        found = np.zeros(len(fed), np.int64)
        if not len(fed):
            return None, found
        buf = block if len(fed) == len(lines) else _without_lines(block, lines, status != _OK)
        try:
            # Without an invalid-row handler parsing is about 40 % faster; a wrong field count
            # raises, and the block is parsed again with the handler.
            table = self._read(buf)
            aligned = table.num_rows == len(fed)
        except pa.ArrowInvalid:
            invalid: list = []
            try:
                table = self._read(buf, invalid)
                numbers = [n for n, _ in invalid]
                aligned = table.num_rows + len(invalid) == len(fed) and all(n is not None for n in numbers)
            except pa.ArrowInvalid:
                aligned = False
            if aligned:
                for number, actual in invalid:
                    found[number - 1] = actual
        if aligned:
            return table, found
        return self._parse_line_by_line(strip_line_end(text.take(pa.array(fed))), status, fed, found)

    def _parse_line_by_line(self, text: pa.Array, status, fed, found) -> tuple[pa.Table | None, np.ndarray]:
        """Fallback: each line parsed on its own (a line that does not parse alone is unparseable)."""
        tables = []
        for i, line in enumerate(text.to_pylist()):
            invalid: list = []
            try:
                table = self._read(line.encode("utf-8") + b"\n", invalid)
            except pa.ArrowInvalid:
                table = None
            if table is None or table.num_rows + len(invalid) != 1:
                status[fed[i]] = _UNPARSEABLE
            elif invalid:
                found[i] = invalid[0][1]
            else:
                tables.append(table)
        return (pa.concat_tables(tables) if tables else None), found

    def __call__(self, block: bytes | OversizedLine) -> pa.RecordBatch:
        if isinstance(block, OversizedLine):
            return oversized_batch(block, self.schema, self.max_line_bytes)
        lines = split_lines(block)
        n = len(lines)
        text, bad_encoding = _decode(lines.raw)
        status = np.zeros(n, np.int8)
        if bad_encoding is not None:
            status[bad_encoding] = _BAD_ENCODING
        text, oversized = _flag_oversized(block, lines, text, status, self.max_line_bytes)
        if self.pattern is not None and n and block.find(b'"') >= 0:
            stripped = strip_line_end(text)
            has_quote = pc.match_substring(stripped, '"')
            grammatical = pc.match_substring_regex(stripped, self.pattern)
            unparseable = pc.and_(has_quote, pc.invert(grammatical)).to_numpy(zero_copy_only=False)
            status[unparseable & (status == _OK)] = _UNPARSEABLE
        fed = np.flatnonzero(status == _OK)
        table, found = self._parse_fed(block, lines, text, status)
        status[fed[(found > 0) & (status[fed] == _OK)]] = _WRONG_COUNT
        found_all = np.zeros(n, np.int64)
        found_all[fed] = found
        good = status == _OK
        if table is None or not good.any():
            columns = [pa.nulls(n, _STR) for _ in self.names]
        else:
            columns = [as_one_array(c) for c in table.columns]
            if not good.all():
                index = np.full(n, -1, np.int64)
                index[good] = np.arange(int(good.sum()))
                take = pa.array(index, mask=index < 0)
                columns = [pc.take(c, take) for c in columns]
        codes, reasons = _line_reasons(status, text, found_all, len(self.names), "fields", oversized)
        return pa.RecordBatch.from_arrays([*columns, text, codes, reasons], schema=self.schema)


def as_one_array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def oversized_message(length: int, sha256: str, max_line_bytes: int) -> str:
    """The message of an ``oversized_line`` dead letter."""
    return (
        f"the line is {length:,} bytes long, more than max_line_bytes {max_line_bytes:,} "
        f"(sha256 {sha256}); skipped to its line end, raw_record holds its first {OVERSIZED_LINE_KEPT_BYTES:,} bytes"
    )


def _head_text(head: bytes) -> str:
    return head[:OVERSIZED_LINE_KEPT_BYTES].decode("utf-8", errors="backslashreplace")


def oversized_batch(line: OversizedLine, schema: pa.Schema, max_line_bytes: int) -> pa.RecordBatch:
    """One ``oversized_line`` record as a parsed block of ``schema`` (the fields null)."""
    arrays = []
    for f in schema:
        if f.name == _RAW:
            arrays.append(pa.array([_head_text(line.head)], _STR))
        elif f.name == _CODE:
            arrays.append(pa.array([Reason.OVERSIZED_LINE.value], _STR))
        elif f.name == _REASON:
            arrays.append(pa.array([oversized_message(line.length, line.sha256, max_line_bytes)], _STR))
        else:
            arrays.append(pa.nulls(1, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _flag_oversized(
    block: bytes, lines: _Lines, text: pa.Array, status: np.ndarray, max_line_bytes: int
) -> tuple[pa.Array, dict[int, str]]:
    """Mark the lines of a block longer than ``max_line_bytes`` (status ``_OVERSIZED``).

    Returns the texts with those lines cut to their first bytes, and per such line its message.
    Lines that do not fit in one read block never get here (:func:`_blocks` skips them).
    """
    lengths = lines.ends - lines.starts
    long = np.flatnonzero(lengths > max_line_bytes)
    if not len(long):
        return text, {}
    messages = {}
    texts = text.to_pylist()
    view = memoryview(block)
    for i in long.tolist():
        raw = view[lines.starts[i]: lines.ends[i]]
        messages[i] = oversized_message(len(raw), hashlib.sha256(raw).hexdigest(), max_line_bytes)
        texts[i] = _head_text(bytes(raw[:OVERSIZED_LINE_KEPT_BYTES]))
        status[i] = _OVERSIZED
    return pa.array(texts, _STR), messages


def _line_reasons(
    status: np.ndarray, text: pa.Array, found: np.ndarray, expected: int, what: str, oversized: dict[int, str] | None = None
):
    """Reason code and message per line (null for lines the reader accepts)."""
    n = len(status)
    bad = np.flatnonzero(status != _OK)
    if not len(bad):
        return pa.nulls(n, _STR), pa.nulls(n, _STR)
    codes: list[str | None] = [None] * n
    reasons: list[str | None] = [None] * n
    shown = strip_line_end(text.take(pa.array(bad))).to_pylist()
    for i, line in zip(bad.tolist(), shown):
        kind = int(status[i])
        codes[i] = _CODE_OF[kind]
        if kind == _OVERSIZED:
            reasons[i] = (oversized or {})[i]
        elif kind == _BAD_ENCODING:
            reasons[i] = f"the line is not valid UTF-8: {_preview(line)}"
        elif kind == _UNPARSEABLE:
            reasons[i] = f"cannot split the line into fields (unterminated or stray quote): {_preview(line)}"
        else:
            reasons[i] = f"expected {expected} {what}, found {int(found[i])}: {_preview(line)}"
    return pa.array(codes, _STR), pa.array(reasons, _STR)


_TEXT_LINES_SCHEMA = pa.schema([pa.field("line", _STR), pa.field(_RAW, _STR), pa.field(_CODE, _STR), pa.field(_REASON, _STR)])


def _text_lines(block: bytes | OversizedLine, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> pa.RecordBatch:
    """One block as its lines: ``line`` (null where not UTF-8 or too long), raw text, code, reason."""
    if isinstance(block, OversizedLine):
        return oversized_batch(block, _TEXT_LINES_SCHEMA, max_line_bytes)
    lines = split_lines(block)
    text, bad_encoding = _decode(lines.raw)
    status = np.zeros(len(lines), np.int8)
    if bad_encoding is not None:
        status[bad_encoding] = _BAD_ENCODING
    text, oversized = _flag_oversized(block, lines, text, status, max_line_bytes)
    line = strip_line_end(text)
    if (status != _OK).any():
        line = pc.if_else(pa.array(status != _OK), pa.scalar(None, _STR), line)
    codes, reasons = _line_reasons(status, text, np.zeros(len(lines), np.int64), 0, "", oversized)
    return pa.RecordBatch.from_arrays([line, text, codes, reasons], schema=_TEXT_LINES_SCHEMA)


def _record_chunks(
    path: str | Path,
    has_header: bool,
    chunk_rows: int,
    names: list[str],
    parse: Callable[[bytes | OversizedLine], pa.RecordBatch],
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[RawChunk]:
    """Read blocks here, parse them in background threads (in order), re-cut into chunks of ``chunk_rows`` records.

    Parsing block *k+1* overlaps with the caller converting earlier chunks. Columns stay chunked
    (one piece per block): the conversion combines the field columns it reads, and the raw text
    is only ever filtered down to the rejected records. If reading fails part way (a truncated
    gzip stream), every complete line read before the failure is handed out first, then the
    :class:`SourceError` is raised.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    lines_read = 0
    stream = _open(path)
    blocks = _blocks(stream, has_header, _block_size(chunk_rows), path, lambda: lines_read, max_line_bytes)
    buffered: list[pa.RecordBatch] = []
    count = 0
    line = 1

    def chunk(table: pa.Table) -> RawChunk:
        codes = table.column(_CODE)
        has_rejects = codes.null_count < len(codes)
        return RawChunk(
            first_line=line,
            table=table.select(names),
            raw_records=table.column(_RAW),
            codes=codes.combine_chunks() if has_rejects else None,
            reasons=table.column(_REASON).combine_chunks() if has_rejects else None,
        )

    try:
        try:
            for batch in pipelined(blocks, parse):
                lines_read += batch.num_rows
                if not batch.num_rows:
                    continue
                buffered.append(batch)
                count += batch.num_rows
                while count >= chunk_rows:
                    table = pa.Table.from_batches(buffered)
                    yield chunk(table.slice(0, chunk_rows))
                    line += chunk_rows
                    rest = table.slice(chunk_rows)
                    buffered = rest.to_batches() if rest.num_rows else []
                    count = rest.num_rows
        except SourceError as exc:
            if count:  # the complete lines read before the failure
                yield chunk(pa.Table.from_batches(buffered))
            if isinstance(exc, _StreamError):  # every line read is counted by now
                raise SourceError(f"{path}: cannot read after data line {lines_read}: {exc.detail}") from None
            raise
        if count:
            yield chunk(pa.Table.from_batches(buffered))
    finally:
        blocks.close()
        stream.close()


def iter_csv_records(
    path: str | Path, fmt: CsvFormat, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[RawChunk]:
    """Stream a delimited event file as chunks of ``chunk_rows`` records (see the module docstring).

    File-level problems (no header, an unreadable or truncated file) raise :class:`SourceError`;
    bad lines never do: they come out with a reason code and their raw text. A line longer than
    ``max_line_bytes`` is one ``oversized_line`` record, skipped in bounded memory.
    """
    names = file_columns(path, fmt)
    if not names:
        raise SourceError(f"{path}: no column names for a file without a header")
    parser = _CsvBlockParser(fmt, names, max_line_bytes)
    yield from _record_chunks(path, fmt.has_header, chunk_rows, names, parser, max_line_bytes)


def iter_text_lines(
    path: str | Path, chunk_rows: int, has_header: bool = False, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[RawChunk]:
    """Stream a text file as chunks of its lines: one column ``line`` (null for lines that are
    not UTF-8 or longer than ``max_line_bytes``)."""
    if has_header:
        read_header(path, CsvFormat(delimiter="\x01", quoting=False))
    parse = functools.partial(_text_lines, max_line_bytes=max_line_bytes)
    yield from _record_chunks(path, has_header, chunk_rows, ["line"], parse, max_line_bytes)
