"""The Beam ingestion pipeline: source files to staged events and dead letters.

Stages (one Beam pipeline; DirectRunner by default, any Beam runner by configuration):

1. ``Create(files) | ParDo(ReadRecords)``: each file is read through its source adapter in
   bounded chunks (Arrow tables), validated against the event schema and the ingestion rules;
   good records go to the main output, bad ones to ``rejected`` with a reason code, and the
   number of records read per file to ``counts``. A file that cannot be read (empty,
   truncated, corrupt, unreadable) or that is a refused symbolic link is one dead letter of its
   own and counts as one record; the other files go on.
2. Occurrences (only with ``repeated_lines="distinct"``): records with the same raw text in
   the same file are grouped (``GroupByKey`` on ``(file, record_key)``) so the k-th repeat
   gets occurrence k, which enters its ``event_id`` (``features.events``). With
   ``"duplicate"`` (the default) every record has occurrence 0, so an exact repeat shares the
   id of its first copy.
3. De-duplication: records are grouped by ``event_id``; the first by ``(source_file,
   source_line)`` is accepted, the others become ``duplicate`` dead letters (the same record
   in overlapping files, and exact repeats within a file unless they are ``distinct``).
4. Accepted rows and dead letters are written as Parquet under the stage directory, with a
   ``counts.json`` of the run. The pipeline itself checks that
   ``records in = accepted + rejected + duplicates`` and fails the run if not.

The commit into the warehouse (merging with committed partitions, so re-runs add nothing) is
done by ``pipelines.ingest``. On a cluster runner (Flink, Spark, Dataflow) the stage directory
must be on a filesystem the workers share (docs/ingestion.md).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass


class _DropBeamImportNoise(logging.Filter):
    """Beam warns at import that Google Cloud client libraries are absent; recfeat needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_DropBeamImportNoise())

import apache_beam as beam  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from features.events import STAGED_EVENT_SCHEMA, check_repeated_lines, event_id  # noqa: E402
from features.rejections import REJECTED_RECORD_SCHEMA, Reason  # noqa: E402

ACCEPTED_SCHEMA = STAGED_EVENT_SCHEMA.append(pa.field("event_id", pa.string(), nullable=False))
COUNTS_FILE = "counts.json"


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


class ReadRecords(beam.DoFn):
    """File name -> staged Arrow tables (main), dead-letter tables and record counts (tagged)."""

    def __init__(self, name, config, rules, chunk_rows: int, now: dt.datetime | None, follow_symlinks: bool = False):
        self.name, self.config, self.rules, self.chunk_rows, self.now = name, config, rules, chunk_rows, now
        self.follow_symlinks = follow_symlinks

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
                yield conv.staged
            if conv.rejected.num_rows:
                yield beam.pvalue.TaggedOutput("rejected", conv.rejected)
        yield beam.pvalue.TaggedOutput("counts", (os.path.basename(file), records))


def _occurrence_keys(table: pa.Table):
    files = table.column("source_file").to_pylist()
    keys = table.column("record_key").to_pylist()
    lines = table.column("source_line").to_pylist()
    for f, k, line in zip(files, keys, lines):
        yield (f, k), line


def _repeats(kv):
    """((file, record_key), [lines]) -> ((file, line), occurrence) for every repeat (occ > 0)."""
    (file, _), lines = kv
    for occ, line in enumerate(sorted(lines)):
        if occ:
            yield (file, line), occ


def _with_event_ids(table: pa.Table, repeats: dict) -> pa.Table:
    sources = table.column("source").to_pylist()
    files = table.column("source_file").to_pylist()
    keys = table.column("record_key").to_pylist()
    lines = table.column("source_line").to_pylist()
    ids = [
        event_id(s, k, repeats.get((f, line), 0)) for s, f, k, line in zip(sources, files, keys, lines)
    ]
    return table.append_column(ACCEPTED_SCHEMA.field("event_id"), pa.array(ids, pa.string()))


def _id_locations(table: pa.Table):
    for eid, f, line in zip(
        table.column("event_id").to_pylist(), table.column("source_file").to_pylist(), table.column("source_line").to_pylist()
    ):
        yield eid, (f, line)


def _duplicates(kv):
    """(event_id, [(file, line)]) -> ((file, line), first (file, line)) for all but the first."""
    _, places = kv
    ordered = sorted(places)
    for place in ordered[1:]:
        yield place, ordered[0]


def _dup_mask(table: pa.Table, dups: dict) -> pa.Array:
    files = table.column("source_file").to_pylist()
    lines = table.column("source_line").to_pylist()
    return pa.array([(f, line) in dups for f, line in zip(files, lines)], pa.bool_())


def _accepted(table: pa.Table, dups: dict) -> pa.Table:
    if not dups:
        return table
    return table.filter(pc.invert(_dup_mask(table, dups)))


def _duplicate_rejections(table: pa.Table, dups: dict):
    if not dups:
        return
    mask = _dup_mask(table, dups)
    if not pc.any(mask).as_py():
        return
    rows = table.filter(mask)
    places = zip(rows.column("source_file").to_pylist(), rows.column("source_line").to_pylist())
    reasons = [duplicate_reason(f, *dups[(f, line)]) for f, line in places]
    raw = pc.replace_substring(rows.column("record_key"), "\x1f", ",")
    yield pa.table(
        {
            "source": rows.column("source"),
            "source_file": rows.column("source_file"),
            "source_line": rows.column("source_line"),
            "raw_record": raw,
            "reason_code": pa.array([Reason.DUPLICATE.value] * rows.num_rows, pa.string()),
            "reason": pa.array(reasons, pa.string()),
        }
    ).cast(REJECTED_RECORD_SCHEMA)


def duplicate_reason(source_file: str, first_file: str, first_line: int) -> str:
    """The message of a ``duplicate`` dead letter (both engines write the same text)."""
    if source_file == first_file:
        return f"exact repeat of line {first_line} of the same file"
    return f"same event_id as {first_file} line {first_line}"


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


def build_pipeline(
    p: beam.Pipeline, files: list[str], stage_dir: str, name, config, rules, chunk_rows: int, now=None,
    repeated_lines: str = "duplicate", follow_symlinks: bool = False,
):
    """Add the ingestion transforms to ``p`` (see the module docstring)."""
    read = (
        p
        | "Files" >> beam.Create(sorted(files))
        | "ReadAndValidate" >> beam.ParDo(ReadRecords(name, config, rules, chunk_rows, now, follow_symlinks)).with_outputs(
            "rejected", "counts", main="staged"
        )
    )
    staged = read.staged
    if check_repeated_lines(repeated_lines) == "distinct":
        repeats = (
            staged
            | "OccurrenceKeys" >> beam.FlatMap(_occurrence_keys)
            | "GroupRepeats" >> beam.GroupByKey()
            | "Occurrences" >> beam.FlatMap(_repeats)
        )
        with_ids = staged | "EventIds" >> beam.Map(_with_event_ids, repeats=beam.pvalue.AsDict(repeats))
    else:  # "duplicate": occurrence 0 for all, so exact repeats share an id and are de-duplicated below
        with_ids = staged | "EventIds" >> beam.Map(_with_event_ids, repeats={})
    dups = (
        with_ids
        | "IdLocations" >> beam.FlatMap(_id_locations)
        | "GroupIds" >> beam.GroupByKey()
        | "Duplicates" >> beam.FlatMap(_duplicates)
    )
    dup_side = beam.pvalue.AsDict(dups)
    accepted = with_ids | "DropDuplicates" >> beam.Map(_accepted, dups=dup_side)
    dup_rejected = with_ids | "DuplicateLetters" >> beam.FlatMap(_duplicate_rejections, dups=dup_side)
    rejected = (read.rejected, dup_rejected) | "AllRejected" >> beam.Flatten()

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


def pipeline_options(runner: str, extra_args: list[str] | None = None) -> PipelineOptions:
    """Options for ``runner``. ``DirectRunner`` runs Beam's in-process batch engine
    (FnApiRunner) directly, which skips the DirectRunner's attempt to download the Prism runner."""
    return PipelineOptions(list(extra_args or []), save_main_session=False)


def resolve_runner(runner: str):
    if runner in ("DirectRunner", "FnApiRunner"):
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
) -> StageCounts:
    """Run the pipeline over ``files`` into ``stage_dir``; raise if the counts do not balance.

    ``repeated_lines``: ``duplicate`` (exact repeats within a file are ``duplicate`` dead
    letters) or ``distinct`` (each is an event; see ``features.events``). ``follow_symlinks``:
    read files that are symbolic links (else each is a ``symlink_refused`` dead letter)."""
    check_repeated_lines(repeated_lines)
    os.makedirs(stage_dir, exist_ok=True)
    with beam.Pipeline(runner=resolve_runner(runner), options=pipeline_options(runner, runner_args)) as p:
        build_pipeline(p, files, stage_dir, name, config, rules, chunk_rows, now, repeated_lines, follow_symlinks)
    return StageCounts.read(stage_dir)
