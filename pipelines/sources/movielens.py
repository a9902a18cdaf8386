"""MovieLens ratings, in RecBole's atomic files or in GroupLens's own layouts.

Layouts (looked for in this order in the source directory; the first one found is read):

=============  =================================================  ====================  =====================
layout         events                                             users                 items
=============  =================================================  ====================  =====================
RecBole        ``*.inter`` (tab, typed header ``user_id:token``)  ``*.user``            ``*.item``
ML-100K        ``u.data`` (tab, no header)                        ``u.user`` (``|``)    ``u.item`` (``|``)
ML-1M / 10M    ``ratings.dat`` (``::``, no header)                ``users.dat`` (1M)    ``movies.dat``
ML-20M/latest  ``ratings.csv`` (comma, header)                    none                  ``movies.csv``
=============  =================================================  ====================  =====================

Every file may also be gzipped (``.gz``). Timestamps are Unix seconds (UTC); ratings keep the
MovieLens scale (1..5, halves in the later data sets).

Users and items are normalised to the same columns whatever the layout:
``users``: user_id, source, age (int64), gender, occupation, zip_code;
``items``: item_id, source, title (without the trailing ``(year)``), release_year (int64),
genres (list of strings). RecBole files may carry further columns; they follow, typed by
their header (``token`` text, ``float`` float64, ``token_seq`` list of text, ``float_seq``
list of float64).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.events import ID_SEPARATOR
from features.rejections import Reason
from pipelines.sources.base import EventStream, SourceAdapter
from pipelines.sources.columns import FLOAT_TEXT, INT_TEXT, as_array, constant_strings, is_missing
from pipelines.sources.convert import EventMapping
from pipelines.sources.csvio import DEFAULT_MAX_LINE_BYTES, CsvFormat, iter_text_lines, read_header
from pipelines.sources.dimensions import read_text_table
from pipelines.sources.errors import SourceError
from pipelines.sources.files import RawChunk, existing_path, match_files, strip_gz

RECBOLE = "recbole"
UDATA = "u.data"
DAT = "ratings.dat"
CSV = "ratings.csv"

#: Event file globs per layout, in the order layouts are looked for.
LAYOUT_PATTERNS = {
    RECBOLE: ["*.inter", "*.inter.gz"],
    UDATA: ["u.data", "u.data.gz"],
    DAT: ["ratings.dat", "ratings.dat.gz"],
    CSV: ["ratings.csv", "ratings.csv.gz"],
}

#: The 19 genre flags at the end of a u.item line (GroupLens ``u.genre``).
U_ITEM_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

_LINE_FORMAT = CsvFormat(delimiter="\x01", has_header=False, quoting=False, column_names=("line",))
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>[0-9]{4})\)\s*$"
_LIST_STR = pa.list_(pa.string())


def layout_of(file: str | Path) -> str:
    """The layout of an event file, from its name."""
    name = strip_gz(Path(file).name)
    if name.endswith(".inter"):
        return RECBOLE
    if name.endswith((".data", ".base", ".test")):
        return UDATA
    if name.endswith(".dat"):
        return DAT
    if name.endswith(".csv"):
        return CSV
    raise SourceError(f"{file}: not a MovieLens ratings file (*.inter, u.data, ratings.dat, ratings.csv)")


class MovieLensAdapter(SourceAdapter):
    """MovieLens in RecBole atomic files or GroupLens's u.data / ratings.dat / ratings.csv."""

    kind = "movielens"
    source_zone = "UTC"

    def event_files(self) -> list[str]:
        p = existing_path(self.path)
        if p.is_file():
            layout_of(p)
            return [str(p)]
        for patterns in LAYOUT_PATTERNS.values():
            files = match_files(p, patterns)
            if files:
                return [str(f) for f in files]
        wanted = ", ".join(x for pats in LAYOUT_PATTERNS.values() for x in pats if not x.endswith(".gz"))
        raise SourceError(f"{p}: no MovieLens ratings files ({wanted}, optionally .gz) in this directory")

    def layout(self) -> str:
        return layout_of(self.event_files()[0])

    # Events ---------------------------------------------------------------------------------

    def event_stream(self, file: str, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> EventStream:
        existing_path(file, "event file")
        layout = layout_of(file)
        if layout == RECBOLE:
            fmt = CsvFormat(delimiter="\t", has_header=True, quoting=False)
            names = {n.split(":", 1)[0]: n for n in read_header(file, fmt)}
            missing = [c for c in ("user_id", "item_id", "timestamp") if c not in names]
            if missing:
                raise SourceError(f"{file}: RecBole columns {missing} are missing; the header is {list(names.values())}")
            mapping = EventMapping(
                user_id=names["user_id"], item_id=names["item_id"], timestamp=names["timestamp"],
                timestamp_unit="s", rating=names.get("rating"),
            )  # fmt: skip
            return self._csv_stream(file, fmt, mapping, chunk_rows, max_line_bytes)
        if layout == UDATA:
            fmt = CsvFormat(
                delimiter="\t", has_header=False, quoting=False,
                column_names=("user_id", "item_id", "rating", "timestamp"),
            )  # fmt: skip
            mapping = EventMapping("user_id", "item_id", "timestamp", timestamp_unit="s", rating="rating")
            return self._csv_stream(file, fmt, mapping, chunk_rows, max_line_bytes)
        if layout == CSV:
            fmt = CsvFormat(delimiter=",", has_header=True, quoting=True)
            mapping = EventMapping("userId", "movieId", "timestamp", timestamp_unit="s", rating="rating")
            return self._csv_stream(file, fmt, mapping, chunk_rows, max_line_bytes)
        return self._dat_stream(file, chunk_rows, max_line_bytes)

    def _dat_stream(self, file: str, chunk_rows: int, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> EventStream:
        """``UserID::MovieID::Rating::Timestamp`` lines, split (vectorised) in the conversion threads."""
        names = ("UserID", "MovieID", "Rating", "Timestamp")
        mapping = EventMapping("UserID", "MovieID", "Timestamp", timestamp_unit="s", rating="Rating")

        def prepare(raw: RawChunk) -> RawChunk:
            lines = raw.table.column("line").combine_chunks()
            fields, reasons = split_double_colon(lines, len(names))
            keys = pc.replace_substring(lines, "::", ID_SEPARATOR)  # the raw fields joined with \x1f
            codes = raw.codes
            if reasons is not None:
                wrong = pc.if_else(pc.is_valid(reasons), Reason.WRONG_COLUMN_COUNT.value, pa.scalar(None, pa.string()))
                codes = wrong if codes is None else pc.coalesce(codes, wrong)
                reasons = reasons if raw.reasons is None else pc.coalesce(raw.reasons, reasons)
            else:
                reasons = raw.reasons
            table = pa.Table.from_arrays(fields, names=list(names))
            return RawChunk(raw.first_line, table, raw_records=raw.raw_records, codes=codes, reasons=reasons, keys=keys)

        return EventStream(mapping, iter_text_lines(file, chunk_rows, max_line_bytes=max_line_bytes), prepare)

    # Users and items -------------------------------------------------------------------------

    def _dimension_file(self, patterns: list[str]) -> Path | None:
        files = match_files(self.directory, patterns)
        if not files:
            return None
        if len(files) > 1:
            # Several RecBole data sets in one folder: take the one named like the ratings.
            stem = Path(self.event_files()[0]).name.split(".", 1)[0]
            named = [f for f in files if f.name.split(".", 1)[0] == stem]
            files = named or files
        return self.check_dimension_file(files[0])

    def read_users(self) -> pa.Table | None:
        layout = self.layout()
        if layout == RECBOLE:
            f = self._dimension_file(["*.user", "*.user.gz"])
            return None if f is None else self._recbole_dimension(f, "user_id")
        if layout == UDATA:
            f = self._dimension_file(["u.user", "u.user.gz"])
            if f is None:
                return None
            fmt = CsvFormat("|", has_header=False, quoting=False,
                            column_names=("user_id", "age", "gender", "occupation", "zip_code"))  # fmt: skip
            return _users(read_text_table(f, fmt), self.name, f)
        if layout == DAT:
            f = self._dimension_file(["users.dat", "users.dat.gz"])
            if f is None:
                return None
            t = _read_dat_table(f, ("user_id", "gender", "age", "occupation", "zip_code"))
            return _users(t, self.name, f)
        return None

    def read_items(self) -> pa.Table | None:
        layout = self.layout()
        if layout == RECBOLE:
            f = self._dimension_file(["*.item", "*.item.gz"])
            return None if f is None else self._recbole_dimension(f, "item_id")
        if layout == UDATA:
            f = self._dimension_file(["u.item", "u.item.gz"])
            if f is None:
                return None
            names = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *U_ITEM_GENRES)
            t = read_text_table(f, CsvFormat("|", has_header=False, quoting=False, column_names=names))
            genres = _genres_from_flags(t)
            return _items(t.column("item_id"), t.column("title"), genres, self.name, f,
                          fallback_year=pc.utf8_slice_codeunits(t.column("release_date"), -4, 2**31 - 1))  # fmt: skip
        if layout == DAT:
            f = self._dimension_file(["movies.dat", "movies.dat.gz"])
            if f is None:
                return None
            t = _read_dat_table(f, ("item_id", "title", "genres"))
            return _items(t.column("item_id"), t.column("title"), _split_genres(t.column("genres"), "|"), self.name, f)
        f = self._dimension_file(["movies.csv", "movies.csv.gz"])
        if f is None:
            return None
        t = read_text_table(f, CsvFormat(",", has_header=True, quoting=True))
        if not {"movieId", "title", "genres"} <= set(t.column_names):
            raise SourceError(f"{f}: expected columns movieId, title, genres; found {t.column_names}")
        return _items(t.column("movieId"), t.column("title"), _split_genres(t.column("genres"), "|"), self.name, f)

    def _recbole_dimension(self, f: Path, key: str) -> pa.Table:
        t = read_text_table(f, CsvFormat("\t", has_header=True, quoting=False))
        typed = {}
        for col in t.column_names:
            name, _, kind = col.partition(":")
            typed[name] = (kind, t.column(col).combine_chunks())
        if key not in typed:
            raise SourceError(f"{f}: RecBole column {key!r} is missing; the header is {t.column_names}")
        if key == "user_id":
            return _users(
                pa.table({n: v for n, (_, v) in typed.items()}), self.name, f,
                extra={n: _recbole_typed(k, v) for n, (k, v) in typed.items()
                       if n not in ("user_id", "age", "gender", "occupation", "zip_code")},
            )  # fmt: skip
        title = typed.get("movie_title", typed.get("title", ("token", pa.nulls(t.num_rows, pa.string()))))[1]
        genres_raw = typed.get("class", typed.get("genre", typed.get("genres")))
        genres = (
            _split_genres(genres_raw[1], " ") if genres_raw is not None else pa.nulls(t.num_rows, _LIST_STR)
        )
        year = typed.get("release_year", ("token", pa.nulls(t.num_rows, pa.string())))[1]
        used = {"item_id", "movie_title", "title", "class", "genre", "genres", "release_year"}
        extra = {n: _recbole_typed(k, v) for n, (k, v) in typed.items() if n not in used}
        return _items(typed["item_id"][1], title, genres, self.name, f, year=year, extra=extra)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def split_double_colon(lines: pa.ChunkedArray | pa.Array, expected: int) -> tuple[list[pa.Array], pa.Array | None]:
    """Split ``a::b::c`` lines into ``expected`` text columns (vectorised).

    Returns the columns (null where a line has the wrong number of fields) and, per line, the
    reason it is bad (``None`` when every line is fine).
    """
    lines = as_array(lines)
    parts = pc.split_pattern(lines, "::")
    counts = pc.list_value_length(parts)
    ok = pc.fill_null(pc.equal(counts, expected), False)
    reasons = None
    if not pc.all(ok).as_py():
        parts = pc.if_else(ok, parts, pa.scalar(None, parts.type))
        reasons = pc.if_else(
            ok,
            pa.scalar(None, pa.string()),
            pc.binary_join_element_wise(
                f"expected {expected} '::'-separated fields, found ",
                pc.cast(pc.fill_null(counts, 0), pa.string()),
                "",
            ),
        )
    columns = []
    for i in range(expected):
        col = pc.list_element(parts, i)
        columns.append(pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col))
    return columns, reasons


def _read_dat_table(f: Path, names: tuple[str, ...]) -> pa.Table:
    t = read_text_table(f, _LINE_FORMAT)
    fields, reasons = split_double_colon(t.column("line"), len(names))
    if reasons is not None:
        bad = pc.index(pc.is_valid(reasons), True).as_py()
        raise SourceError(f"{f}: line {bad + 1}: {reasons[bad].as_py()}")
    return pa.Table.from_arrays(fields, names=list(names))


def _to_int_lenient(arr: pa.Array) -> pa.Array:
    """Text to int64, null where it is not an integer (MovieLens has 'unkonwn' years)."""
    text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    ok = pc.match_substring_regex(text, INT_TEXT)
    return pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.int64())


def _recbole_typed(kind: str, arr: pa.Array) -> pa.Array:
    if kind == "float":
        text = pc.utf8_trim_whitespace(arr)
        ok = pc.match_substring_regex(text, FLOAT_TEXT)
        return pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.float64())
    if kind == "token_seq":
        return _split_genres(arr, " ")
    if kind == "float_seq":
        return pc.cast(_split_genres(arr, " "), pa.list_(pa.float64()))
    return arr


def _users(t: pa.Table, source: str, f: Path, extra: dict[str, pa.Array] | None = None) -> pa.Table:
    n = t.num_rows
    ids = as_array(t.column("user_id"))
    _check_ids(ids, f, "user_id")

    def text(name: str) -> pa.Array:
        return as_array(t.column(name)) if name in t.column_names else pa.nulls(n, pa.string())

    cols = {
        "user_id": ids,
        "source": constant_strings(source, n),
        "age": _to_int_lenient(text("age")),
        "gender": text("gender"),
        "occupation": text("occupation"),
        "zip_code": text("zip_code"),
    }
    cols.update(extra or {})
    return pa.table(cols)


def _items(
    ids, titles, genres, source: str, f: Path, year=None, fallback_year=None, extra: dict[str, pa.Array] | None = None
) -> pa.Table:
    ids, titles = as_array(ids), as_array(titles)
    _check_ids(ids, f, "item_id")
    n = len(ids)
    parsed = pc.extract_regex(titles, _TITLE_YEAR)
    matched = pc.is_valid(parsed)
    clean_title = pc.if_else(matched, pc.struct_field(parsed, "title"), titles)
    title_year = pc.if_else(matched, pc.struct_field(parsed, "year"), pa.scalar(None, pa.string()))
    if year is None:
        year = title_year
        if fallback_year is not None:
            year = pc.coalesce(pc.cast(year, pa.string()), fallback_year)
    cols = {
        "item_id": ids,
        "source": constant_strings(source, n),
        "title": clean_title,
        "release_year": _to_int_lenient(year),
        "genres": as_array(genres),
    }
    cols.update(extra or {})
    return pa.table(cols)


def _check_ids(ids: pa.Array, f: Path, what: str) -> None:
    missing = is_missing(ids)
    if pc.any(missing).as_py():
        raise SourceError(f"{f}: line {pc.index(missing, True).as_py() + 1}: {what} is empty")


def _split_genres(arr, separator: str) -> pa.Array:
    """``"A|B"`` -> ``["A", "B"]``; empty text and ``(no genres listed)`` -> ``[]``."""
    arr = as_array(arr)
    arr = pc.if_else(pc.equal(arr, "(no genres listed)"), "", arr)
    arr = pc.fill_null(arr, "")
    parts = pc.split_pattern(arr, separator)
    # Drop empty pieces ("" -> [""] -> [], "A  B" -> ["A", "", "B"] -> ["A", "B"]).
    flat = pc.list_flatten(parts)
    keep = pc.not_equal(flat, "")
    offsets = parts.offsets.to_numpy()
    kept = np.concatenate([[0], np.cumsum(keep.to_numpy(zero_copy_only=False))]).astype(np.int32)
    new_offsets = pa.array(kept[offsets - offsets[0]], pa.int32())
    return pa.ListArray.from_arrays(new_offsets, pc.filter(flat, keep))


def _genres_from_flags(t: pa.Table) -> pa.Array:
    named = [
        pc.if_else(pc.equal(t.column(g).combine_chunks(), "1"), g, pa.scalar(None, pa.string()))
        for g in U_ITEM_GENRES
    ]
    joined = pc.binary_join_element_wise(*named, "|", null_handling="skip")
    return _split_genres(joined, "|")
