"""Dialogue ingestion: JSON Lines dialogue logs to ``dialogue_turns``, their dead letters in
``rejected_dialogue_turns`` and the run's counts in ``dialogue_ingest_runs``.

The same machinery as event ingestion (docs/ingestion.md): a Beam pipeline (the runner of
``ingest.runner``, through :func:`pipelines.beam_ingest.resolve_runner`) stages accepted rows
and dead letters as Parquet in a locked stage directory of ingestion's own
(:mod:`pipelines.ingest.stage`), and checks ``records in = accepted + rejected + duplicates``
(:class:`~pipelines.beam_ingest.IngestBalanceError` otherwise); then the driver commits.

1. ``Create(files) | ParDo(ReadDialogueFile)``: each file through :func:`.source.read_file`
   (per-record rules, file-level letters); main output the turns, tagged ``rejected`` and
   ``counts`` (records read per file).
2. ``GroupByKey`` on ``dialogue_id`` and :func:`features.dialogues.resolve_dialogue` with the
   dialogue's committed turns: exact repeats are ``duplicate``, other content under the same
   ``(dialogue_id, turn_index)`` is ``conflicting_turn``, and turns that contradict their
   dialogue are ``inconsistent_dialogue``.
3. Commit, on the versions read at the start (``base_version``): accepted turns already
   committed (same content) are *already present*; new ones are added (the table is rewritten
   sorted by key, so the same input gives the same bytes); new dead letters (by
   ``rejection_id``) are added; the run's row is appended. The commit checks
   ``records_in = new_turns + already_present + rejected + duplicates`` first and commits
   nothing if it does not hold. A run with nothing new commits no ``dialogue_turns`` version.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from features.dialogues.contracts import DIALOGUE_INGEST_RUNS, DIALOGUE_TURNS, REJECTED_DIALOGUE_TURNS
from features.dialogues.records import Rejected, Turn, resolve_dialogue
from features.rejections import REJECTED_RECORD_SCHEMA, to_rejected_events
from pipelines.beam_ingest import COUNTS_FILE, IngestBalanceError, check_and_write_counts, pipeline_options, resolve_runner
from pipelines.dialogues.source import Limits, dialogue_files, read_file
from pipelines.ingest.stage import clean_stale_stage_dirs, new_stage_dir, stage_base

STAGED_TURN_SCHEMA = pa.schema([f for f in DIALOGUE_TURNS.schema if f.name not in ("source", "run_id")])


def turn_row(t: Turn) -> dict:
    return {
        "dialogue_id": t.dialogue_id, "turn_index": t.turn_index, "role": t.role, "text": t.text, "turn_ts": t.turn_ts,
        "user_id": t.user_id, "recommended_items": list(t.recommended_items), "accepted_items": list(t.accepted_items),
        "source_file": t.source_file, "source_line": t.source_line, "record_hash": t.record_hash,
    }


def turn_from_row(r: dict) -> Turn:
    ts = r["turn_ts"]
    ts = ts.replace(tzinfo=dt.timezone.utc) if ts.tzinfo is None else ts.astimezone(dt.timezone.utc)
    return Turn(r["dialogue_id"], int(r["turn_index"]), r["role"], r["text"], ts, r["user_id"],
                tuple(r["recommended_items"] or ()), tuple(r["accepted_items"] or ()), r["source_file"], int(r["source_line"]))


def letter_row(letter: Rejected, source: str) -> dict:
    return {"source": source, "source_file": letter.source_file, "source_line": letter.source_line,
            "raw_record": letter.raw_record, "reason_code": letter.reason_code, "reason": letter.reason}


class ReadDialogueFile(beam.DoFn):
    """File -> turns (main), dead letters (``rejected``), (file, records read) (``counts``)."""

    def __init__(self, limits: Limits, source: str, follow_symlinks: bool):
        self.limits, self.source, self.follow_symlinks = limits, source, follow_symlinks

    def process(self, path: str):
        n = 0
        for record in read_file(path, self.limits, self.follow_symlinks):
            n += 1
            if isinstance(record, Turn):
                yield record
            else:
                yield beam.pvalue.TaggedOutput("rejected", letter_row(record, self.source))
        yield beam.pvalue.TaggedOutput("counts", (os.path.basename(path), n))


def _resolve(kv, committed: dict, source: str):
    dialogue_id, turns = kv
    accepted, letters = resolve_dialogue(list(turns), committed.get(dialogue_id, []))
    for t in accepted:
        yield turn_row(t)
    for letter in letters:
        yield beam.pvalue.TaggedOutput("rejected", letter_row(letter, source))


def _one(_):
    return 1


def _reason(row):
    return row["reason_code"], 1


def build_pipeline(p, files: list[str], stage_dir: str, limits: Limits, source: str, committed: dict, follow_symlinks: bool = False):
    """Add the dialogue ingestion transforms to ``p`` (module docstring)."""
    read = (
        p
        | "Files" >> beam.Create(sorted(files))
        | "ReadAndValidate" >> beam.ParDo(ReadDialogueFile(limits, source, follow_symlinks)).with_outputs("rejected", "counts", main="turns")
    )
    resolved = (
        read.turns
        | "ByDialogue" >> beam.Map(lambda t: (t.dialogue_id, t))
        | "GroupDialogues" >> beam.GroupByKey()
        | "Resolve" >> beam.FlatMap(_resolve, committed=committed, source=source).with_outputs("rejected", main="accepted")
    )
    rejected = (read.rejected, resolved.rejected) | "AllRejected" >> beam.Flatten()
    resolved.accepted | "WriteAccepted" >> beam.io.parquetio.WriteToParquet(
        os.path.join(stage_dir, "accepted", "part"), schema=STAGED_TURN_SCHEMA, file_name_suffix=".parquet"
    )
    rejected | "WriteRejected" >> beam.io.parquetio.WriteToParquet(
        os.path.join(stage_dir, "rejected", "part"), schema=REJECTED_RECORD_SCHEMA, file_name_suffix=".parquet"
    )
    return (
        p
        | "Once" >> beam.Create([None])
        | "CheckBalance" >> beam.FlatMap(
            check_and_write_counts, stage_dir=stage_dir, counts=beam.pvalue.AsList(read.counts),
            accepted=beam.pvalue.AsList(resolved.accepted | "AcceptedOnes" >> beam.Map(_one)),
            rejected_by_reason=beam.pvalue.AsList(rejected | "Reasons" >> beam.Map(_reason) | "SumReasons" >> beam.CombinePerKey(sum)),
        )
    )


def _read_stage(folder: str, schema: pa.Schema) -> pa.Table:
    if not os.path.isdir(folder):
        return schema.empty_table()
    parts = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".parquet"))
    tables = [pq.read_table(f) for f in parts]
    tables = [t.cast(schema) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


@dataclass
class DialogueIngestResult:
    run_id: str
    records_in: int
    new_turns: int
    already_present: int
    rejected: int
    duplicates: int
    by_reason: dict[str, int]
    files: list[str]
    manifests: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.records_in:,} dialogue records: {self.new_turns:,} new turns, {self.already_present:,} already present, "
                f"{self.rejected:,} rejected, {self.duplicates:,} duplicates")


def _base(version: int | None) -> int:
    """``base_version`` of a commit on what was read at ``version`` (0: the table did not exist)."""
    return 0 if version is None else version


def _sorted(table: pa.Table, keys) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys]) if table.num_rows else table


def ingest_dialogues(
    warehouse,
    path: str,
    rules,
    source: str = "dialogues",
    run_id: str | None = None,
    runner: str = "DirectRunner",
    runner_args: list[str] | None = None,
    stage_root: str | None = None,
    follow_symlinks: bool = False,
    now: dt.datetime | None = None,
) -> DialogueIngestResult:
    """Ingest every dialogue file of ``path`` (module docstring); return the run's counts."""
    run_id = run_id or uuid.uuid4().hex[:12]
    started = dt.datetime.now(dt.timezone.utc)
    files = dialogue_files(path)
    limits = Limits.from_rules(rules, now)
    turns_version = warehouse.current_version(DIALOGUE_TURNS.name) if warehouse.exists(DIALOGUE_TURNS.name) else None
    committed_table = (warehouse.read_arrow(DIALOGUE_TURNS.name, version=turns_version)
                       if turns_version is not None else DIALOGUE_TURNS.schema.empty_table())
    committed: dict[str, list[Turn]] = {}
    for r in committed_table.to_pylist():
        committed.setdefault(r["dialogue_id"], []).append(turn_from_row(r))
    base, own = stage_base(warehouse, stage_root)
    clean_stale_stage_dirs(base, own)
    stage = new_stage_dir(base, run_id)
    try:
        with beam.Pipeline(runner=resolve_runner(runner), options=pipeline_options(runner, runner_args)) as p:
            build_pipeline(p, files, stage.path, limits, source, committed, follow_symlinks)
        with open(os.path.join(stage.path, COUNTS_FILE)) as fh:
            counts = json.load(fh)
        accepted = _read_stage(os.path.join(stage.path, "accepted"), STAGED_TURN_SCHEMA)
        letters = _read_stage(os.path.join(stage.path, "rejected"), REJECTED_RECORD_SCHEMA)
    finally:
        stage.remove()

    keys = set(zip(committed_table.column("dialogue_id").to_pylist(), committed_table.column("turn_index").to_pylist()))
    is_new = [k not in keys for k in zip(accepted.column("dialogue_id").to_pylist(), accepted.column("turn_index").to_pylist())]
    new = accepted.filter(pa.array(is_new, pa.bool_()))
    new = new.append_column("source", pa.array([source] * new.num_rows, pa.string()))
    new = new.append_column("run_id", pa.array([run_id] * new.num_rows, pa.string()))
    already = accepted.num_rows - new.num_rows
    if counts["accepted"] != accepted.num_rows or counts["records_in"] != new.num_rows + already + counts["rejected"] + counts["duplicates"]:
        raise IngestBalanceError(
            f"the stage accepted {counts['accepted']:,} records but the commit accounts for {accepted.num_rows:,} "
            f"({new.num_rows:,} new + {already:,} already present); nothing was committed"
        )
    result = DialogueIngestResult(run_id, counts["records_in"], new.num_rows, already, counts["rejected"], counts["duplicates"],
                                  dict(sorted(counts["by_reason"].items())), [os.path.basename(f) for f in files])
    producer = {"job": "ingest_dialogues", "source": source, "run_id": run_id}
    if new.num_rows or turns_version is None:
        table = _sorted(pa.concat_tables([DIALOGUE_TURNS.conform(committed_table), DIALOGUE_TURNS.conform(new)]), DIALOGUE_TURNS.key)
        result.manifests[DIALOGUE_TURNS.name] = warehouse.write_arrow(DIALOGUE_TURNS, table, producer=producer, base_version=_base(turns_version))
    else:
        result.manifests[DIALOGUE_TURNS.name] = warehouse.manifest(DIALOGUE_TURNS.name)

    at = dt.datetime.now(dt.timezone.utc)
    rows = to_rejected_events(letters, run_id, at)
    rej_version = warehouse.current_version(REJECTED_DIALOGUE_TURNS.name) if warehouse.exists(REJECTED_DIALOGUE_TURNS.name) else None
    old = warehouse.read_arrow(REJECTED_DIALOGUE_TURNS.name, version=rej_version) if rej_version is not None else REJECTED_DIALOGUE_TURNS.schema.empty_table()
    seen = set(old.column("rejection_id").to_pylist())
    fresh_ids, fresh_mask = set(), []
    for rid in rows.column("rejection_id").to_pylist():
        fresh_mask.append(rid not in seen and rid not in fresh_ids)
        fresh_ids.add(rid)
    fresh = rows.filter(pa.array(fresh_mask, pa.bool_()))
    if fresh.num_rows or rej_version is None:
        table = _sorted(pa.concat_tables([REJECTED_DIALOGUE_TURNS.conform(old), REJECTED_DIALOGUE_TURNS.conform(fresh)]), REJECTED_DIALOGUE_TURNS.key)
        result.manifests[REJECTED_DIALOGUE_TURNS.name] = warehouse.write_arrow(
            REJECTED_DIALOGUE_TURNS, table, producer=producer, base_version=_base(rej_version))
    else:
        result.manifests[REJECTED_DIALOGUE_TURNS.name] = warehouse.manifest(REJECTED_DIALOGUE_TURNS.name)

    run = {
        "run_id": run_id, "source": source, "started_at": started, "finished_at": dt.datetime.now(dt.timezone.utc),
        "files": len(files), "records_in": result.records_in, "new_turns": result.new_turns,
        "already_present": result.already_present, "rejected": result.rejected, "duplicates": result.duplicates,
        "counts_by_reason": json.dumps(result.by_reason, sort_keys=True),
        "turns_version": result.manifests[DIALOGUE_TURNS.name].version,
    }
    run_table = pa.Table.from_pylist([run], schema=DIALOGUE_INGEST_RUNS.schema)
    runs_version = warehouse.current_version(DIALOGUE_INGEST_RUNS.name) if warehouse.exists(DIALOGUE_INGEST_RUNS.name) else None
    if runs_version is not None:
        old_runs = warehouse.read_arrow(DIALOGUE_INGEST_RUNS.name, version=runs_version)
        run_table = pa.concat_tables([DIALOGUE_INGEST_RUNS.conform(old_runs), DIALOGUE_INGEST_RUNS.conform(run_table)])
    result.manifests[DIALOGUE_INGEST_RUNS.name] = warehouse.write_arrow(
        DIALOGUE_INGEST_RUNS, run_table, producer=producer, base_version=_base(runs_version))
    return result


def balance_holds(row: dict) -> bool:
    """``records_in = new_turns + already_present + rejected + duplicates`` for one run row."""
    return row["records_in"] == row["new_turns"] + row["already_present"] + row["rejected"] + row["duplicates"]
