"""The dialogue-log source adapter: JSON Lines files (``*.jsonl``, ``*.jsonl.gz``), one turn a line.

:func:`read_file` yields, for every line of one file, a :class:`~features.dialogues.Turn` or a
:class:`~features.dialogues.Rejected` (the rules of :mod:`features.dialogues.records`), in file
order, reading in bounded memory: a line longer than ``rules.max_line_bytes`` is skipped to its
end while it is hashed (``oversized_line``). A file that cannot be opened or read to its end
(0 bytes, a corrupt or truncated gzip stream, an I/O error) is one ``unreadable_file`` letter (at
line 0, or at the line where reading stopped, after the lines read before it); a symbolic link
is one ``symlink_refused`` letter unless ``follow_symlinks``. Blank lines are not records.
"""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from features.dialogues.records import Rejected, Turn, parse_record
from features.rejections import OVERSIZED_LINE_KEPT_BYTES, Reason
from features.timeutil import utc_midnight

PATTERNS = ("*.jsonl", "*.jsonl.gz")
_READ = 1 << 16


@dataclass(frozen=True)
class Limits:
    """The ingestion rules as the dialogue reader applies them."""

    max_line_bytes: int
    max_field_chars: int
    min_ts: dt.datetime
    max_ts: dt.datetime | None
    latest_ts: dt.datetime

    @classmethod
    def from_rules(cls, rules, now: dt.datetime | None = None) -> "Limits":
        now = now or dt.datetime.now(dt.timezone.utc)
        return cls(
            max_line_bytes=rules.max_line_bytes,
            max_field_chars=rules.max_field_chars,
            min_ts=utc_midnight(rules.min_event_ts),
            max_ts=utc_midnight(rules.max_event_ts) if rules.max_event_ts is not None else None,
            latest_ts=now + dt.timedelta(seconds=rules.future_tolerance_s),
        )


def dialogue_files(folder: str | Path) -> list[str]:
    """The dialogue files of ``folder`` (sorted; links included, so they can be refused)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"dialogue source folder not found: {root} (dialogues.path)")
    found = {str(p) for pattern in PATTERNS for p in root.glob(pattern)}
    return sorted(found)


def _open(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _lines(fh, limit: int) -> Iterator[tuple[bytes, int | None, str | None]]:
    """(line without its end, full length if oversized else None, sha256 hex if oversized)."""
    while True:
        chunk = fh.readline(limit + 1)
        if not chunk:
            return
        if chunk.endswith(b"\n") or len(chunk) <= limit:
            yield chunk.rstrip(b"\r\n") if chunk.endswith(b"\n") else chunk.rstrip(b"\r"), None, None
            continue
        digest, kept, size = hashlib.sha256(chunk), chunk[:OVERSIZED_LINE_KEPT_BYTES], len(chunk)
        while not chunk.endswith(b"\n"):
            chunk = fh.readline(_READ)
            if not chunk:
                break
            body = chunk.rstrip(b"\n")
            digest.update(body)
            size += len(body)
        yield kept, size, digest.hexdigest()


def read_file(path: str, limits: Limits, follow_symlinks: bool = False) -> Iterator[Turn | Rejected]:
    """Every record of one file, accepted or rejected (module docstring)."""
    name = os.path.basename(path)
    if os.path.islink(path) and not follow_symlinks:
        yield Rejected(Reason.SYMLINK_REFUSED.value, f"{name}: a symbolic link, not read (ingest.follow_symlinks is false)", name, 0, "")
        return
    try:
        if os.path.getsize(path) == 0:
            yield Rejected(Reason.UNREADABLE_FILE.value, f"{name}: the file is empty (0 bytes)", name, 0, "")
            return
        fh = _open(path)
    except OSError as exc:
        yield Rejected(Reason.UNREADABLE_FILE.value, f"{name}: cannot open: {exc}", name, 0, "")
        return
    line_no = 0
    try:
        with fh:
            for raw, oversized, digest in _lines(fh, limits.max_line_bytes):
                line_no += 1
                if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if oversized is not None:
                    yield Rejected(Reason.OVERSIZED_LINE.value,
                                   f"line of {oversized:,} bytes > rules.max_line_bytes {limits.max_line_bytes:,} (sha256 {digest})",
                                   name, line_no, raw.decode("utf-8", "backslashreplace"))
                    continue
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield Rejected(Reason.INVALID_ENCODING.value, f"not UTF-8 at byte {exc.start}", name, line_no,
                                   raw.decode("utf-8", "backslashreplace"))
                    continue
                yield parse_record(text, max_field_chars=limits.max_field_chars, min_ts=limits.min_ts, max_ts=limits.max_ts,
                                   latest_ts=limits.latest_ts, source_file=name, source_line=line_no)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        yield Rejected(Reason.UNREADABLE_FILE.value, f"{name}: cannot read after line {line_no}: {exc}", name, line_no, "")
