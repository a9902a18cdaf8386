"""Dimension files (users, items): reading whole attribute files and typing their columns.

A dimension table is the key column (``user_id`` / ``item_id``, text), ``source``, then the
file's other columns with snake_case names. Text columns are typed by :func:`infer_column`
(int64, else float64, else date32 for ``YYYY-MM-DD``, else text; no time zones involved);
ids (the key and every ``*_id`` column) stay text. Delimited files are read as UTF-8, falling
back to Latin-1; native Parquet types are kept as they are.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sources.columns import as_array, as_text, constant_strings, is_missing, is_text
from pipelines.sources.csvio import CsvFormat, file_columns, iter_csv_text
from pipelines.sources.errors import SourceError
from pipelines.sources.files import existing_path, read_parquet, strip_gz


def snake_case(name: str) -> str:
    """``UserID`` -> ``user_id``, ``movieId`` -> ``movie_id``, ``Zip-code`` -> ``zip_code``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name.strip())
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").lower()
    return s or "column"


def read_text_table(path: str | Path, fmt: CsvFormat) -> pa.Table:
    """A whole (dimension) file with every column as text; UTF-8, falling back to Latin-1."""
    last_error: Exception | None = None
    for encoding in dict.fromkeys([fmt.encoding, "latin-1"]):
        this = dataclasses.replace(fmt, encoding=encoding)
        try:
            chunks = [t for _, t in iter_csv_text(path, this, 1 << 40)]
        except SourceError as exc:
            if "UTF8" in str(exc) or "utf-8" in str(exc).lower() or "decode" in str(exc).lower():
                last_error = exc
                continue
            raise
        if not chunks:
            return pa.table({n: pa.array([], pa.string()) for n in file_columns(path, this)})
        return pa.concat_tables(chunks)
    raise SourceError(str(last_error))


def infer_column(arr: pa.Array) -> pa.Array:
    """Text to int64, else float64, else date32 (YYYY-MM-DD), else text; empty stays null.

    A column with a number written with a leading zero (``01234``: a zip code, a code) stays text.
    """
    arr = as_array(arr)
    if arr.null_count == len(arr):
        return arr
    if pc.any(pc.match_substring_regex(arr, r"^[+-]?0[0-9]")).as_py():
        return arr
    for target in (pa.int64(), pa.float64()):
        try:
            return pc.cast(arr, target)
        except pa.ArrowInvalid:
            pass
    if pc.all(pc.match_substring_regex(arr, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")).as_py():
        try:
            return pc.cast(arr, pa.date32())
        except pa.ArrowInvalid:
            pass
    return arr


def finish_dimension(
    table: pa.Table,
    *,
    id_column: str,
    key: str,
    source: str,
    path: str | Path,
    infer: bool = True,
    keep_text: Iterable[str] = (),
) -> pa.Table:
    """``key`` (text), ``source``, then the other columns snake_cased.

    With ``infer``, text columns are typed by :func:`infer_column`, except ids (the key and
    every ``*_id`` column) and ``keep_text``, which stay text.
    """
    if id_column not in table.column_names:
        raise SourceError(f"{path}: id column {id_column!r} is missing; the file has columns {table.column_names}")
    keep = set(keep_text)
    ids = as_text(as_array(table.column(id_column)))
    missing = is_missing(ids)
    if pc.any(missing).as_py():
        first = pc.index(missing, True).as_py() + 1
        raise SourceError(f"{path}: line {first}: column {id_column!r} is empty")
    arrays, names = [ids, constant_strings(source, table.num_rows)], [key, "source"]
    for name in table.column_names:
        if name == id_column:
            continue
        new = snake_case(name)
        while new in names:
            new = f"{new}_attr"
        arr = as_array(table.column(name))
        if infer and is_text(arr.type) and not (new.endswith("_id") or new in keep or name in keep):
            arr = infer_column(arr)
        elif new.endswith("_id"):
            arr = as_text(arr)
        arrays.append(arr)
        names.append(new)
    return pa.Table.from_arrays(arrays, names=names)


def read_dimension_file(
    path: str | Path, *, id_column: str, key: str, source: str, delimiter: str = ","
) -> pa.Table:
    """A generic users/items file (CSV, optionally gzipped, or Parquet) as a dimension table."""
    p = existing_path(path, "dimension file")
    if strip_gz(p.name).endswith(".parquet"):
        return finish_dimension(read_parquet(p), id_column=id_column, key=key, source=source, path=p, infer=False)
    table = read_text_table(p, CsvFormat(delimiter=delimiter))
    return finish_dimension(table, id_column=id_column, key=key, source=source, path=p)
