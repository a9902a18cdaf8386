"""The errors a source raises, and how their messages quote values.

Every message is one line naming the file (and, where known, the 1-based data line) and the
problem; a bad value is quoted up to :data:`VALUE_PREVIEW_CHARS` characters.
"""
from __future__ import annotations

#: How many characters of a bad value or line an error message quotes.
VALUE_PREVIEW_CHARS = 60


class SourceError(ValueError):
    """A source cannot be read; the message is one line naming the file (and line) and the problem."""


class InvalidRowError(SourceError):
    """A line of a delimited file has the wrong number of fields.

    ``line`` is its 1-based data line (``None`` if it could not be located); ``rows_emitted``
    how many rows before it the reader had already handed out as chunks.
    """

    def __init__(self, message: str, line: int | None, rows_emitted: int = 0):
        super().__init__(message)
        self.line = line
        self.rows_emitted = rows_emitted


def error_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name if it has none), for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
