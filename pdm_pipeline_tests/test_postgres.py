"""The Dagster instance and MLflow on the machine's PostgreSQL (one setting: PDM_POSTGRES_URL).

Four machines are queued at once on `dagster dev` over a fresh database with max_concurrent_runs 4: they run
together, and every run, step event, materialization, check result and MLflow run is recorded, with no lock error.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest
import yaml
from conftest import TINY_ROWS

from pdm_pipeline.core.postgres import InstanceConfigError, ensure_database, mlflow_url, parse_postgres_url
from pdm_pipeline.defs.devserver import DagsterDev
from pdm_pipeline.defs.instance_config import PROJECT_YAML, open_instance, render, write_instance
from pdm_pipeline.defs.launch import submit_to_server

MODELS = ["anomaly"]


def test_the_rendered_instance_differs_from_the_project_one_only_in_storage_and_paths(tmp_path):
    url = "postgresql://postgres@127.0.0.1:5432/pdm_fleet"
    rendered = yaml.safe_load(render(tmp_path, postgres_url=url, max_concurrent_runs=4))
    project = yaml.safe_load(PROJECT_YAML.read_text())
    assert rendered["storage"] == {"postgres": {"postgres_url": url.replace("postgresql:", "postgresql+psycopg2:")}}
    assert rendered["run_coordinator"] == project["run_coordinator"]
    assert rendered["run_monitoring"] == project["run_monitoring"]
    assert rendered["run_retries"] == project["run_retries"] == {"enabled": True, "max_retries": 0,
                                                                  "retry_on_asset_or_op_failure": False}
    assert rendered["concurrency"]["runs"]["tag_concurrency_limits"] == project["concurrency"]["runs"]["tag_concurrency_limits"]
    assert rendered["concurrency"]["runs"]["max_concurrent_runs"] == 4
    assert rendered["compute_logs"]["config"]["base_dir"].startswith(str(tmp_path))
    assert mlflow_url(url) == "postgresql+psycopg2://postgres@127.0.0.1:5432/pdm_fleet_mlflow"
    sqlite = yaml.safe_load(render(tmp_path))
    assert sqlite["storage"]["sqlite"]["base_dir"] == str(tmp_path.resolve() / "storage")


@pytest.mark.parametrize(("url", "words"), [
    ("mysql://root@localhost/db", "expected postgresql://"),
    ("postgresql://postgres@127.0.0.1:5432/bad-name", "must be letters, digits and underscores"),
    ("postgresql://postgres:secret@127.0.0.1:1/pdm", "unreachable"),
])
def test_unusable_postgres_urls_are_refused_naming_the_server_without_its_password(url, words):
    with pytest.raises(InstanceConfigError, match=words) as info:
        parse_postgres_url(url)
        ensure_database(url)
    assert "secret" not in str(info.value)


def test_pdm_postgres_url_alone_selects_mlflows_store_beside_the_instance(tmp_path, monkeypatch):
    from pdm_pipeline.core.tracking import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PDM_POSTGRES_URL", raising=False)
    assert default_tracking_uri(tmp_path).startswith("sqlite:///")
    for spelling in ("postgresql", "postgres"):  # both spellings the instance accepts
        monkeypatch.setenv("PDM_POSTGRES_URL", f"{spelling}://pdm@db.example:5432/fleet")
        assert default_tracking_uri(tmp_path) == "postgresql+psycopg2://pdm@db.example:5432/fleet_mlflow"
    monkeypatch.setenv("PDM_POSTGRES_URL", "postgresql://pdm@db.example:5432/fleet?sslmode=require")
    assert default_tracking_uri(tmp_path) == "postgresql+psycopg2://pdm@db.example:5432/fleet_mlflow?sslmode=require", (
        "the query (TLS, timeouts) follows the database, it is not glued before it")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri(tmp_path) == "http://mlflow.example:5000", "an explicit MLflow store wins"


def _open_experiment(tracking_uri: str) -> str:
    from pdm_pipeline.core.tracking import ensure_experiment

    return ensure_experiment(tracking_uri=tracking_uri, experiment="pdm-pipeline")


@pytest.mark.services
def test_four_processes_opening_a_new_mlflow_database_at_once_all_get_the_one_experiment(postgres_url):
    """The first processes of a fleet on a fresh PostgreSQL all open MLflow's empty database together; MLflow
    creates its schema on first use, and without a lock all but one fail (unique violation on alembic_version)."""
    import multiprocessing

    ensure_database(mlflow_url(postgres_url))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_open_experiment, [mlflow_url(postgres_url)] * 4)
    assert len(set(ids)) == 1, ids


@pytest.mark.slow
@pytest.mark.services
def test_four_machines_at_once_on_postgres_record_every_run_event_check_and_mlflow_run(postgres_url, tmp_path):
    from mlflow import MlflowClient

    from pdm_pipeline.core.simulate import simulate_fleet

    root = tmp_path / "data"
    machines = simulate_fleet(root, 4, seed=11, rows=TINY_ROWS)
    machines = [getattr(m, "machine_id", m) for m in machines]
    env = write_instance(tmp_path / "home", postgres_url=postgres_url, max_concurrent_runs=4)
    with DagsterDev(tmp_path / "home", root, env={"MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}) as dev:
        dev.stop_sensor("new_machine_data_sensor")
        run_ids = {m: submit_to_server(dev.client, m, models=MODELS, training={"time_limit_s": 5}) for m in machines}
        with open_instance(tmp_path / "home") as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            deadline = time.time() + 600
            while not all(instance.get_run_by_id(r).is_finished for r in run_ids.values()):
                assert time.time() < deadline, dev.log_tail()
                time.sleep(2)
            records = {r.dagster_run.run_id: r for r in instance.get_run_records()}
            log = dev.log_tail(10**7)
            for machine, run_id in run_ids.items():
                record = records[run_id]
                failures = [e.message for e in instance.all_logs(run_id, of_type={
                    dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE})]
                assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, (machine, failures, log[-3000:])
                materialized = {e.dagster_event.asset_key.to_user_string() for e in
                                instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)}
                assert {"machine_dataset", "failure_labels", "machine_features", "anomaly_detector",
                        "anomaly_detector_evaluation", "machine_release"} <= materialized, materialized
                checks = {e.dagster_event.event_specific_data.check_name for e in
                          instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}
                assert {"critical_sensors_complete", "distribution_shift", "label_balance", "pi_size_gate",
                        "pi_total_size_gate", "bundle_size_gate"} <= checks, checks
            # They ran together: the 4 runs overlapped (the queue let 4 start at once).
            starts = sorted(records[r].start_time for r in run_ids.values())
            ends = sorted(records[r].end_time for r in run_ids.values())
            assert starts[-1] < ends[0], "the four runs did not all run at the same time"
    assert not any(words in log for words in ("database is locked", "deadlock detected", "could not serialize"))

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("pdm-pipeline")
    for machine, run_id in run_ids.items():
        (parent,) = client.search_runs([experiment.experiment_id], f"tags.dagster_run_id = '{run_id}'")
        assert parent.info.status == "FINISHED" and parent.data.tags["machine_id"] == machine
        children = client.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{run_id}'")
        assert [c.data.tags["model_type"] for c in children] == ["anomaly"]
        assert all(c.info.status == "FINISHED" and c.data.metrics for c in children)
