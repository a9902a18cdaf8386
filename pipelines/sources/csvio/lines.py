"""Delimited text as bytes: blocks cut at line ends, oversized lines skipped in bounded memory,
lines split and decoded with NumPy."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.rejections import OVERSIZED_LINE_KEPT_BYTES, Reason
from pipelines.sections import IngestRules
from pipelines.sources.errors import VALUE_PREVIEW_CHARS, SourceError, error_line


def _open(path: str | Path) -> pa.NativeFile:
    """A byte stream of ``path``, gunzipped on the fly if it is gzipped."""
    try:
        return pa.input_stream(str(path), compression="detect")
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: cannot open: {error_line(exc)}") from None


def _block_size(chunk_rows: int) -> int:
    # Measured: 1 MiB blocks parse fastest (larger blocks are slower, threads do not help).
    return 1 << 20 if chunk_rows >= 4096 else 256 << 10


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
