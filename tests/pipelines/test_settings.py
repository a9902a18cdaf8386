"""Settings: defaults, file, environment overrides, and one-line errors naming the field."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recfeat.yaml"
    path.write_text(text)
    return path


def test_committed_default_file_matches_code_defaults(monkeypatch):
    from_file = load_settings(REPO / "recfeat.yaml")
    monkeypatch.chdir(REPO.parent)  # no recfeat.yaml there: pure code defaults
    from_code = load_settings()
    assert from_file.spark == from_code.spark
    assert from_file.synthetic == from_code.synthetic
    assert from_file.partitions == from_code.partitions
    assert from_file.rules == from_code.rules
    assert from_file.ingest_chunk_rows == from_code.ingest_chunk_rows
    assert from_file.ingest == from_code.ingest
    assert from_file.active_source == from_code.active_source
    assert from_file.quality.model_dump(exclude={"reports_dir"}) == from_code.quality.model_dump(exclude={"reports_dir"})
    assert Path(from_file.warehouse.root) == REPO / "var" / "warehouse"
    # Every catalogued family's section is in the file, with the code's defaults.
    from pipelines.catalog import families

    text = (REPO / "recfeat.yaml").read_text()
    for family in families():
        if family.params is None:
            continue
        assert f"\n{family.settings_key}:" in text, f"recfeat.yaml has no {family.settings_key}: section"
        assert getattr(from_file, family.settings_key) == getattr(from_code, family.settings_key), family.name


def test_relative_paths_resolve_against_the_file(tmp_path):
    cfg = write(tmp_path, "warehouse: {root: wh}\nsources: {s: {kind: kuairand, path: data}}\nactive_source: s\n")
    s = load_settings(cfg)
    assert s.warehouse.root == str(tmp_path / "wh")
    assert s.source.path == str(tmp_path / "data")


def test_uri_root_kept(tmp_path):
    s = load_settings(write(tmp_path, "warehouse: {root: 's3://bucket/recfeat'}\n"))
    assert s.warehouse.root == "s3://bucket/recfeat"


def test_environment_overrides(tmp_path):
    cfg = write(tmp_path, "warehouse: {root: wh}\n")
    s = load_settings(cfg, environ={"RECFEAT_WAREHOUSE": "/elsewhere", "RECFEAT_SPARK_MASTER": "spark://127.0.0.1:7077"})
    assert s.warehouse.root == "/elsewhere"
    assert s.spark.master == "spark://127.0.0.1:7077"


def test_cli_overrides_win(tmp_path):
    cfg = write(tmp_path, "warehouse: {root: wh}\n")
    s = load_settings(cfg, overrides={"warehouse.root": "/cli"}, environ={"RECFEAT_WAREHOUSE": "/env"})
    assert s.warehouse.root == "/cli"


@pytest.mark.parametrize(
    "text, field, words",
    [
        ("warehouse: {roots: x}\n", "warehouse.roots", "unknown key"),
        ("sparkk: {}\n", "sparkk", "unknown key"),
        ("spark: {shuffle_partitions: many}\n", "spark.shuffle_partitions", "integer"),
        ("spark: {master: localhost}\n", "spark.master", "not a Spark master URL"),
        ("synthetic: {events: 10}\n", "synthetic.events", "greater than or equal to 1000"),
        ("partitions: {start_date: 2022-04-10, end_date: 2022-04-01}\n", "partitions", "end_date must be after"),
        ("sources: {x: {kind: csv, path: a}}\nactive_source: x\n", "sources.x", "needs 'mapping'"),
        ("sources: {x: {kind: kuairand}}\nactive_source: x\n", "sources.x.path", "required field is missing"),
        ("sources: {x: {kind: avro, path: a}}\nactive_source: x\n", "sources.x.kind", "Input should be"),
        ("active_source: nope\n", "(top level)", "is not one of sources"),
        ("sequences: {split: temporal}\n", "sequences", "needs valid_from and test_from"),
        ("sequences: {max_len: 0}\n", "sequences.max_len", "greater than or equal to 1"),
        ("sources: {x: {kind: csv, path: a, time_zone: Mars/Base, mapping: {user_id: u, item_id: i, timestamp: t}}}\nactive_source: x\n", "sources.x.time_zone", "unknown time zone"),
        ("rules: {replay_factor: 0}\n", "rules.replay_factor", "greater than 0"),
        ("rules: {max_field_chars: many}\n", "rules.max_field_chars", "integer"),
        ("rules: {min_event_ts: 2022-01-01, max_event_ts: 2021-01-01}\n", "rules", "max_event_ts must be after"),
        ("rules: {colour: blue}\n", "rules.colour", "unknown key"),
        ("sources: {x: {kind: movielens, path: a, require_duration: true}}\nactive_source: x\n", "sources.x", "no durations"),
        ("sources: {x: {kind: csv, path: a, require_duration: true, mapping: {user_id: u, item_id: i, timestamp: t}}}\nactive_source: x\n", "sources.x", "needs mapping.duration_ms"),
        ("lookalike: {lsh: {auto_bands: true, recall_sample: 0}}\n", "lookalike.lsh", "auto_bands needs recall_sample > 0"),
        ("lookalike: {lsh: {auto_bands: true, bands: 64, max_bands: 32}}\n", "lookalike.lsh", "max_bands must be at least bands"),
        ("lookalike: {hnsw: {recall_sample: 0}}\n", "lookalike.hnsw", "auto_ef_search needs recall_sample > 0"),
        ("lookalike: {hnsw: {ef_search: 256, max_ef_search: 128}}\n", "lookalike.hnsw", "max_ef_search must be at least ef_search"),
        ("recall: {similarity: jaccard}\n", "recall.similarity", "Input should be"),
        ("recall: {fill: random}\n", "recall.fill", "Input should be"),
        ("lookalike: {recall_size: 10}\n", "lookalike", "lookalike.recall_size is now recall.size"),
        ("lookalike: {lsh_bands: 64}\n", "lookalike", "lookalike.lsh_bands is now lookalike.lsh.bands"),
        ("ingest: {repeated_lines: keep}\n", "ingest.repeated_lines", "Input should be 'duplicate' or 'distinct'"),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, field, words):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert f": {field}: " in message
    assert words in message


def test_rules_defaults_and_file_values(tmp_path):
    import datetime as dt

    rules = load_settings(write(tmp_path, "{}\n")).rules
    assert rules.replay_factor == 100.0 and rules.max_play_time_ms == 6 * 3600 * 1000
    assert rules.min_event_ts == dt.date(1995, 1, 1) and rules.max_event_ts is None
    assert rules.future_tolerance_s == 3600 and rules.max_field_chars == 4096
    s = load_settings(write(tmp_path, "rules: {replay_factor: 5, max_event_ts: 2030-01-01}\n"
                                      "sources: {k: {kind: kuairand, path: d, require_duration: false}}\nactive_source: k\n"))
    assert s.rules.replay_factor == 5.0 and s.rules.max_event_ts == dt.date(2030, 1, 1)
    assert s.source.require_duration is False


def test_repeated_lines_default_and_the_kuairand_config():
    # An exact repeat is a duplicate by default; configs/kuairand.yaml keeps the official runs'
    # counting (every log row an event) for parity with docs/results.md.
    assert load_settings(REPO / "recfeat.yaml").ingest.repeated_lines == "duplicate"
    assert load_settings(REPO / "configs" / "kuairand.yaml").ingest.repeated_lines == "distinct"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "warehouse: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(write(tmp_path, "- a list\n"))


def test_cli_reports_one_line_not_a_traceback(tmp_path):
    cfg = write(tmp_path, "warehouse: {root: wh, colour: blue}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "--config", str(cfg), "tables"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"recfeat: error: bad configuration in {cfg}: warehouse.colour: unknown key"
    ]
    assert "Traceback" not in proc.stderr
