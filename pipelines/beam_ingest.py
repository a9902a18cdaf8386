"""The Beam ingestion pipeline: source files to staged events and dead letters.

Stages (one Beam pipeline; DirectRunner by default, any Beam runner by configuration):

1. ``Create(files) | ParDo(ReadRecords)``: each file is read through its source adapter in
   bounded chunks (Arrow tables), validated against the event schema and the ingestion rules;
   bad records go to ``rejected`` with a reason code, and the number of records read per file
   to ``counts``. A file that cannot be read (empty, truncated, corrupt, unreadable) or that is
   a refused symbolic link is one dead letter of its own and counts as one record; the other
   files go on. Each good chunk gets its occurrence-0 ``event_id`` column and is split by
   *bucket* into ``(bucket, sub-table)`` elements: the bucket is a stable hash of the
   record's identity (the first 32 bits of its occurrence-0 ``event_id``, which depends only
   on ``(source, record_key)``) modulo ``buckets``. Every record that can share an
   occurrence group or an ``event_id`` with another one lands in the same bucket.
2. ``GroupByKey`` on the bucket: one element per bucket, thousands of records each; no
   per-record Beam element anywhere in the pipeline.
3. ``ParDo(ResolveBucket)``, vectorised (pyarrow/numpy) over the bucket's concatenated tables:
   * occurrences (only with ``repeated_lines="distinct"``): records with the same raw text in
     the same file are ranked in line order, so the k-th repeat gets occurrence k, which
     enters its ``event_id`` (``features.events``). With ``"duplicate"`` (the default) every
     record has occurrence 0, so an exact repeat shares the id of its first copy;
   * de-duplication: among the records sharing an ``event_id`` the first by
     ``(source_file, source_line)`` is accepted, the others become ``duplicate`` dead letters
     (the same record in overlapping files, and exact repeats within a file unless they are
     ``distinct``) naming that first record.
   Accepted rows go to the main output, duplicate letters to ``rejected``: no side inputs.
4. Accepted rows and dead letters are written as Parquet under the stage directory, with a
   ``counts.json`` of the run. The pipeline itself checks that
   ``records in = accepted + rejected + duplicates`` and fails the run if not.

The result does not depend on ``buckets`` or on the number of workers (the order of rows in
the Parquet files does). Two records with different ``(source, record_key, occurrence)`` whose
96-bit ids collide (below 1e-10 at 10^8 events, ``features.events``) would be told apart here
when they fall in different buckets.

The commit into the warehouse (merging with committed partitions, so re-runs add nothing) is
done by ``pipelines.ingest``. On a cluster runner (Flink, Spark, Dataflow) the stage directory
must be on a filesystem the workers share (docs/ingestion.md).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import typing
from dataclasses import dataclass


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that Google Cloud client libraries are absent; recfeat needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_DropBeamImportNoise())

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.ipc as ipc  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from features.events import (  # noqa: E402
    EVENT_ID_HEX_CHARS,
    ID_SEPARATOR,
    STAGED_EVENT_SCHEMA,
    check_repeated_lines,
    event_id,
)
from features.rejections import REJECTED_RECORD_SCHEMA, Reason  # noqa: E402

ACCEPTED_SCHEMA = STAGED_EVENT_SCHEMA.append(pa.field("event_id", pa.string(), nullable=False))
COUNTS_FILE = "counts.json"
#: Buckets per DirectRunner worker when ``buckets`` is not given (see :func:`default_buckets`).
BUCKETS_PER_WORKER = 4
#: Buckets when none are configured and the runner is not the DirectRunner (Flink, Spark,
#: Dataflow): the bucket is the unit of parallelism and of memory (a worker holds one bucket's
#: records, about run size / buckets), so a cluster gets many.
DISTRIBUTED_BUCKETS = 256
#: How the in-process DirectRunner (Beam's FnApiRunner) runs its workers: ``in_memory`` (one
#: worker in this process), ``multi_threading`` (threads), ``multi_processing`` (processes).
DIRECT_RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")
_DIRECT_RUNNERS = ("DirectRunner", "FnApiRunner")


class IngestBalanceError(RuntimeError):
    """records in != accepted + rejected + duplicates: the run lost or invented records."""


@dataclass(frozen=True)
class StageCounts:
    """What one pipeline run read and routed."""

    records_in: int
    accepted: int
    rejected: int
    duplicates: int
    by_reason: dict[str, int]
    by_file: dict[str, int]

    @classmethod
    def read(cls, stage_dir: str) -> "StageCounts":
        with open(os.path.join(stage_dir, COUNTS_FILE)) as fh:
            return cls(**json.load(fh))


# ---- event ids and buckets (vectorised where Arrow can, one sha256 call per record else) ------


def occurrence0_ids(table: pa.Table) -> pa.Array:
    """The ``event_id`` of every staged row at occurrence 0 (``features.events.event_id``)."""
    text = pc.binary_join_element_wise(
        table.column("source"), table.column("record_key"), pa.scalar("0"), ID_SEPARATOR
    ).cast(pa.binary())  # fmt: skip
    sha = hashlib.sha256
    return pa.array([sha(b).hexdigest()[:EVENT_ID_HEX_CHARS] for b in text.to_pylist()], pa.string())


_HEX_VALUE = np.zeros(256, np.uint32)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i


def id_buckets(ids: pa.Array, buckets: int) -> np.ndarray:
    """``int(id[:8], 16) % buckets`` for every id (lower-case hex, at least 8 chars), vectorised.

    Stable across processes and machines (unlike Python's ``hash`` of a string), so every
    worker puts a given id in the same bucket."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64)
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset : ids.offset + n]
    data = np.frombuffer(ids.buffers()[2], np.uint8)
    digits = _HEX_VALUE[data[offsets[:, None] + np.arange(8)]]
    value = np.zeros(n, np.uint64)
    for j in range(8):
        value = (value << np.uint64(4)) | digits[:, j].astype(np.uint64)
    return (value % np.uint64(buckets)).astype(np.int64)


#: Columns with one or a few values per chunk (the source, its file), dictionary-encoded while
#: they travel through the shuffle: a fifth fewer bytes to copy.
_SHUFFLE_DICTIONARY_COLUMNS = ("source", "source_file")


def for_shuffle(table: pa.Table) -> pa.Table:
    """``table`` with :data:`_SHUFFLE_DICTIONARY_COLUMNS` dictionary-encoded (:func:`from_shuffle` undoes it)."""
    for name in _SHUFFLE_DICTIONARY_COLUMNS:
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.dictionary_encode(table.column(name)))
    return table


def from_shuffle(table: pa.Table) -> pa.Table:
    """A table of :func:`for_shuffle` back in :data:`ACCEPTED_SCHEMA`."""
    return table.cast(ACCEPTED_SCHEMA)


def split_by_bucket(table: pa.Table, buckets: int):
    """``(bucket, sub-table)`` for every non-empty bucket of ``table`` (the columns of
    ACCEPTED_SCHEMA; its bucket: :func:`id_buckets` of ``event_id``)."""
    if buckets == 1:
        yield 0, table
        return
    b = id_buckets(table.column("event_id"), buckets)
    order = np.argsort(b, kind="stable")
    sorted_b = b[order]
    cuts = np.flatnonzero(np.diff(sorted_b)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(order)]])
    for s, e in zip(starts, ends):
        # ``take`` (not a slice of one sorted table): each element owns compact buffers, since
        # a runner that pickles it (without ArrowTableCoder) would carry a slice's whole parent
        # buffers with it.
        yield int(sorted_b[s]), table.take(pa.array(order[s:e]))


def _group_starts(sorted_codes: np.ndarray) -> np.ndarray:
    """For each position of a sorted code array, the position where its run of equal codes starts."""
    n = len(sorted_codes)
    starts = np.ones(n, bool)
    starts[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return np.maximum.accumulate(np.where(starts, np.arange(n), 0))


def _codes(column) -> np.ndarray:
    """Dense int64 codes of a column's values (equal values, equal codes)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(pc.dictionary_encode(arr).indices, dtype=np.int64)


def with_occurrences(table: pa.Table) -> pa.Table:
    """``repeated_lines="distinct"``: the k-th record (line order) with a given ``record_key``
    in a file gets occurrence k in its ``event_id``; the others keep their occurrence-0 id.

    ``table`` holds every record of the run with the keys it contains (one bucket)."""
    n = table.num_rows
    if n < 2:
        return table
    keys = _codes(table.column("record_key"))
    files = _codes(table.column("source_file"))
    group = files * (int(keys.max()) + 1) + keys
    lines = np.asarray(table.column("source_line").to_numpy())
    order = np.lexsort((lines, group))
    occ_sorted = np.arange(n) - _group_starts(group[order])
    occ = np.empty(n, np.int64)
    occ[order] = occ_sorted
    repeats = np.flatnonzero(occ > 0)
    if not len(repeats):
        return table
    idx = pa.array(repeats)
    sources = table.column("source").take(idx).to_pylist()
    rkeys = table.column("record_key").take(idx).to_pylist()
    new = pa.array([event_id(s, k, int(o)) for s, k, o in zip(sources, rkeys, occ[repeats])], pa.string())
    mask = np.zeros(n, bool)
    mask[repeats] = True
    ids = pc.replace_with_mask(table.column("event_id").combine_chunks(), pa.array(mask), new)
    return table.set_column(table.schema.get_field_index("event_id"), ACCEPTED_SCHEMA.field("event_id"), ids)


def deduplicate(table: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    """``(accepted, duplicate letters)`` of one bucket (an ACCEPTED_SCHEMA table).

    Among the records sharing an ``event_id`` the first by ``(source_file, source_line)`` is
    accepted; each other one is a ``duplicate`` dead letter whose reason names that first
    record (:func:`duplicate_reason`). Accepted rows keep their input order; letters are
    ordered by ``(event_id, source_file, source_line)``. ``None``: no duplicates."""
    n = table.num_rows
    if n < 2:
        return table, None
    codes = _codes(table.column("event_id"))
    counts = np.bincount(codes)
    shared = np.flatnonzero(counts[codes] > 1)
    if not len(shared):
        return table, None
    sub = table.take(pa.array(shared))
    order = pc.sort_indices(
        sub, sort_keys=[("event_id", "ascending"), ("source_file", "ascending"), ("source_line", "ascending")]
    ).to_numpy()
    firsts = _group_starts(codes[shared][order])
    is_first = firsts == np.arange(len(order))
    keep = np.ones(n, bool)
    keep[shared[order[~is_first]]] = False
    accepted = table.filter(pa.array(keep))

    dup_rows = order[~is_first]
    first_rows = order[firsts[~is_first]]
    rows = sub.take(pa.array(dup_rows))
    first_files = sub.column("source_file").take(pa.array(first_rows)).to_pylist()
    first_lines = sub.column("source_line").take(pa.array(first_rows)).to_pylist()
    reasons = [
        duplicate_reason(f, ff, fl) for f, ff, fl in zip(rows.column("source_file").to_pylist(), first_files, first_lines)
    ]
    return accepted, duplicate_letters(rows, reasons)


def duplicate_letters(rows: pa.Table, reasons: list[str]) -> pa.Table:
    """``duplicate`` dead letters (REJECTED_RECORD_SCHEMA) for staged ``rows`` and their reasons."""
    return pa.table(
        {
            "source": rows.column("source"),
            "source_file": rows.column("source_file"),
            "source_line": rows.column("source_line"),
            "raw_record": pc.replace_substring(rows.column("record_key"), ID_SEPARATOR, ","),
            "reason_code": pa.array([Reason.DUPLICATE.value] * rows.num_rows, pa.string()),
            "reason": pa.array(reasons, pa.string()),
        }
    ).cast(REJECTED_RECORD_SCHEMA)


def duplicate_reason(source_file: str, first_file: str, first_line: int) -> str:
    """The message of a ``duplicate`` dead letter (both engines write the same text)."""
    if source_file == first_file:
        return f"exact repeat of line {first_line} of the same file"
    return f"same event_id as {first_file} line {first_line}"


# ---- the transforms ------------------------------------------------------------------------


#: LZ4-compressed buffers: the shuffle's bytes shrink about 1.8 times (synthetic KuaiRand
#: rows), which the DirectRunner copies several times and holds in memory, for less CPU than
#: those copies cost.
_IPC_OPTIONS = ipc.IpcWriteOptions(compression="lz4")


class ArrowTableCoder(beam.coders.Coder):
    """Arrow tables as (LZ4-compressed) Arrow IPC streams, for the shuffle: one pass to encode
    and one to decode, where pickling copies each buffer several times each way."""

    def encode(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.Table:
        return ipc.open_stream(pa.py_buffer(encoded)).read_all()

    def estimate_size(self, table: pa.Table) -> int:
        # Beam sizes every element for its metrics; the default would encode it once more.
        return table.nbytes

    def is_deterministic(self) -> bool:
        return False  # a value coder only; tables are never keys

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)



class ReadRecords(beam.DoFn):
    """File name -> ``(bucket, staged Arrow table with occurrence-0 ids)`` (main), dead-letter
    tables and ``(file, records)`` counts (tagged)."""

    def __init__(
        self, name, config, rules, chunk_rows: int, now: dt.datetime | None, follow_symlinks: bool = False,
        buckets: int = 1,
    ):  # fmt: skip
        self.name, self.config, self.rules, self.chunk_rows, self.now = name, config, rules, chunk_rows, now
        self.follow_symlinks, self.buckets = follow_symlinks, buckets

    def setup(self):
        from pipelines.sources import adapter_for

        self.adapter = adapter_for(self.name, self.config)

    def process(self, file: str):
        records = 0
        convs = self.adapter.read_records(
            file, self.rules, chunk_rows=self.chunk_rows, now=self.now,
            on_file_error="reject", follow_symlinks=self.follow_symlinks,
        )  # fmt: skip
        for conv in convs:
            records += conv.records
            if conv.staged.num_rows:
                staged = conv.staged.append_column(ACCEPTED_SCHEMA.field("event_id"), occurrence0_ids(conv.staged))
                yield from split_by_bucket(for_shuffle(staged), self.buckets)
            if conv.rejected.num_rows:
                yield beam.pvalue.TaggedOutput("rejected", conv.rejected)
        yield beam.pvalue.TaggedOutput("counts", (os.path.basename(file), records))


class ResolveBucket(beam.DoFn):
    """``(bucket, [tables])`` -> the bucket's accepted rows (main) and ``duplicate`` letters (tagged)."""

    def __init__(self, repeated_lines: str):
        self.distinct = check_repeated_lines(repeated_lines) == "distinct"

    def process(self, kv):
        _, tables = kv
        # Chunked (no copy of the rows); the helpers combine only the columns they encode.
        table = pa.concat_tables([from_shuffle(t) for t in tables])
        if self.distinct:
            table = with_occurrences(table)
        accepted, letters = deduplicate(table)
        if accepted.num_rows:
            yield accepted
        if letters is not None:
            yield beam.pvalue.TaggedOutput("rejected", letters)


def _rows(table: pa.Table) -> int:
    return table.num_rows


def _reason_counts(table: pa.Table):
    counts = table.group_by("reason_code").aggregate([("reason_code", "count")])
    for code, n in zip(counts.column("reason_code").to_pylist(), counts.column("reason_code_count").to_pylist()):
        yield code, n


def check_and_write_counts(_, stage_dir, counts, accepted, rejected_by_reason):
    """The run's balance from its side outputs, written to ``<stage_dir>/counts.json``.

    ``counts``: ``(file, records)`` pairs; ``accepted``: ones; ``rejected_by_reason``: ``(code,
    n)`` pairs (``duplicate`` among them). Raises :class:`IngestBalanceError` unless records in =
    accepted + rejected + duplicates. Used by every Beam ingestion (events, dialogues).
    """
    by_file = dict(counts)
    by_reason = dict(rejected_by_reason)
    records_in = sum(by_file.values())
    duplicates = by_reason.get(Reason.DUPLICATE.value, 0)
    rejected = sum(by_reason.values()) - duplicates
    accepted = sum(accepted)
    result = StageCounts(records_in, accepted, rejected, duplicates, by_reason, by_file)
    with open(os.path.join(stage_dir, COUNTS_FILE), "w") as fh:
        json.dump(result.__dict__, fh, sort_keys=True)
    if records_in != accepted + rejected + duplicates:
        raise IngestBalanceError(
            f"records in {records_in:,} != accepted {accepted:,} + rejected {rejected:,} + duplicates {duplicates:,}"
        )
    yield result


def default_buckets(num_workers: int = 1) -> int:
    """Buckets of the de-duplication shuffle when none are configured: a few per worker (0
    workers: one per CPU, as Beam reads it), so every worker gets several."""
    workers = num_workers or os.cpu_count() or 1
    return BUCKETS_PER_WORKER * workers


def check_buckets(buckets: int) -> int:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"ingest.buckets must be a whole number >= 1, not {buckets!r}")
    return buckets


def build_pipeline(
    p: beam.Pipeline, files: list[str], stage_dir: str, name, config, rules, chunk_rows: int, now=None,
    repeated_lines: str = "duplicate", follow_symlinks: bool = False, buckets: int | None = None,
):  # fmt: skip
    """Add the ingestion transforms to ``p`` (see the module docstring). ``buckets``: the
    number of keys of the shuffle (default :func:`default_buckets` for one worker)."""
    buckets = check_buckets(default_buckets() if buckets is None else buckets)
    read = (
        p
        | "Files" >> beam.Create(sorted(files))
        | "ReadAndValidate"
        >> beam.ParDo(ReadRecords(name, config, rules, chunk_rows, now, follow_symlinks, buckets))
        .with_output_types(typing.Tuple[int, pa.Table])
        .with_outputs("rejected", "counts", main="staged")
    )
    resolved = (
        read.staged
        | "GroupBuckets" >> beam.GroupByKey()
        | "OccurrencesAndDuplicates"
        >> beam.ParDo(ResolveBucket(repeated_lines)).with_output_types(pa.Table).with_outputs("rejected", main="accepted")
    )
    accepted = resolved.accepted
    rejected = (read.rejected, resolved.rejected) | "AllRejected" >> beam.Flatten()

    accepted | "WriteAccepted" >> beam.io.parquetio.WriteToParquetBatched(
        os.path.join(stage_dir, "accepted", "part"), schema=ACCEPTED_SCHEMA, file_name_suffix=".parquet"
    )
    rejected | "WriteRejected" >> beam.io.parquetio.WriteToParquetBatched(
        os.path.join(stage_dir, "rejected", "part"), schema=REJECTED_RECORD_SCHEMA, file_name_suffix=".parquet"
    )
    accepted_rows = accepted | "AcceptedRows" >> beam.Map(_rows)
    by_reason = rejected | "ReasonCounts" >> beam.FlatMap(_reason_counts) | "SumReasons" >> beam.CombinePerKey(sum)
    return (
        p
        | "Once" >> beam.Create([None])
        | "CheckBalance"
        >> beam.FlatMap(
            check_and_write_counts,
            stage_dir=stage_dir,
            counts=beam.pvalue.AsList(read.counts),
            accepted=beam.pvalue.AsList(accepted_rows),
            rejected_by_reason=beam.pvalue.AsList(by_reason),
        )
    )


def check_direct_workers(num_workers: int, running_mode: str) -> None:
    """``ValueError`` naming the setting unless ``(num_workers, running_mode)`` is a valid
    DirectRunner configuration: ``in_memory`` runs exactly one worker."""
    if running_mode not in DIRECT_RUNNING_MODES:
        raise ValueError(f"ingest.direct_running_mode must be one of {', '.join(DIRECT_RUNNING_MODES)}, not {running_mode!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"ingest.direct_num_workers must be a whole number >= 0 (0: one per CPU), not {num_workers!r}")
    if running_mode == "in_memory" and num_workers != 1:
        raise ValueError(
            f"ingest.direct_num_workers: {num_workers} needs ingest.direct_running_mode multi_processing or "
            "multi_threading (in_memory runs one worker)"
        )


def pipeline_options(
    runner: str, extra_args: list[str] | None = None, num_workers: int | None = None, running_mode: str | None = None,
) -> PipelineOptions:  # fmt: skip
    """Options for ``runner``. ``DirectRunner`` runs Beam's in-process batch engine
    (FnApiRunner) directly, which skips the DirectRunner's attempt to download the Prism runner.

    ``num_workers`` / ``running_mode`` (DirectRunner only; ignored by other runners): Beam's
    ``--direct_num_workers`` / ``--direct_running_mode``, added unless ``extra_args`` set them."""
    args = list(extra_args or [])
    if runner in _DIRECT_RUNNERS:
        given = set(_runner_arg_values(args))
        if num_workers is not None and "--direct_num_workers" not in given:
            args.append(f"--direct_num_workers={num_workers}")
        if running_mode is not None and "--direct_running_mode" not in given:
            args.append(f"--direct_running_mode={running_mode}")
    return PipelineOptions(args, save_main_session=False)


def _runner_arg_values(args: list[str] | None) -> dict[str, str]:
    """``--name=value`` and ``--name value`` pairs of ``ingest.runner_args``."""
    out: dict[str, str] = {}
    args = list(args or [])
    for i, a in enumerate(args):
        if not a.startswith("--"):
            continue
        if "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[a] = args[i + 1]
    return out


def resolve_runner(runner: str):
    if runner in _DIRECT_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return runner


def run_stage(
    files: list[str],
    stage_dir: str,
    name: str,
    config,
    rules,
    chunk_rows: int = 500_000,
    runner: str = "DirectRunner",
    runner_args: list[str] | None = None,
    now: dt.datetime | None = None,
    repeated_lines: str = "duplicate",
    follow_symlinks: bool = False,
    buckets: int | None = None,
    direct_num_workers: int = 1,
    direct_running_mode: str = "in_memory",
) -> StageCounts:
    """Run the pipeline over ``files`` into ``stage_dir``; raise if the counts do not balance.

    ``repeated_lines``: ``duplicate`` (exact repeats within a file are ``duplicate`` dead
    letters) or ``distinct`` (each is an event; see ``features.events``). ``follow_symlinks``:
    read files that are symbolic links (else each is a ``symlink_refused`` dead letter).
    ``buckets``: keys of the de-duplication shuffle (default: :func:`default_buckets` of the
    DirectRunner's worker count, :data:`DISTRIBUTED_BUCKETS` on any other runner);
    ``direct_num_workers`` / ``direct_running_mode``: the DirectRunner's workers
    (:func:`check_direct_workers`; the same flags in ``runner_args`` win, and are what is
    checked). None of the three changes the result."""
    check_repeated_lines(repeated_lines)
    direct = runner in _DIRECT_RUNNERS
    if direct:
        # what Beam will run: --direct_num_workers / --direct_running_mode in runner_args win
        given = _runner_arg_values(runner_args)
        if "--direct_num_workers" in given:
            try:
                direct_num_workers = int(given["--direct_num_workers"])
            except ValueError:
                raise ValueError(f"ingest.runner_args: --direct_num_workers={given['--direct_num_workers']!r} "
                                 "is not a whole number") from None
        direct_running_mode = given.get("--direct_running_mode", direct_running_mode)
        check_direct_workers(direct_num_workers, direct_running_mode)
        if direct_running_mode == "multi_threading":
            logging.getLogger(__name__).warning(
                "ingest.direct_running_mode multi_threading: one 1M-event benchmark run grew to 13.5 GiB resident "
                "(docs/benchmarks.md); in_memory or multi_processing are the measured modes")
    if buckets is None:
        buckets = default_buckets(direct_num_workers) if direct else DISTRIBUTED_BUCKETS
    buckets = check_buckets(buckets)
    os.makedirs(stage_dir, exist_ok=True)
    options = pipeline_options(runner, runner_args, direct_num_workers if direct else None,
                               direct_running_mode if direct else None)
    with beam.Pipeline(runner=resolve_runner(runner), options=options) as p:
        build_pipeline(p, files, stage_dir, name, config, rules, chunk_rows, now, repeated_lines, follow_symlinks, buckets)
    return StageCounts.read(stage_dir)
