"""Preparing validation frames: NaN as null, Spark or Arrow to pandas with UTC-aware timestamps,
times; :func:`count_true` and :func:`group_ids` for the Arrow invariant counters."""
from __future__ import annotations

import datetime as dt
from typing import Any


def count_true(mask) -> int:
    """How many values of a boolean Arrow array are true; a null counts as not true, as a null
    comparison does in Spark's ``sum`` (the Arrow invariant counters count with this)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0) if len(mask) else 0


def group_ids(col):
    """Dense int64 ids of an Arrow column's values, nulls one group of their own (as Spark's
    ``groupBy`` groups them): the group keys of the Arrow invariant counters."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not len(col):
        return np.zeros(0, dtype=np.int64)
    enc = pc.dictionary_encode(col)
    idx = enc.indices.to_numpy(zero_copy_only=False)
    nulls = pc.is_null(enc).to_numpy(zero_copy_only=False)
    return np.where(nulls, len(enc.dictionary), idx).astype(np.int64)


def nan_to_null(df):
    """Float NaN becomes null (Spark counts NaN as a value, pandas as missing: both now agree)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    for f in df.schema.fields:
        if isinstance(f.dataType, (DoubleType, FloatType)):
            df = df.withColumn(f.name, F.when(F.isnan(F.col(f.name)), F.lit(None)).otherwise(F.col(f.name)))
    return df


def to_pandas(spark, df):
    """Spark to pandas with timestamps UTC-aware (Spark gives naive session-zone values)."""
    import pandas as pd
    from pyspark.sql.types import TimestampType

    from pipelines.quality.suites import session_zone

    pdf = df.toPandas()
    zone = session_zone(spark)
    for f in df.schema.fields:
        if isinstance(f.dataType, TimestampType):
            col = pd.to_datetime(pdf[f.name])
            if col.dt.tz is None:
                col = col.dt.tz_localize(zone)
            pdf[f.name] = col.dt.tz_convert("UTC")
    return widen_numbers(pdf)


def arrow_to_pandas(table):
    """Arrow to pandas as :func:`to_pandas` gives it from Spark: UTC-aware timestamps in ns.

    Float NaN and null are both missing in pandas (as after :func:`nan_to_null` and
    ``toPandas``); integers with nulls become float64, dates ``datetime.date`` objects.
    """
    import pandas as pd
    import pyarrow as pa

    pdf = table.to_pandas()
    for f in table.schema:
        if pa.types.is_timestamp(f.type):
            col = pd.to_datetime(pdf[f.name])
            pdf[f.name] = col.dt.tz_localize("UTC") if col.dt.tz is None and f.type.tz else col
            pdf[f.name] = pdf[f.name].astype("datetime64[ns, UTC]" if f.type.tz else "datetime64[ns]")
    return widen_numbers(pdf)


def widen_numbers(pdf):
    """``pdf`` with its narrow NumPy numbers widened: signed and unsigned integers of up to 32
    bits to int64, float16 and float32 to float64 (every value is kept exactly; uint64 and the
    pandas extension dtypes are left as they are).

    GX compares on pandas with vectorised NumPy only for int64 and float64 columns (and
    timestamps); any other dtype goes through a Python function per value (1,000,000 ``int32``
    values of ``user_sequences`` took about 1.5 s for one ``between``, against milliseconds).
    The verdicts and the unexpected values are the same numbers."""
    import numpy as np

    for name in pdf.columns:
        dtype = pdf[name].dtype
        if not isinstance(dtype, np.dtype):
            continue
        if dtype.kind in "iu" and dtype.itemsize < 8:
            pdf[name] = pdf[name].astype(np.int64)
        elif dtype.kind == "f" and dtype.itemsize < 8:
            pdf[name] = pdf[name].astype(np.float64)
    return pdf


def arrow_utc_date(column):
    """The UTC date (date32) of an Arrow timestamp column (aware or naive-as-UTC)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = column.type
    if typ.tz is not None:
        column = pc.cast(column, pa.timestamp(typ.unit))  # the same instants, as UTC wall time
    return pc.cast(pc.floor_temporal(column, unit="day"), pa.date32())


#: The one expectation GX evaluates on a list column itself; the others read derived columns
#: (``<list>_min_element``, ...), which are added before :func:`lists_as_lengths`.
NOT_NULL = "ExpectColumnValuesToNotBeNull"


def nullness_only(expectations, columns) -> list[str]:
    """Of ``columns``, those whose only expectations are not-null (and that have one)."""
    uses: dict[str, set[str]] = {}
    for e in expectations:
        named = [e.kwargs.get(k) for k in ("column", "column_A", "column_B")] + list(e.kwargs.get("column_list") or [])
        for c in named:
            if c:
                uses.setdefault(c, set()).add(e.type)
    return [c for c in columns if uses.get(c) == {NOT_NULL}]


def lists_as_lengths(frame, expectations):
    """The validation frame (Arrow table or Spark DataFrame) with each list column that only a
    not-null expectation reads replaced by its length, null where the list is null.

    The verdict and the unexpected values of a not-null expectation are the same on the
    lengths, and the frame GX validates (collected to pandas, or persisted on Spark) no longer
    holds every list: a 1,898,928-row ``user_vectors`` with its vectors was 1.4 GiB of
    serialized results, past Spark's ``spark.driver.maxResultSize``, before this.
    """
    import pyarrow as pa

    if isinstance(frame, pa.Table):
        import pyarrow.compute as pc

        lists = [f.name for f in frame.schema if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
        for name in nullness_only(expectations, lists):
            i = frame.schema.get_field_index(name)
            frame = frame.set_column(i, name, pc.cast(pc.list_value_length(frame.column(name)), pa.int64()))
        return frame
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType

    lists = [f.name for f in frame.schema.fields if isinstance(f.dataType, ArrayType)]
    for name in nullness_only(expectations, lists):
        col = F.col(name)
        frame = frame.withColumn(name, F.when(col.isNull(), F.lit(None)).otherwise(F.size(col)).cast("long"))
    return frame


def is_pandas(frame: Any) -> bool:
    import pandas as pd

    return isinstance(frame, pd.DataFrame)


def as_utc(value: dt.datetime | dt.date | None) -> dt.datetime | None:
    """A date (midnight) or datetime as an aware UTC datetime (naive values are taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
