"""Secrets reach Spark only from the environment, and never the run records of the instance."""
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from orchestration.cli import main
from orchestration.resources import SPARK_SECRET_ENV, SparkResource
from pipelines.settings import ConfigError, load_settings

SECRET = "wJalrXUtnFEMI-never-in-run-records-7f3a"
KEY_ID = "AKIA-never-in-run-records-19c2"


@pytest.mark.parametrize("key", [
    "spark.hadoop.fs.s3a.secret.key",
    "spark.hadoop.fs.s3a.access.key",
    "spark.hadoop.fs.s3a.session.token",
    "spark.ssl.keyStorePassword",
    "spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net",
])
def test_a_secret_in_spark_conf_is_refused_in_one_line(tmp_path, capsys, key):
    """Regression: S3 keys given in spark.conf were copied into the Spark resource's config,
    which Dagster stores with every run."""
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(f"spark:\n  conf:\n    {key}: {SECRET}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and SECRET not in message
    assert f"spark.conf: Value error, {key!r} looks like a secret" in message
    assert "environment variable" in message
    assert main(["--config", str(cfg), "tables"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recfeat: error: bad configuration") and SECRET not in err[0]


def test_settings_that_only_look_alike_load(tmp_path):
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(
        "spark:\n  conf:\n"
        "    spark.hadoop.fs.s3a.aws.credentials.provider: org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider\n"
        "    spark.hadoop.fs.s3a.endpoint: http://127.0.0.1:9000\n"
        "    spark.hadoop.fs.s3a.path.style.access: 'true'\n"
    )
    assert len(load_settings(cfg).spark.conf) == 3


def test_s3_credentials_come_from_the_environment_and_never_reach_the_run_records(spark, tmp_path, monkeypatch):
    """A materialization with the project's resources: Spark gets the keys, the instance never
    stores them (run config, job snapshot, event log, every file under $DAGSTER_HOME)."""
    from orchestration.definitions import build_definitions

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    cfg = tmp_path / "recfeat.yaml"
    cfg.write_text(
        f"warehouse: {{root: {tmp_path / 'warehouse'}}}\n"
        "spark: {master: 'local[2]', conf: {spark.hadoop.fs.s3a.endpoint: 'http://127.0.0.1:9'}}\n"
    )
    defs = build_definitions(load_settings(cfg), str(cfg))
    resource = defs.resources["spark"]
    assert isinstance(resource.s3_secret_access_key, dg.EnvVar)
    assert resource.s3_session_token is None  # unset variables stay unset

    @dg.asset
    def probe(context: dg.AssetExecutionContext, spark: SparkResource) -> dg.MaterializeResult:
        hadoop = spark.get_session().sparkContext._jsc.hadoopConfiguration()
        context.log.info("spark session ready")
        return dg.MaterializeResult(metadata={
            "secret_set": hadoop.get("fs.s3a.secret.key") == SECRET,
            "key_id_set": hadoop.get("fs.s3a.access.key") == KEY_ID,
        })

    instance = dg.DagsterInstance.get()
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    try:
        result = dg.materialize([probe], resources=defs.resources, instance=instance)
        assert result.success
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["secret_set"].value is True and meta["key_id_set"].value is True
    finally:
        for _, key in SPARK_SECRET_ENV.values():
            hadoop.unset(key)

    run = instance.get_run_by_id(result.run_id)
    records = [json.dumps(run.run_config, default=str)]
    records.append(dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
    records += [dg.serialize_value(r.event_log_entry) for r in instance.get_records_for_run(run.run_id).records]
    for text in records:
        assert SECRET not in text and KEY_ID not in text
    assert any("AWS_SECRET_ACCESS_KEY" in text for text in records)  # the reference, not the value
    home = Path(os.environ["DAGSTER_HOME"])
    leaked = [p for p in home.rglob("*") if p.is_file() and (SECRET.encode() in p.read_bytes() or KEY_ID.encode() in p.read_bytes())]
    assert not leaked
