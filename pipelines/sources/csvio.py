"""Streaming delimited text files (CSV, TSV, ``|``-separated, ...), plain or gzipped.

A file is opened with ``pa.input_stream(path, compression="detect")``, so ``.gz`` files need no
unpacking. Lines are 1-based data lines: the header and blank lines are not counted; a line
ends at ``\\n``, ``\\r\\n`` or ``\\r`` (as for pyarrow's CSV parser; values may not hold line breaks).

Event files: :func:`iter_csv_records`
-------------------------------------
Every line is a record and comes out, accepted or rejected, with its raw text. The file is read
in blocks of about 1 MiB cut at a line end; per block, vectorised:

1. the block is split into lines with NumPy (terminators removed, blank lines dropped), giving
   each line's raw text without a copy per line;
2. the lines are checked as UTF-8 at once; only a block that fails is decoded line by line, and
   its bad lines are ``invalid_encoding`` (raw text kept with ``\\xNN`` escapes);
3. with quoting, lines holding a quote are matched against the CSV grammar pyarrow applies
   (:func:`line_pattern`); a line that does not match (an unterminated or stray quote) would run
   into the next line and is ``unparseable_line``;
4. the other lines are parsed by ``pyarrow.csv.read_csv`` (every column text, empty fields null);
   a line with the wrong number of fields is reported by pyarrow's invalid-row handler with
   its row number and is ``wrong_column_count``.

Rejected lines get null fields, a reason code and a message; chunks are re-cut to exactly
``chunk_rows`` records (:class:`~pipelines.sources.files.RawChunk`). If pyarrow's rows ever do
not line up with the lines (a grammar case the pattern misses), the block is parsed line by
line instead: slower, same result.

Dimension files: :func:`iter_csv_text`
--------------------------------------
``pyarrow.csv.open_csv`` over the whole file; a line with the wrong number of fields raises
:class:`InvalidRowError` naming it.
"""
from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from features.rejections import OVERSIZED_LINE_KEPT_BYTES, Reason
from pipelines.settings import IngestRules
from pipelines.sources.errors import VALUE_PREVIEW_CHARS, InvalidRowError, SourceError, error_line
from pipelines.sources.files import RawChunk, pipelined, rechunk


@dataclass(frozen=True)
class CsvFormat:
    """How a delimited text file is laid out."""

    delimiter: str = ","
    has_header: bool = True
    quoting: bool = True
    encoding: str = "utf8"
    column_names: tuple[str, ...] | None = None  # for files without a header

    def parse_options(self, invalid_row_handler=None) -> pcsv.ParseOptions:
        """pyarrow parse options for this layout (:class:`SourceError` for a bad delimiter)."""
        if len(self.delimiter) != 1:
            raise SourceError(f"delimiter {self.delimiter!r} must be one character")
        return pcsv.ParseOptions(
            delimiter=self.delimiter,
            quote_char='"' if self.quoting else False,
            double_quote=self.quoting,
            newlines_in_values=False,
            invalid_row_handler=invalid_row_handler,
        )


def _open(path: str | Path) -> pa.NativeFile:
    """A byte stream of ``path``, gunzipped on the fly if it is gzipped."""
    try:
        return pa.input_stream(str(path), compression="detect")
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: cannot open: {error_line(exc)}") from None


def read_header(path: str | Path, fmt: CsvFormat) -> list[str]:
    """The column names in the first line of ``path`` (``SourceError`` if it is missing or unreadable)."""
    parts: list[bytes] = []
    size = 0
    try:
        with _open(path) as stream:
            while size <= MAX_HEADER_BYTES:
                block = stream.read(1 << 16)
                if not block:
                    break
                parts.append(bytes(block))
                size += len(block)
                if _first_end(parts[-1]) >= 0:
                    break
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: cannot read the header: {error_line(exc)}") from None
    buf = b"".join(parts)
    if _first_end(buf) < 0 and size > MAX_HEADER_BYTES:
        raise SourceError(f"{path}: no header line within the first {MAX_HEADER_BYTES >> 20} MiB")
    if buf.startswith(b"\xef\xbb\xbf"):
        buf = buf[3:]
    line = re.split(b"[\r\n]", buf, maxsplit=1)[0]  # a line ends at \n, \r\n or \r
    if not line.strip():
        raise SourceError(f"{path}: no header line (the file is empty or starts with a blank line)")
    try:
        header = pcsv.read_csv(
            pa.BufferReader(line + b"\n"),
            read_options=pcsv.ReadOptions(encoding=fmt.encoding, autogenerate_column_names=False),
            parse_options=fmt.parse_options(),
        )
        names = header.column_names
    except (pa.ArrowException, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: unreadable header: {error_line(exc)}") from None
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SourceError(f"{path}: header repeats column names {duplicates}")
    return names


def file_columns(path: str | Path, fmt: CsvFormat) -> list[str]:
    """The column names of a delimited file: its header, or ``fmt.column_names`` without one."""
    return read_header(path, fmt) if fmt.has_header else list(fmt.column_names or ())


def _locate_line(path: str | Path, text: str, fmt: CsvFormat) -> int | None:
    """The 1-based data line (header and blank lines not counted) whose text is ``text``; error path only."""
    try:
        with _open(path) as stream, io.TextIOWrapper(stream, encoding=fmt.encoding, errors="replace", newline="") as f:
            data_line = 0
            header_pending = fmt.has_header
            for physical in f:
                stripped = physical.rstrip("\r\n")
                if not stripped:
                    continue
                if header_pending:
                    header_pending = False
                    continue
                data_line += 1
                if stripped == text:
                    return data_line
    except (OSError, pa.ArrowException):
        return None
    return None


def _block_size(chunk_rows: int) -> int:
    # Measured: 1 MiB blocks parse fastest (larger blocks are slower, threads do not help).
    return 1 << 20 if chunk_rows >= 4096 else 256 << 10


def iter_csv_text(
    path: str | Path, fmt: CsvFormat, chunk_rows: int, skip_invalid: bool = False
) -> Iterator[tuple[int, pa.Table]]:
    """Stream a delimited file as (first data line, table of text columns) chunks.

    Every column is read as text; empty fields are null. Blank lines are skipped and not
    counted. A row with the wrong number of fields raises :class:`InvalidRowError` with its
    line, or is dropped with ``skip_invalid`` (later lines are then numbered one lower).
    """
    names = file_columns(path, fmt)
    if not names:
        raise SourceError(f"{path}: no column names for a file without a header")
    invalid: list = []

    def on_invalid(row) -> str:
        if skip_invalid:
            return "skip"
        invalid.append(row)
        return "error"

    try:
        stream = _open(path)
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(
                column_names=names,
                skip_rows=1 if fmt.has_header else 0,
                block_size=_block_size(chunk_rows),
                encoding=fmt.encoding,
            ),
            parse_options=fmt.parse_options(on_invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        )
    except SourceError:
        stream.close()
        raise
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        stream.close()
        if invalid:
            _raise_invalid_row(path, fmt, invalid[0], len(names))
        raise SourceError(f"{path}: cannot read: {error_line(exc)}") from None

    line = 1
    read_rows = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal read_rows
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                if invalid:
                    _raise_invalid_row(path, fmt, invalid[0], len(names))
                raise SourceError(
                    f"{path}: cannot read after data line {read_rows}: {error_line(exc)}"
                ) from None
            read_rows += batch.num_rows
            yield batch

    try:
        for table in rechunk(batches(), chunk_rows):
            yield line, table
            line += table.num_rows
    except InvalidRowError as err:
        err.rows_emitted = line - 1
        raise
    finally:
        stream.close()


def _raise_invalid_row(path, fmt: CsvFormat, row, expected: int) -> None:
    where = _locate_line(path, row.text, fmt)
    at = f"line {where}" if where is not None else "a line"
    preview = row.text[:VALUE_PREVIEW_CHARS].replace("\r", "\\r")
    raise InvalidRowError(
        f"{path}: {at}: expected {expected} fields, found {row.actual_columns}: {preview!r}", where
    )


# ---------------------------------------------------------------------------------------------
# Event files: every line a record, rejected lines kept with their raw text
# ---------------------------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
_STR = pa.string()
#: Internal columns of a parsed block, after the file's columns.
_RAW, _CODE, _REASON = "\x00raw_record", "\x00reason_code", "\x00reason"
_OK, _BAD_ENCODING, _UNPARSEABLE, _WRONG_COUNT, _OVERSIZED = 0, 1, 2, 3, 4
_CODE_OF = {
    _OVERSIZED: Reason.OVERSIZED_LINE.value,
    _BAD_ENCODING: Reason.INVALID_ENCODING.value,
    _UNPARSEABLE: Reason.UNPARSEABLE_LINE.value,
    _WRONG_COUNT: Reason.WRONG_COLUMN_COUNT.value,
}


def _re_char(c: str) -> str:
    """``c`` escaped for use inside and outside an RE2 character class."""
    if c.isalnum():
        return c
    if not c.isprintable() or ord(c) > 126:
        return f"\\x{{{ord(c):x}}}"
    return "\\" + c


def line_pattern(delimiter: str, quote: str = '"') -> str:
    """An RE2 pattern matching exactly the lines pyarrow's CSV parser splits within the line.

    A field is empty, unquoted (not starting with a quote; quotes inside are literal), or quoted:
    a quote, then characters or doubled quotes, a closing quote, then optionally unquoted text
    not starting with a quote (pyarrow appends it). A line that does not match has a quoted field
    that does not close, and pyarrow would read on into the next line.
    """
    d, q = _re_char(delimiter), _re_char(quote)
    field = f"(?:{q}(?:[^{q}]|{q}{q})*{q}(?:[^{d}{q}][^{d}]*)?|[^{q}{d}][^{d}]*|)"
    return f"^{field}(?:{d}{field})*$"


def _preview(text: str) -> str:
    return repr(text[:VALUE_PREVIEW_CHARS])


#: The default of ``rules.max_line_bytes`` (the reader's bound when no rules are given).
DEFAULT_MAX_LINE_BYTES: int = IngestRules.model_fields["max_line_bytes"].default
#: The longest header line read (a header is needed whole to name the columns).
MAX_HEADER_BYTES = 16 << 20


@dataclass(frozen=True)
class OversizedLine:
    """A data line longer than ``max_line_bytes``, skipped by :func:`_blocks` without holding it.

    ``length`` is its size in bytes without the line end, ``sha256`` the hex digest of those
    bytes, ``head`` its first :data:`~features.rejections.OVERSIZED_LINE_KEPT_BYTES` bytes.
    """

    length: int
    sha256: str
    head: bytes


class _Skipper:
    """Hashes and counts the bytes of a line being skipped, keeping only its first bytes."""

    def __init__(self, parts: list[bytes]):
        self.hash = hashlib.sha256()
        self.length = 0
        self.head = b""
        for part in parts:
            self.update(part)

    def update(self, data) -> None:
        if len(self.head) < OVERSIZED_LINE_KEPT_BYTES:
            self.head += bytes(data[: OVERSIZED_LINE_KEPT_BYTES - len(self.head)])
        self.hash.update(data)
        self.length += len(data)

    def line(self) -> OversizedLine:
        return OversizedLine(self.length, self.hash.hexdigest(), self.head)


def _first_end(data: bytes) -> int:
    r"""The index of the first ``\n`` or ``\r`` in ``data``, or -1."""
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return min(ends) if ends else -1


def _last_end(data: bytes) -> int:
    return max(data.rfind(b"\n"), data.rfind(b"\r"))


class _StreamError(SourceError):
    """Reading the byte stream failed part way (``detail``: the cause); the reader that counted
    the lines handed out names the line in the message it raises instead."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


def _reads(stream, block_size: int, path, lines_so_far: Callable[[], int]) -> Iterator[bytes]:
    """The file's bytes in reads of ``block_size`` (never empty), a leading UTF-8 BOM removed."""
    started = False
    head = b""
    while True:
        try:
            data = stream.read(block_size)
        except (OSError, pa.ArrowException) as exc:
            detail = error_line(exc)
            raise _StreamError(f"{path}: cannot read after data line {lines_so_far()}: {detail}", detail) from None
        eof = not data
        if not started:
            head += bytes(data)
            if len(head) < len(_BOM) and not eof:
                continue
            started = True
            data = head[len(_BOM):] if head.startswith(_BOM) else head
        if data:
            yield bytes(data)
        if eof:
            return


def _blocks(
    stream,
    skip_header: bool,
    block_size: int,
    path,
    lines_so_far: Callable[[], int],
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[bytes | OversizedLine]:
    """The bytes of the data lines, in blocks that end at a line end (the last at the file end),
    and an :class:`OversizedLine` in place of every line that would grow past ``max_line_bytes``.

    The header (the first line) and a UTF-8 BOM are removed. A ``\\r\\n`` cut between two blocks
    leaves an empty line, which is dropped like any blank line. Memory stays bounded by
    ``max_line_bytes`` plus a block, and every byte is copied a bounded number of times: a line
    that has not ended within ``max_line_bytes`` is hashed and dropped as it is read, to its line
    end (a long line that does end inside one block is judged by the block parser). Linear in the
    file size, gzipped or not.
    """
    pending: list[bytes] = []  # the start of a line that has not ended yet
    pending_len = 0
    skipping: _Skipper | None = None  # the line being skipped (too long, or the header)
    skipping_header = skip_header
    if skip_header:
        skipping = _Skipper([])
    for data in _reads(stream, block_size, path, lines_so_far):
        if skipping is not None:
            end = _first_end(data)
            if end < 0:
                if not skipping_header:
                    skipping.update(data)
                continue
            if skipping_header:
                skipping_header = False
            else:
                skipping.update(data[:end])
                yield skipping.line()
            skipping = None
            data = data[end:]  # starts with the line end: a blank line, dropped
        cut = _last_end(data)
        if cut < 0:  # no line end: the pending line goes on
            pending.append(data)
            pending_len += len(data)
            if pending_len > max_line_bytes:
                skipping = _Skipper(pending)
                pending, pending_len = [], 0
            continue
        if pending:
            end = _first_end(data)
            if pending_len + end > max_line_bytes:
                line = _Skipper(pending)
                line.update(data[:end])
                yield line.line()
                pending, pending_len = [], 0
                data = data[end:]
                cut -= end
        block = b"".join([*pending, data[: cut + 1]]) if pending else data[: cut + 1]
        rest = data[cut + 1:]
        pending, pending_len = ([rest], len(rest)) if rest else ([], 0)
        yield block
    if skipping is not None:
        if not skipping_header:
            yield skipping.line()
    elif pending:
        yield b"".join(pending)


@dataclass(frozen=True)
class _Lines:
    """The non-blank lines of a block: raw bytes (binary array) and their byte spans in the block.

    The raw bytes of a line may end with its ``\\n`` (the fast path keeps the block's buffer
    as is); :func:`strip_line_end` removes it where a line's text is shown.
    """

    raw: pa.Array
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.raw)


def strip_line_end(text: pa.Array) -> pa.Array:
    """Line texts without their line end."""
    return pc.utf8_rtrim(text, characters="\r\n")


def split_lines(block: bytes) -> _Lines:
    """The non-blank lines of ``block`` (split at ``\\n`` and ``\\r``), vectorised.

    Without ``\\r`` in the block (the usual case) the lines are views of the block's bytes,
    each with its ``\\n``; otherwise the terminators are removed into a compact copy.
    """
    data = np.frombuffer(block, np.uint8)
    if block.find(b"\r") < 0:
        pos = np.flatnonzero(data == 10)
        starts = np.concatenate(([0], pos + 1))
        ends = np.concatenate((pos, [len(data)]))  # exclusive, without the terminator
        stops = np.concatenate((pos + 1, [len(data)]))  # exclusive, with it
        keep = ends > starts
        if not keep.all():
            starts, ends, stops = starts[keep], ends[keep], stops[keep]
            if len(starts) and not np.array_equal(starts[1:], stops[:-1]):
                return _split_compact(data)  # blank lines in the middle: no contiguous view
        if len(starts) == 0:
            return _Lines(pa.array([], pa.binary()), starts, ends)
        offsets = np.concatenate(([starts[0]], stops)).astype(np.int64)
        if offsets[-1] < 2**31:
            raw_type, offsets = pa.binary(), offsets.astype(np.int32)
        else:
            raw_type = pa.large_binary()
        raw = pa.Array.from_buffers(raw_type, len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(block)])
        return _Lines(raw, starts, ends)
    return _split_compact(data)


def _split_compact(data: np.ndarray) -> _Lines:
    term = (data == 10) | (data == 13)
    pos = np.flatnonzero(term)
    seg_start = np.concatenate(([0], pos + 1))
    seg_end = np.concatenate((pos, [len(data)]))
    keep = seg_end > seg_start
    starts, ends = seg_start[keep], seg_end[keep]
    compact = data[~term]  # the bytes of the non-blank lines, back to back
    offsets = np.concatenate(([0], np.cumsum(ends - starts)))
    if len(compact) < 2**31:
        raw_type, offsets = pa.binary(), offsets.astype(np.int32)
    else:
        raw_type, offsets = pa.large_binary(), offsets.astype(np.int64)
    raw = pa.Array.from_buffers(raw_type, len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(compact)])
    return _Lines(raw, starts, ends)


def _decode(raw: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """The lines as text, and which are not UTF-8 (``None`` when all are; then no copy is made).

    Invalid lines are decoded with ``errors="backslashreplace"`` so no byte is lost.
    """
    try:
        text = raw.cast(_STR if pa.types.is_binary(raw.type) else pa.large_string())
        return (text if text.type == _STR else text.cast(_STR)), None
    except pa.ArrowInvalid:
        pass
    texts, bad = [], []
    for b in raw.to_pylist():  # rare: only blocks holding a bad line
        try:
            texts.append(b.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            texts.append(b.decode("utf-8", errors="backslashreplace"))
            bad.append(True)
    return pa.array(texts, _STR), np.array(bad, dtype=bool)


def _without_lines(block: bytes, lines: _Lines, drop: np.ndarray) -> bytes:
    """``block`` with the bytes of the lines in ``drop`` turned into line ends (blank lines)."""
    data = np.frombuffer(block, np.uint8).copy()
    marks = np.zeros(len(data) + 1, np.int32)
    np.add.at(marks, lines.starts[drop], 1)
    np.add.at(marks, lines.ends[drop], -1)
    data[np.cumsum(marks[:-1]) > 0] = 10
    return data.tobytes()


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
