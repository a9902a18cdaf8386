"""Source adapters: real KuaiRand and MovieLens files, GroupLens layouts, generic CSV/Parquet.

Real-data tests read ``../shared/data`` and skip with a reason when it is absent; the other
tests write small files into ``tmp_path``. No mocks: every test reads real files.
"""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.dimensions import ITEMS, USERS
from features.events import ID_SEPARATOR, STAGED_EVENT_SCHEMA, record_key
from features.source_kinds import SOURCE_KINDS
from pipelines.settings import ColumnMapping, DimensionFile, SourceConfig
from pipelines.sources import SourceAdapter, SourceError, adapter_for
from pipelines.sources.kuairand import KuaiRandAdapter
from pipelines.sources.movielens import MovieLensAdapter

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UTC = dt.timezone.utc
KUAIRAND_LOGS = {
    "log_standard_4_25_to_4_30_pure.csv.gz": 94_784,
    "log_standard_5_01_to_5_08_pure.csv.gz": 133_545,
}
KR_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
)


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data set {name!r} not found at {path} (real-data tests need ../shared/data)")
    return path


def read_all(adapter: SourceAdapter, file: str | None = None, chunk_rows: int = 500_000) -> pa.Table:
    files = [file] if file else adapter.event_files()
    chunks = [t for f in files for t in adapter.read_events(f, chunk_rows=chunk_rows)]
    for t in chunks:
        assert t.schema.equals(STAGED_EVENT_SCHEMA, check_metadata=True)
    return pa.concat_tables(chunks) if chunks else STAGED_EVENT_SCHEMA.empty_table()


def canonical(table: pa.Table) -> list[tuple]:
    return [
        (r["user_id"], r["item_id"], r["rating"], r["event_ts"])
        for r in table.select(["user_id", "item_id", "rating", "event_ts"]).to_pylist()
    ]


def kuairand(path: Path, name: str = "kuairand") -> KuaiRandAdapter:
    adapter = adapter_for(name, SourceConfig(kind="kuairand", path=str(path)))
    assert isinstance(adapter, KuaiRandAdapter)
    return adapter


def movielens(path: Path, name: str = "ml") -> MovieLensAdapter:
    adapter = adapter_for(name, SourceConfig(kind="movielens", path=str(path)))
    assert isinstance(adapter, MovieLensAdapter)
    return adapter


def kr_line(user=1, video=2, time_ms=1_650_812_741_436, play=1000, duration=9000, click=1, long_view=0) -> str:
    return f"{user},{video},20220425,0,{time_ms},{click},0,0,0,0,0,{long_view},{play},{duration},0,0,0,0,1"


# ---------------------------------------------------------------------------------------------
# KuaiRand slice (real data)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kuairand_dir() -> Path:
    return shared("kuairand-pure-slice")


@pytest.fixture(scope="module")
def kuairand_events(kuairand_dir) -> pa.Table:
    return read_all(kuairand(kuairand_dir))


@pytest.mark.shared_data
def test_kuairand_slice_counts_and_schema(kuairand_dir, kuairand_events):
    adapter = kuairand(kuairand_dir)
    assert [Path(f).name for f in adapter.event_files()] == sorted(KUAIRAND_LOGS)
    t = kuairand_events
    assert t.num_rows == 228_329
    assert t.schema.equals(STAGED_EVENT_SCHEMA)
    per_file = {r["values"]: r["counts"] for r in pc.value_counts(t.column("source_file")).to_pylist()}
    assert per_file == KUAIRAND_LOGS
    assert pc.count_distinct(t.column("user_id")).as_py() == 25_156
    assert pc.count_distinct(t.column("item_id")).as_py() == 6_361
    assert set(t.column("source").to_pylist()) == {"kuairand"}
    assert t.column("rating").null_count == t.num_rows
    for name in STAGED_EVENT_SCHEMA.names:
        if name != "rating":
            assert t.column(name).null_count == 0, name
    # Lines are 1..n within each file, in file order.
    for name, n in KUAIRAND_LOGS.items():
        lines = t.filter(pc.equal(t.column("source_file"), name)).column("source_line")
        assert lines.to_pylist() == list(range(1, n + 1))


@pytest.mark.shared_data
def test_kuairand_values_match_the_raw_csv(kuairand_dir, kuairand_events):
    """Parity with an independent read of the raw files (pyarrow's own type inference)."""
    raw = pa.concat_tables([pcsv.read_csv(kuairand_dir / name) for name in sorted(KUAIRAND_LOGS)])
    t = kuairand_events
    assert pc.cast(t.column("event_ts"), pa.int64()).equals(pc.multiply(raw.column("time_ms"), 1000).cast(pa.int64()))
    assert t.column("user_id").equals(pc.cast(raw.column("user_id"), pa.string()))
    assert t.column("item_id").equals(pc.cast(raw.column("video_id"), pa.string()))
    assert t.column("play_time_ms").equals(raw.column("play_time_ms").cast(pa.int64()))
    assert t.column("duration_ms").equals(raw.column("duration_ms").cast(pa.int64()))
    for src, flag in [("is_click", "is_click"), ("long_view", "is_long_view"), ("is_like", "is_like"),
                      ("is_hate", "is_hate"), ("is_profile_enter", "is_profile_enter"), ("is_rand", "is_rand")]:  # fmt: skip
        assert t.column(flag).equals(pc.equal(raw.column(src), 1)), flag
    assert pc.sum(t.column("is_rand")).as_py() == 0  # the slice has no random-exposure rows


@pytest.mark.shared_data
def test_kuairand_record_key_is_the_raw_line(kuairand_dir, kuairand_events):
    name = sorted(KUAIRAND_LOGS)[0]
    with gzip.open(kuairand_dir / name, "rt", newline="") as fh:
        rows = list(csv.reader(fh))[1:2001]
    expected = [record_key(r) for r in rows]
    assert kuairand_events.column("record_key").to_pylist()[:2000] == expected
    # Lines repeat byte for byte in real logs: the key then repeats too (ids use the occurrence).
    first = kuairand_events.filter(pc.equal(kuairand_events.column("source_file"), name))
    assert first.num_rows - pc.count_distinct(first.column("record_key")).as_py() == 2_750


@pytest.mark.shared_data
def test_kuairand_plain_and_gzipped_copies_give_identical_keys(kuairand_dir, kuairand_events, tmp_path):
    name = sorted(KUAIRAND_LOGS)[0]
    plain = tmp_path / "plain"
    plain.mkdir()
    with gzip.open(kuairand_dir / name, "rb") as src, open(plain / name.removesuffix(".gz"), "wb") as dst:
        shutil.copyfileobj(src, dst)
    gz = tmp_path / "gz"
    gz.mkdir()
    shutil.copy(kuairand_dir / name, gz / name)
    a = read_all(kuairand(plain))
    b = read_all(kuairand(gz))
    assert a.num_rows == b.num_rows == KUAIRAND_LOGS[name]
    assert a.column("record_key").equals(b.column("record_key"))
    assert a.drop_columns(["source_file"]).equals(b.drop_columns(["source_file"]))
    assert set(a.column("source_file").to_pylist()) == {name.removesuffix(".gz")}
    # The same file twice (plain and gzipped) in one folder is read once: the plain copy.
    shutil.copy(kuairand_dir / name, plain / name)
    assert [Path(f).name for f in kuairand(plain).event_files()] == [name.removesuffix(".gz")]


@pytest.mark.shared_data
def test_kuairand_users_and_items(kuairand_dir):
    adapter = kuairand(kuairand_dir)
    users = adapter.read_users()
    items = adapter.read_items()
    assert users.num_rows == 27_285 and items.num_rows == 7_583
    assert users.column_names[:2] == ["user_id", "source"] and items.column_names[:2] == ["item_id", "source"]
    USERS.validate_schema(USERS.conform(users).schema)
    ITEMS.validate_schema(ITEMS.conform(items).schema)
    assert pc.count_distinct(users.column("user_id")).as_py() == 27_285
    assert pc.count_distinct(items.column("item_id")).as_py() == 7_583
    assert users.schema.field("register_days").type == pa.int64()
    assert users.schema.field("user_active_degree").type == pa.string()
    # video_duration becomes duration_ms (int64; null where the source has no value).
    assert "video_duration" not in items.column_names
    assert items.schema.field("duration_ms").type == pa.int64()
    assert items.column("duration_ms").null_count == 239
    first = items.slice(0, 1).to_pylist()[0]
    assert first["item_id"] == "0" and first["duration_ms"] == 87_433 and first["author_id"] == "7349781"
    assert items.schema.field("tag").type == pa.string()


def test_kuairand_bad_value_names_file_and_line(tmp_path):
    (tmp_path / "log_a.csv").write_text("\n".join([KR_HEADER, kr_line(), kr_line(), kr_line(time_ms="1650x")]) + "\n")
    adapter = kuairand(tmp_path)
    with pytest.raises(SourceError, match=r"log_a\.csv: line 3: column 'time_ms': cannot read '1650x'"):
        read_all(adapter)
    (tmp_path / "log_a.csv").write_text("\n".join([KR_HEADER, kr_line(click=2)]) + "\n")
    with pytest.raises(SourceError, match=r"log_a\.csv: line 1: column 'is_click'"):
        read_all(adapter)
    (tmp_path / "log_a.csv").write_text("\n".join([KR_HEADER, kr_line(play="1.5")]) + "\n")
    with pytest.raises(SourceError, match=r"line 1: column 'play_time_ms': cannot read '1.5' as an integer"):
        read_all(adapter)


def test_kuairand_wrong_field_count_names_the_line(tmp_path):
    lines = [KR_HEADER, kr_line(), "", kr_line(), kr_line(), "1,2,x,y,not-a-time", kr_line()]
    with gzip.open(tmp_path / "log_a.csv.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"log_a\.csv\.gz: line 4: expected 19 fields, found 5"):
        read_all(kuairand(tmp_path))


def test_kuairand_missing_columns_and_optional_columns(tmp_path):
    (tmp_path / "log_a.csv").write_text("user_id,video_id,play_time_ms\n1,2,3\n")
    with pytest.raises(SourceError, match=r"log_a\.csv: not a KuaiRand log: columns \['time_ms'\] are missing"):
        read_all(kuairand(tmp_path))
    # Only the required columns: the rest is null.
    (tmp_path / "log_a.csv").write_text("time_ms,video_id,user_id\n1650812741436,v9,u1\n")
    row = read_all(kuairand(tmp_path)).to_pylist()[0]
    assert row["user_id"] == "u1" and row["item_id"] == "v9" and row["play_time_ms"] is None
    assert row["event_ts"] == dt.datetime(2022, 4, 24, 15, 5, 41, 436_000, tzinfo=UTC)
    assert row["is_click"] is None and row["record_key"] == "1650812741436\x1fv9\x1fu1"


def test_synthetic_kind_reads_kuairand_files(tmp_path):
    (tmp_path / "log_standard_0.csv").write_text("\n".join([KR_HEADER, kr_line(long_view=1)]) + "\n")
    (tmp_path / "user_features_synthetic.csv").write_text("user_id,user_active_degree\n1,high_active\n")
    (tmp_path / "video_features_basic_synthetic.csv").write_text("video_id,video_duration\n2,9000.0\n3,\n")
    adapter = adapter_for("synthetic", SourceConfig(kind="synthetic", path=str(tmp_path)))
    assert isinstance(adapter, KuaiRandAdapter) and adapter.source_zone == "Asia/Shanghai"
    row = read_all(adapter).to_pylist()[0]
    assert row["source"] == "synthetic" and row["is_long_view"] is True and row["duration_ms"] == 9000
    assert adapter.read_users().to_pylist() == [{"user_id": "1", "source": "synthetic", "user_active_degree": "high_active"}]
    assert adapter.read_items().to_pylist() == [
        {"item_id": "2", "source": "synthetic", "duration_ms": 9000},
        {"item_id": "3", "source": "synthetic", "duration_ms": None},
    ]


def test_kuairand_without_dimension_files(tmp_path):
    (tmp_path / "log_a.csv").write_text("\n".join([KR_HEADER, kr_line()]) + "\n")
    adapter = kuairand(tmp_path / "log_a.csv")  # a single file as the path
    assert adapter.event_files() == [str(tmp_path / "log_a.csv")]
    assert adapter.read_users() is None and adapter.read_items() is None


# ---------------------------------------------------------------------------------------------
# MovieLens: RecBole atomic files (real data) and GroupLens layouts
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ml100k_dir() -> Path:
    return shared("ml-100k")


@pytest.fixture(scope="module")
def ml100k_events(ml100k_dir) -> pa.Table:
    return read_all(movielens(ml100k_dir))


@pytest.mark.shared_data
def test_ml100k_recbole_counts_ratings_and_time_range(ml100k_dir, ml100k_events):
    t = ml100k_events
    assert movielens(ml100k_dir).layout() == "recbole"
    assert t.num_rows == 100_000 and t.schema.equals(STAGED_EVENT_SCHEMA)
    assert pc.count_distinct(t.column("user_id")).as_py() == 943
    assert pc.count_distinct(t.column("item_id")).as_py() == 1_682
    assert sorted(pc.unique(t.column("rating")).to_pylist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    lo, hi = pc.min(t.column("event_ts")).as_py(), pc.max(t.column("event_ts")).as_py()
    assert dt.datetime(1997, 9, 20, tzinfo=UTC) <= lo and hi < dt.datetime(1998, 4, 23, tzinfo=UTC)
    assert t.column("source_line").to_pylist() == list(range(1, 100_001))
    first = t.slice(0, 1).to_pylist()[0]
    assert first["record_key"] == "196\x1f242\x1f3\x1f881250949"
    assert first["event_ts"] == dt.datetime.fromtimestamp(881250949, UTC)
    for flag in ("is_click", "is_long_view", "play_time_ms", "duration_ms"):
        assert t.column(flag).null_count == t.num_rows


@pytest.mark.shared_data
def test_ml100k_recbole_users_and_items(ml100k_dir):
    adapter = movielens(ml100k_dir)
    users, items = adapter.read_users(), adapter.read_items()
    assert users.num_rows == 943 and items.num_rows == 1_682
    assert users.column_names == ["user_id", "source", "age", "gender", "occupation", "zip_code"]
    assert items.column_names == ["item_id", "source", "title", "release_year", "genres"]
    USERS.conform(users)
    ITEMS.conform(items)
    assert users.slice(0, 1).to_pylist()[0] == {
        "user_id": "1", "source": "ml", "age": 24, "gender": "M", "occupation": "technician", "zip_code": "85711",
    }  # fmt: skip
    by_id = {r["item_id"]: r for r in items.to_pylist()}
    assert by_id["1"]["title"] == "Toy Story" and by_id["1"]["release_year"] == 1995
    assert by_id["1"]["genres"] == ["Animation", "Children's", "Comedy"]
    # Item 267 has no title or year in MovieLens; RecBole writes the typo "unkonwn" for both.
    assert by_id["267"]["release_year"] is None


def _inter_rows(ml100k_dir: Path, n: int) -> list[list[str]]:
    lines = (ml100k_dir / "ml-100k.inter").read_text().splitlines()[1 : n + 1]
    return [line.split("\t") for line in lines]


@pytest.mark.shared_data
@pytest.mark.parametrize("layout", ["u.data", "ratings.dat", "ratings.csv", "u.data.gz"])
def test_grouplens_layouts_map_to_the_same_rows_as_recbole(ml100k_dir, ml100k_events, tmp_path, layout):
    n = 500
    rows = _inter_rows(ml100k_dir, n)
    if layout.startswith("u.data"):
        text = "".join("\t".join(r) + "\n" for r in rows)
        raw_keys = [record_key(r) for r in rows]
    elif layout == "ratings.dat":
        text = "".join("::".join(r) + "\n" for r in rows)
        raw_keys = [record_key(r) for r in rows]
    else:
        text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.0,{ts}\n" for u, i, r, ts in rows)
        raw_keys = [record_key([u, i, f"{r}.0", ts]) for u, i, r, ts in rows]
    path = tmp_path / layout
    if layout.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    adapter = movielens(tmp_path)
    assert adapter.event_files() == [str(path)]
    got = read_all(adapter, chunk_rows=97)
    assert canonical(got) == canonical(ml100k_events.slice(0, n))
    assert got.column("record_key").to_pylist() == raw_keys
    assert got.column("source_line").to_pylist() == list(range(1, n + 1))
    assert set(got.column("source_file").to_pylist()) == {layout}


def test_grouplens_100k_users_and_items(tmp_path):
    (tmp_path / "u.data").write_text("1\t1\t5\t874965758\n")
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    flags = ["0"] * 19
    flags[3] = flags[4] = flags[5] = "1"
    unknown = ["1"] + ["0"] * 18
    (tmp_path / "u.item").write_bytes(
        ("1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|" + "|".join(flags) + "\n"
         + "267|unknown||||" + "|".join(unknown) + "\n"
         + "1001|Misérables, Les (1995)|01-Jan-1995||x|" + "|".join(["0"] * 8 + ["1"] + ["0"] * 10) + "\n").encode("latin-1")
    )  # fmt: skip
    adapter = movielens(tmp_path)
    assert adapter.layout() == "u.data"
    assert adapter.read_users().to_pylist()[1] == {
        "user_id": "2", "source": "ml", "age": 53, "gender": "F", "occupation": "other", "zip_code": "94043",
    }  # fmt: skip
    items = adapter.read_items().to_pylist()
    assert items[0] == {"item_id": "1", "source": "ml", "title": "Toy Story", "release_year": 1995,
                        "genres": ["Animation", "Children's", "Comedy"]}  # fmt: skip
    assert items[1] == {"item_id": "267", "source": "ml", "title": "unknown", "release_year": None, "genres": ["unknown"]}
    assert items[2]["title"] == "Misérables, Les" and items[2]["genres"] == ["Drama"]


def test_grouplens_1m_and_latest_users_and_items(tmp_path):
    one_m = tmp_path / "ml-1m"
    one_m.mkdir()
    (one_m / "ratings.dat").write_text("1::1193::5::978300760\n")
    (one_m / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (one_m / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Misérables, Les (1995)::Drama\n".encode("latin-1"))
    adapter = movielens(one_m)
    assert adapter.read_users().to_pylist()[0] == {
        "user_id": "1", "source": "ml", "age": 1, "gender": "F", "occupation": "10", "zip_code": "48067",
    }  # fmt: skip
    items = adapter.read_items().to_pylist()
    assert items[0]["genres"] == ["Animation", "Children's", "Comedy"] and items[0]["release_year"] == 1995
    assert items[1]["title"] == "Misérables, Les"

    latest = tmp_path / "ml-latest"
    latest.mkdir()
    (latest / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.5,964982703\n")
    (latest / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,"American President, The (1995)",Comedy\n'
        "3,Some Film,(no genres listed)\n"
    )
    adapter = movielens(latest)
    assert adapter.read_users() is None
    assert read_all(adapter).to_pylist()[0]["rating"] == 4.5
    items = adapter.read_items().to_pylist()
    assert items[1]["title"] == "American President, The" and items[1]["genres"] == ["Comedy"]
    assert items[2] == {"item_id": "3", "source": "ml", "title": "Some Film", "release_year": None, "genres": []}


def test_double_colon_file_with_a_bad_line(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n\n1::661::3\n")
    with pytest.raises(SourceError, match=r"ratings\.dat: line 2: expected 4 '::'-separated fields, found 3"):
        read_all(movielens(tmp_path))
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::three::978302109\n")
    with pytest.raises(SourceError, match=r"ratings\.dat: line 2: column 'Rating': cannot read 'three'"):
        read_all(movielens(tmp_path))


def test_movielens_without_ratings_files(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here")
    with pytest.raises(SourceError, match=rf"{tmp_path}: no MovieLens ratings files"):
        movielens(tmp_path).event_files()


# ---------------------------------------------------------------------------------------------
# Generic CSV and Parquet
# ---------------------------------------------------------------------------------------------


def generic(kind: str, path: Path, **kw) -> SourceAdapter:
    mapping = kw.pop(
        "mapping",
        ColumnMapping(user_id="uid", item_id="iid", timestamp="ts", play_time_ms="watch_ms", rating="stars",
                      flags={"is_click": "clicked", "is_like": "liked"}),
    )  # fmt: skip
    return adapter_for("gen", SourceConfig(kind=kind, path=str(path), mapping=mapping, **kw))


BERLIN_ROWS = [
    # (ts text in the file, expected UTC instant)
    ("2022-03-27 01:30:00", dt.datetime(2022, 3, 27, 0, 30, tzinfo=UTC)),  # CET, +01:00
    ("2022-03-27T03:30:00", dt.datetime(2022, 3, 27, 1, 30, tzinfo=UTC)),  # CEST, +02:00, after the gap
    ("2022-10-30 01:30:00.250", dt.datetime(2022, 10, 29, 23, 30, 0, 250_000, tzinfo=UTC)),
    ("2022-10-30 02:30:00", dt.datetime(2022, 10, 30, 0, 30, tzinfo=UTC)),  # ambiguous: the earlier (CEST)
    ("2022-10-30 03:30:00", dt.datetime(2022, 10, 30, 2, 30, tzinfo=UTC)),  # CET again
    ("2022-03-27T12:00:00+05:00", dt.datetime(2022, 3, 27, 7, 0, tzinfo=UTC)),  # an offset wins over the zone
    ("2022-03-27T12:00:00Z", dt.datetime(2022, 3, 27, 12, 0, tzinfo=UTC)),
    ("2022-07-01", dt.datetime(2022, 6, 30, 22, 0, tzinfo=UTC)),  # a date: local midnight
]


def test_generic_csv_iso_times_in_a_zone_across_dst(tmp_path):
    lines = ["uid;iid;ts;watch_ms;stars;clicked;liked;extra"]
    for i, (ts, _) in enumerate(BERLIN_ROWS):
        flag = ["0", "1", "true", "false", "TRUE", "False", "", "1"][i]
        lines.append(f"u{i};i{i};{ts};{i * 100};{i}.5;{flag};{flag};x")
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n")
    adapter = generic("csv", tmp_path, timestamp_unit="iso", time_zone="Europe/Berlin", delimiter=";")
    t = read_all(adapter)
    assert t.column("event_ts").to_pylist() == [utc for _, utc in BERLIN_ROWS]
    assert t.column("is_click").to_pylist() == [False, True, True, False, True, False, None, True]
    assert t.column("is_like").to_pylist() == t.column("is_click").to_pylist()
    assert t.column("play_time_ms").to_pylist() == [i * 100 for i in range(len(BERLIN_ROWS))]
    assert t.column("rating").to_pylist() == [i + 0.5 for i in range(len(BERLIN_ROWS))]
    assert t.column("is_hate").null_count == t.num_rows and t.column("duration_ms").null_count == t.num_rows
    assert t.column("record_key").to_pylist()[0] == ID_SEPARATOR.join(["u0", "i0", BERLIN_ROWS[0][0], "0", "0.5", "0", "0", "x"])


def test_generic_iso_time_in_the_dst_gap_is_an_error(tmp_path):
    (tmp_path / "e.csv").write_text("uid,iid,ts\nu,i,2022-03-27 01:59:59\nu,i,2022-03-27 02:30:00\n")
    adapter = generic("csv", tmp_path / "e.csv", mapping=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts"),
                      timestamp_unit="iso", time_zone="Europe/Berlin")  # fmt: skip
    with pytest.raises(SourceError, match=r"e\.csv: line 2: column 'ts': local time '2022-03-27 02:30:00.000000' does not exist in Europe/Berlin"):
        read_all(adapter)


@pytest.mark.parametrize("unit, scale", [("s", 1), ("ms", 1_000), ("us", 1_000_000)])
def test_generic_csv_epoch_units(tmp_path, unit, scale):
    instants = [dt.datetime(2022, 4, 25, 8, 0, 1, tzinfo=UTC), dt.datetime(1998, 4, 22, 23, 59, 59, tzinfo=UTC)]
    lines = ["uid,iid,ts"] + [f"1,2,{int(x.timestamp()) * scale}" for x in instants] + [f"1,2,{instants[0].timestamp() * scale + 0.0:.1f}"]
    with gzip.open(tmp_path / "e.csv.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    adapter = generic("csv", tmp_path, mapping=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts"),
                      timestamp_unit=unit, time_zone="Asia/Tokyo")  # epoch numbers ignore the zone  # fmt: skip
    assert read_all(adapter).column("event_ts").to_pylist() == [*instants, instants[0]]


def test_generic_epoch_with_the_wrong_unit_is_an_error(tmp_path):
    (tmp_path / "e.csv").write_text("uid,iid,ts\n1,2,1650812741436\n")
    adapter = generic("csv", tmp_path, mapping=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts"))
    with pytest.raises(SourceError, match=r"line 1: column 'ts': '1650812741436' read as epoch s is outside 1900\.\.2200"):
        read_all(adapter)


def test_generic_parquet_native_types(tmp_path):
    base = dt.datetime(2022, 3, 27, 1, 30)
    table = pa.table({
        "uid": pa.array([7, 8, 9], pa.int64()),
        "iid": pa.array(["a", "b", "c"]),
        "ts": pa.array([base, base + dt.timedelta(hours=1), base + dt.timedelta(hours=2)], pa.timestamp("ms")),
        "watch_ms": pa.array([1.0, 2.0, None]),
        "stars": pa.array([1, 2, 3], pa.int32()),
        "clicked": pa.array([True, False, None]),
        "liked": pa.array([0, 1, 1], pa.int8()),
    })  # fmt: skip
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=2)
    t = read_all(generic("parquet", tmp_path, time_zone="UTC"), chunk_rows=2)
    assert t.column("user_id").to_pylist() == ["7", "8", "9"]
    assert t.column("event_ts").to_pylist() == [
        dt.datetime(2022, 3, 27, 1, 30, tzinfo=UTC), dt.datetime(2022, 3, 27, 2, 30, tzinfo=UTC),
        dt.datetime(2022, 3, 27, 3, 30, tzinfo=UTC),
    ]  # fmt: skip
    assert t.column("play_time_ms").to_pylist() == [1, 2, None]
    assert t.column("rating").to_pylist() == [1.0, 2.0, 3.0]
    assert t.column("is_click").to_pylist() == [True, False, None]
    assert t.column("is_like").to_pylist() == [False, True, True]
    assert t.column("source_line").to_pylist() == [1, 2, 3]
    assert t.column("record_key").to_pylist()[0] == ID_SEPARATOR.join(
        ["7", "a", "2022-03-27 01:30:00.000", "1", "1", "true", "0"]
    )


def test_generic_parquet_naive_times_in_a_zone(tmp_path):
    ts = [dt.datetime(2022, 10, 30, 2, 30), dt.datetime(2022, 3, 27, 2, 30)]
    pq.write_table(pa.table({"u": ["1", "2"], "i": ["x", "y"], "t": pa.array(ts, pa.timestamp("us"))}), tmp_path / "a.parquet")
    pq.write_table(
        pa.table({"u": ["1"], "i": ["x"], "t": pa.array([dt.datetime(2022, 1, 1, 12, tzinfo=UTC)], pa.timestamp("us", tz="Asia/Tokyo"))}),
        tmp_path / "b.parquet",
    )
    adapter = generic("parquet", tmp_path, mapping=ColumnMapping(user_id="u", item_id="i", timestamp="t"),
                      time_zone="Europe/Berlin")  # fmt: skip
    assert [Path(f).name for f in adapter.event_files()] == ["a.parquet", "b.parquet"]
    with pytest.raises(SourceError, match=r"a\.parquet: line 2: column 't': local time '2022-03-27 02:30:00.000000' does not exist"):
        read_all(adapter, adapter.event_files()[0])
    # An aware column keeps its instant whatever time_zone says.
    assert read_all(adapter, adapter.event_files()[1]).column("event_ts").to_pylist() == [dt.datetime(2022, 1, 1, 12, tzinfo=UTC)]


def test_generic_users_and_items_files(tmp_path):
    (tmp_path / "events.csv").write_text("uid,iid,ts\n1,2,1650812741\n")
    (tmp_path / "profiles.csv").write_text(
        "UserID,Age Group,signupDate,score,ref_id,zip\n1,25-34,2021-01-02,0.5,7,01234\n2,,2021-02-03,1,8,94043\n"
    )
    pq.write_table(pa.table({"sku": [2, 3], "Price": [9.5, 1.0]}), tmp_path / "catalog.parquet")
    adapter = generic(
        "csv", tmp_path / "events.csv",
        mapping=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts"),
        users=DimensionFile(path=str(tmp_path / "profiles.csv"), id_column="UserID"),
        items=DimensionFile(path=str(tmp_path / "catalog.parquet"), id_column="sku"),
    )  # fmt: skip
    users = adapter.read_users()
    assert users.column_names == ["user_id", "source", "age_group", "signup_date", "score", "ref_id", "zip"]
    assert users.column("zip").to_pylist() == ["01234", "94043"]  # a leading zero keeps a column text
    assert users.schema.field("signup_date").type == pa.date32() and users.schema.field("score").type == pa.float64()
    assert users.column("ref_id").to_pylist() == ["7", "8"]  # *_id columns stay text
    assert users.to_pylist()[1]["age_group"] is None
    items = adapter.read_items()
    assert items.to_pylist() == [{"item_id": "2", "source": "gen", "price": 9.5}, {"item_id": "3", "source": "gen", "price": 1.0}]
    USERS.conform(users)
    ITEMS.conform(items)
    bad = generic("csv", tmp_path / "events.csv", mapping=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts"),
                  users=DimensionFile(path=str(tmp_path / "profiles.csv"), id_column="user"))  # fmt: skip
    with pytest.raises(SourceError, match=r"profiles\.csv: id column 'user' is missing"):
        bad.read_users()
    assert generic("csv", tmp_path / "events.csv").read_users() is None


def test_generic_mapping_names_a_missing_column(tmp_path):
    (tmp_path / "e.csv").write_text("uid,iid,timestamp\n1,2,3\n")
    with pytest.raises(SourceError, match=r"e\.csv: column 'ts' \(for timestamp\) is missing"):
        read_all(generic("csv", tmp_path))
    pq.write_table(pa.table({"uid": [1]}), tmp_path / "e.parquet")
    with pytest.raises(SourceError, match=r"e\.parquet: column 'iid' \(for item_id\) is missing"):
        read_all(generic("parquet", tmp_path))


def test_generic_empty_ids_and_times_are_errors(tmp_path):
    (tmp_path / "e.csv").write_text("uid,iid,ts\n1,2,3\n,2,3\n")
    with pytest.raises(SourceError, match=r"e\.csv: line 2: column 'uid' is empty"):
        read_all(generic("csv", tmp_path, mapping=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts")))
    (tmp_path / "e.csv").write_text("uid,iid,ts\n1,2,\n")
    with pytest.raises(SourceError, match=r"e\.csv: line 1: column 'ts' is empty"):
        read_all(generic("csv", tmp_path, mapping=ColumnMapping(user_id="uid", item_id="iid", timestamp="ts")))


# ---------------------------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_chunks_of_1000_rows_equal_one_chunk(ml100k_dir, ml100k_events):
    adapter = movielens(ml100k_dir)
    chunks = list(adapter.read_events(adapter.event_files()[0], chunk_rows=1000))
    assert [c.num_rows for c in chunks] == [1000] * 100
    assert pa.concat_tables(chunks).equals(ml100k_events)
    assert pa.concat_tables(chunks).column("source_line").to_pylist() == list(range(1, 100_001))


@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
def test_chunking_csv_and_double_colon_files(tmp_path, chunk_rows):
    n = 25
    (tmp_path / "log_a.csv").write_text("\n".join([KR_HEADER] + [kr_line(user=i, time_ms=1_650_812_741_436 + i) for i in range(n)]) + "\n")
    whole = read_all(kuairand(tmp_path))
    parts = list(kuairand(tmp_path).read_events(str(tmp_path / "log_a.csv"), chunk_rows=chunk_rows))
    assert all(p.num_rows == chunk_rows for p in parts[:-1]) and 0 < parts[-1].num_rows <= chunk_rows
    assert pa.concat_tables(parts).equals(whole)
    assert whole.column("source_line").to_pylist() == list(range(1, n + 1))
    ml = tmp_path / "ml"
    ml.mkdir()
    (ml / "ratings.dat").write_text("".join(f"{i}::{i + 1}::3::97830076{i % 10}\n" for i in range(n)))
    parts = list(movielens(ml).read_events(str(ml / "ratings.dat"), chunk_rows=chunk_rows))
    assert pa.concat_tables(parts).equals(read_all(movielens(ml)))
    assert pa.concat_tables(parts).column("source_line").to_pylist() == list(range(1, n + 1))


# ---------------------------------------------------------------------------------------------
# Errors about paths and headers
# ---------------------------------------------------------------------------------------------


def test_missing_path_and_no_matching_files(tmp_path):
    missing = tmp_path / "nope"
    for kind in ("kuairand", "movielens", "synthetic"):
        with pytest.raises(SourceError, match=rf"{missing}: source path does not exist"):
            adapter_for("s", SourceConfig(kind=kind, path=str(missing))).event_files()
    with pytest.raises(SourceError, match=rf"{missing}: source path does not exist"):
        generic("csv", missing).event_files()
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(SourceError, match=rf"{tmp_path}: no KuaiRand log files \(log_\*\.csv"):
        kuairand(tmp_path).event_files()
    with pytest.raises(SourceError, match=rf"{tmp_path}: no CSV files"):
        generic("csv", tmp_path).event_files()
    with pytest.raises(SourceError, match=rf"{tmp_path}: no Parquet files"):
        generic("parquet", tmp_path).event_files()


def test_unreadable_files(tmp_path):
    (tmp_path / "log_empty.csv").write_text("")
    with pytest.raises(SourceError, match=r"log_empty\.csv: no header line"):
        read_all(kuairand(tmp_path))
    (tmp_path / "log_empty.csv").unlink()
    (tmp_path / "log_bad.csv.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(SourceError, match=r"log_bad\.csv\.gz: cannot read the header"):
        read_all(kuairand(tmp_path))
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(SourceError, match=r"x\.parquet: not a readable Parquet file"):
        read_all(generic("parquet", tmp_path))
    header_only = tmp_path / "only"
    header_only.mkdir()
    (header_only / "log_a.csv").write_text(KR_HEADER + "\n")
    assert read_all(kuairand(header_only)).num_rows == 0


def test_adapter_kinds():
    kinds = {k: adapter_for("s", SourceConfig(kind=k, path="/x", mapping=ColumnMapping(user_id="u", item_id="i", timestamp="t")))
             for k in SOURCE_KINDS}  # fmt: skip
    assert {k: a.kind for k, a in kinds.items()} == {
        "synthetic": "kuairand", "kuairand": "kuairand", "movielens": "movielens", "csv": "csv", "parquet": "parquet",
    }  # fmt: skip
    assert kinds["kuairand"].source_zone == "Asia/Shanghai" and kinds["movielens"].source_zone == "UTC"
    assert issubclass(SourceError, ValueError)


def test_source_kinds_are_defined_once():
    import typing

    from features.source_kinds import FILE_FORMAT_KINDS, GENERIC_KINDS
    from pipelines.sources import ADAPTERS

    assert tuple(ADAPTERS) == SOURCE_KINDS == ("synthetic", *FILE_FORMAT_KINDS)
    assert set(GENERIC_KINDS) <= set(FILE_FORMAT_KINDS)
    assert typing.get_args(SourceConfig.model_fields["kind"].annotation) == SOURCE_KINDS


# ---------------------------------------------------------------------------------------------
# Property: any CSV of valid values round-trips, and its key is the record_key of its fields
# ---------------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters='\r\n"\x1f', exclude_categories=("Cs",)),
                min_size=1, max_size=8)  # fmt: skip
_row = st.tuples(
    _text.filter(lambda s: s.strip() == s and "," not in s),
    st.integers(0, 10**6),
    st.integers(0, 4_102_444_799),  # epoch seconds up to 2099-12-31
    st.one_of(st.none(), st.integers(-(2**62), 2**62)),
    st.one_of(st.none(), st.sampled_from(["0", "1", "true", "false", "TRUE", "False"])),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=30), chunk_rows=st.integers(1, 7))
def test_property_csv_round_trip(tmp_path_factory, rows, chunk_rows):
    folder = tmp_path_factory.mktemp("prop")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["u", "i", "t", "p", "c", "r"])
    fields = []
    for u, i, t, p, c, r in rows:
        row = [u, str(i), str(t), "" if p is None else str(p), c or "", "" if r is None else repr(r)]
        writer.writerow(row)
        fields.append(row)
    (folder / "e.csv").write_text(buf.getvalue())
    adapter = generic("csv", folder, mapping=ColumnMapping(user_id="u", item_id="i", timestamp="t", play_time_ms="p",
                                                           rating="r", flags={"is_click": "c"}))  # fmt: skip
    got = pa.concat_tables(list(adapter.read_events(str(folder / "e.csv"), chunk_rows=chunk_rows)))
    assert got.column("record_key").to_pylist() == [record_key(f) for f in fields]
    assert got.column("user_id").to_pylist() == [r[0] for r in rows]
    assert got.column("item_id").to_pylist() == [str(r[1]) for r in rows]
    assert got.column("event_ts").to_pylist() == [dt.datetime.fromtimestamp(r[2], UTC) for r in rows]
    assert got.column("play_time_ms").to_pylist() == [r[3] for r in rows]
    assert got.column("is_click").to_pylist() == [None if r[4] is None else r[4].lower() in ("1", "true") for r in rows]
    assert got.column("rating").to_pylist() == [r[5] for r in rows]
    assert got.column("source_line").to_pylist() == list(range(1, len(rows) + 1))


def test_errors_come_out_in_file_order_while_chunks_are_converted_ahead(tmp_path):
    lines = [KR_HEADER, kr_line(), kr_line(), kr_line(play="x"), *[kr_line()] * 6, "1,2,3", kr_line()]
    (tmp_path / "log_a.csv").write_text("\n".join(lines) + "\n")
    adapter = kuairand(tmp_path)
    for chunk_rows in (1, 2, 4, 1000):
        with pytest.raises(SourceError, match=r"log_a\.csv: line 3: column 'play_time_ms'"):
            list(adapter.read_events(str(tmp_path / "log_a.csv"), chunk_rows=chunk_rows))
    (tmp_path / "log_a.csv").write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    with pytest.raises(SourceError, match=r"log_a\.csv: line 9: expected 19 fields, found 3"):
        list(adapter.read_events(str(tmp_path / "log_a.csv"), chunk_rows=2))
    # A consumer may stop early (the background conversions are cancelled or waited for).
    (tmp_path / "log_a.csv").write_text("\n".join([KR_HEADER, *[kr_line()] * 10]) + "\n")
    chunks = adapter.read_events(str(tmp_path / "log_a.csv"), chunk_rows=1)
    assert next(chunks).num_rows == 1
    chunks.close()
