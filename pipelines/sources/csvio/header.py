"""A delimited file's format and header, and dimension files read whole (:func:`iter_csv_text`)."""
from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv

from pipelines.sources.csvio.lines import MAX_HEADER_BYTES, _block_size, _first_end, _open
from pipelines.sources.errors import VALUE_PREVIEW_CHARS, InvalidRowError, SourceError, error_line
from pipelines.sources.files import rechunk


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
