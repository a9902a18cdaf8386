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

Modules: :mod:`.lines` (blocks, oversized lines, line splitting and decoding), :mod:`.header`
(the format, headers, dimension files) and :mod:`.records` (event files, record by record).
"""
from __future__ import annotations

from pipelines.sources.csvio.header import CsvFormat, file_columns, iter_csv_text, read_header
from pipelines.sources.csvio.lines import (
    DEFAULT_MAX_LINE_BYTES,
    MAX_HEADER_BYTES,
    OversizedLine,
    _blocks,  # noqa: F401  (private; tests drive it directly)
    line_pattern,
    split_lines,
    strip_line_end,
)
from pipelines.sources.csvio.records import (
    _CsvBlockParser,  # noqa: F401  (private; tests drive it directly)
    _text_lines,  # noqa: F401  (private; tests drive it directly)
    as_one_array,
    iter_csv_records,
    iter_text_lines,
    oversized_batch,
    oversized_message,
)

__all__ = [
    "DEFAULT_MAX_LINE_BYTES", "MAX_HEADER_BYTES", "CsvFormat", "OversizedLine", "as_one_array", "file_columns",
    "iter_csv_records", "iter_csv_text", "iter_text_lines", "line_pattern", "oversized_batch", "oversized_message",
    "read_header", "split_lines", "strip_line_end",
]  # fmt: skip
