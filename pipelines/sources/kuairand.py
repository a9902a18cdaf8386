"""KuaiRand (and the synthetic generator, which writes the same format).

Files in the source directory (plain or gzipped; a file and its ``.gz`` copy count once):

* ``log_*.csv[.gz]``: the interaction logs (``log_standard_*`` and ``log_random_*``), one
  impression per line, columns ``user_id, video_id, date, hourmin, time_ms, is_click, is_like,
  is_follow, is_comment, is_forward, is_hate, long_view, play_time_ms, duration_ms,
  profile_stay_time, comment_stay_time, is_profile_enter, is_rand, tab``;
* ``user_features*.csv[.gz]``: user attributes; ``video_features_basic*.csv[.gz]``: video attributes.

``event_ts`` comes from ``time_ms`` (epoch milliseconds, so UTC). ``date`` (yyyymmdd) and
``hourmin`` (hhmm, always a whole hour) are a local Asia/Shanghai hour bucket of the
impression; they are not derived from ``time_ms`` (in the Pure slice they differ from it by
-2 h .. +1 h) and are kept only in the ``record_key``.

Validation beyond the common checks: ``tab`` is a closed set (:data:`TAB_VALUES`, else
``unknown_enum_value``); with ingestion rules, every record needs a ``duration_ms`` (empty:
``missing_required_field``), and a negative one is ``nonpositive_duration``, but 0 is accepted:
picture posts have no duration (3,568 rows of the Pure slice), and they are real impressions.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sources.base import EventStream, SourceAdapter
from pipelines.sources.convert import EventMapping
from pipelines.sources.csvio import DEFAULT_MAX_LINE_BYTES, CsvFormat, read_header
from pipelines.sources.dimensions import finish_dimension, read_text_table
from pipelines.sources.errors import SourceError
from pipelines.sources.files import existing_path, match_files
from pipelines.sources.rules import REQUIRED_DURATION_ZERO_ALLOWED

LOG_PATTERNS = ["log_*.csv", "log_*.csv.gz"]
USER_PATTERNS = ["user_features*.csv", "user_features*.csv.gz"]
ITEM_PATTERNS = ["video_features_basic*.csv", "video_features_basic*.csv.gz"]

#: KuaiRand log column -> canonical flag.
FLAG_COLUMNS = {
    "is_click": "is_click",
    "is_like": "is_like",
    "is_follow": "is_follow",
    "is_comment": "is_comment",
    "is_forward": "is_forward",
    "is_hate": "is_hate",
    "is_profile_enter": "is_profile_enter",
    "long_view": "is_long_view",
    "is_rand": "is_rand",
}
REQUIRED_LOG_COLUMNS = ("user_id", "video_id", "time_ms")
#: The values of the ``tab`` column (the app tab of the impression): KuaiRand's 15 tabs, 0..14,
#: every one present in the Pure slice. Another value is ``unknown_enum_value``.
TAB_VALUES = tuple(str(i) for i in range(15))


class KuaiRandAdapter(SourceAdapter):
    """KuaiRand-Pure/1K/27K CSV files, and the synthetic source in the same format."""

    kind = "kuairand"
    source_zone = "Asia/Shanghai"
    #: Durations are required, but 0 is allowed (picture posts; see the module docstring).
    default_duration = REQUIRED_DURATION_ZERO_ALLOWED
    FORMAT = CsvFormat(delimiter=",", has_header=True, quoting=True)

    def event_files(self) -> list[str]:
        return self._files_or_error(LOG_PATTERNS, "KuaiRand log files")

    def mapping_for(self, header: list[str], file: str) -> EventMapping:
        """The event mapping for a log file with columns ``header`` (optional columns may be absent)."""
        missing = [c for c in REQUIRED_LOG_COLUMNS if c not in header]
        if missing:
            raise SourceError(
                f"{file}: not a KuaiRand log: columns {missing} are missing; the file has columns {header}"
            )
        present = set(header)
        return EventMapping(
            user_id="user_id",
            item_id="video_id",
            timestamp="time_ms",
            timestamp_unit="ms",
            time_zone="UTC",
            play_time_ms="play_time_ms" if "play_time_ms" in present else None,
            duration_ms="duration_ms" if "duration_ms" in present else None,
            flags={flag: col for col, flag in FLAG_COLUMNS.items() if col in present},
            enums={"tab": TAB_VALUES} if "tab" in present else {},
        )

    def event_stream(self, file: str, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> EventStream:
        existing_path(file, "event file")
        mapping = self.mapping_for(read_header(file, self.FORMAT), file)
        return self._csv_stream(file, self.FORMAT, mapping, chunk_rows, max_line_bytes)

    def _dimension_files(self, patterns: list[str]) -> list:
        return [self.check_dimension_file(f) for f in match_files(self.directory, patterns)]

    def read_users(self) -> pa.Table | None:
        files = self._dimension_files(USER_PATTERNS)
        if not files:
            return None
        tables = [
            finish_dimension(
                read_text_table(f, self.FORMAT), id_column="user_id", key="user_id", source=self.name, path=f
            )
            for f in files
        ]
        return pa.concat_tables(tables, promote_options="permissive")

    def read_items(self) -> pa.Table | None:
        files = self._dimension_files(ITEM_PATTERNS)
        if not files:
            return None
        tables = []
        for f in files:
            raw = read_text_table(f, self.FORMAT)
            table = finish_dimension(
                raw, id_column="video_id", key="item_id", source=self.name, path=f, keep_text=("tag",)
            )
            tables.append(_duration_ms(table))
        return pa.concat_tables(tables, promote_options="permissive")


def _duration_ms(table: pa.Table) -> pa.Table:
    """``video_duration`` (float milliseconds) -> ``duration_ms`` int64, null where not finite."""
    if "video_duration" not in table.column_names:
        return table
    i = table.column_names.index("video_duration")
    values = pc.cast(table.column(i), pa.float64())
    finite = pc.fill_null(pc.is_finite(values), False)
    ms = pc.cast(pc.round(pc.if_else(finite, values, pa.scalar(None, pa.float64()))), pa.int64(), safe=False)
    return table.set_column(i, "duration_ms", ms)
