"""Launching a machine's training on a running Dagster webserver through its GraphQL API, and polling it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pdm_pipeline.defs.launch import PreQueueError, asset_selection, run_progress, server_client, submit_to_server

PROJECT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webserver(tmp_path, tiny_fleet_root):
    """dagster-webserver over a fresh instance (the project's dagster.yaml) in a temp home; no daemon, so runs queue."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    # PDM_TEST_*: values a run config reads with {env: VAR}, which Dagster resolves in the server's environment
    env = dict(os.environ, DAGSTER_HOME=str(home), PDM_DATA_DIR=str(tiny_fleet_root),
               PDM_TEST_MODEL="timeseries", PDM_TEST_BAD_MODEL="classifier")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-m", "pdm_pipeline.defs.definitions"],
        cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        client = None
        while client is None and time.time() < deadline:
            assert proc.poll() is None, "dagster-webserver exited"
            time.sleep(1)
            try:
                client = server_client(f"127.0.0.1:{port}")
            except PreQueueError:
                client = None
        assert client is not None, "dagster-webserver did not answer within 120 s"
        client.pdm_address = f"127.0.0.1:{port}"
        old = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(home)
        try:
            cwd = os.getcwd()
            os.chdir(home)  # the instance's storage paths are relative to the project root
            with dg.DagsterInstance.get() as instance:
                yield client, instance
        finally:
            os.chdir(cwd)
            if old is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = old
    finally:
        proc.terminate()
        proc.wait(timeout=30)


MACHINE_ASSETS = ["machine_dataset", "failure_labels", "machine_features", "failure_classifier",
                  "failure_classifier_evaluation", "rul_regressor", "rul_regressor_evaluation", "anomaly_detector",
                  "anomaly_detector_evaluation", "sensor_forecasts", "sensor_forecasts_evaluation", "machine_release"]
_LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
 ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
 ... on RunConfigValidationInvalid { errors { message } } ... on InvalidSubsetError { message } } }"""


def _launch(client, job: str, partition: str | None = None, run_config: dict | None = None,
            assets: list[str] | None = None) -> str:
    """launchRun as the UI sends it (the Materialize button is job __ASSET_JOB with an asset selection); the run id."""
    result = _launch_result(client, job, partition, run_config, assets)
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def _launch_result(client, job: str, partition: str | None = None, run_config: dict | None = None,
                   assets: list[str] | None = None) -> dict:
    import json
    import urllib.request

    selector = {"repositoryLocationName": client.pdm_location, "repositoryName": "__repository__", "pipelineName": job}
    if assets is not None:
        selector["assetSelection"] = [{"path": [a]} for a in assets]
    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {"selector": selector, "runConfigData": json.dumps(run_config or {}), "mode": "default",
              "executionMetadata": {"tags": tags}}
    request = urllib.request.Request(f"http://{client.pdm_address}/graphql", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"query": _LAUNCH, "variables": {"p": params}}).encode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # a PythonError comes back with status 500
        body = json.loads(exc.read())
    return body["data"]["launchRun"]


def _refusal(instance, run_id: str) -> str | None:
    """The coordinator's 'not queued: ...' message of a refused run (None when the run was queued)."""
    run = instance.get_run_by_id(run_id)
    if run.status.value == "QUEUED":
        return None
    assert run.status.value == "FAILURE", run.status
    failure = [e.message for e in instance.all_logs(run_id) if e.dagster_event
               and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
    assert failure and failure[0].startswith("not queued: "), failure
    return failure[0]


def test_no_server_is_an_error_not_a_silent_local_run():
    port = _free_port()
    with pytest.raises(PreQueueError, match=f"no Dagster webserver answers at http://127.0.0.1:{port}"):
        server_client(f"127.0.0.1:{port}", timeout=0.5)


def test_an_unidentified_server_is_refused(tmp_path):
    """Something answers on the port, but it is not a Dagster webserver serving pdm_pipeline."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        with pytest.raises(PreQueueError):
            server_client(f"127.0.0.1:{port}", timeout=2)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_models_option_selects_those_families_and_the_shared_steps():
    keys = {k.to_user_string() for k in asset_selection(["classification", "anomaly"])}
    assert keys == {"machine_dataset", "failure_labels", "machine_features", "machine_release", "failure_classifier",
                    "failure_classifier_evaluation", "anomaly_detector", "anomaly_detector_evaluation"}
    assert asset_selection(None) is None
    with pytest.raises(PreQueueError, match="unknown model types"):
        asset_selection(["classifier"])
    with pytest.raises(PreQueueError, match="names no model type"):
        asset_selection([])


@pytest.mark.slow
def test_submit_queues_a_partitioned_run_and_status_reports_its_steps(webserver):
    client, instance = webserver
    run_id = submit_to_server(client, "motor_001", training={"excluded_models": ["timeseries"]})
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.job_name == "train_machine"
    assert run.tags["dagster/partition"] == "motor_001" and run.tags["pdm/machine_id"] == "motor_001"
    assert run.run_config["resources"]["training"]["config"]["excluded_models"] == ["timeseries"]
    progress = run_progress(instance, run_id[:8])
    # No daemon runs here, so the queued run coordinator keeps it queued: nothing done yet, all steps known.
    assert progress["status"] == "QUEUED"
    assert progress["steps_done"] == 0 and progress["steps_total"] == 8


@pytest.mark.slow
def test_a_run_launched_with_only_its_partition_is_limited_per_machine_like_any_other(webserver):
    """GraphQL, the launchpad and backfills set only dagster/partition: the coordinator adds the pdm/machine_id tag
    that dagster.yaml limits to one run per machine (without it, two runs of one machine ran at once)."""
    client, instance = webserver
    run_id = client.submit_job_execution("train_machine", repository_location_name=client.pdm_location,
                                         tags={"dagster/partition": "pump_002", "pdm/machine_id": "motor_001"})
    run = instance.get_run_by_id(run_id)
    assert run.status.value == "QUEUED" and run.tags["pdm/machine_id"] == "pump_002"
    limits = yaml.safe_load((PROJECT / "dagster.yaml").read_text())["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "pdm/machine_id", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


@pytest.mark.slow
def test_invalid_requests_are_refused_before_anything_is_queued(webserver):
    """A bad setting word is refused by the launch itself; an unknown machine or a bad value is marked FAILED
    by the run coordinator with the same message as `validate`/`--set`, and never queued."""
    from dagster_graphql import DagsterGraphQLClientError

    client, instance = webserver
    with pytest.raises(DagsterGraphQLClientError, match="preset"):
        submit_to_server(client, "motor_001", training={"preset": "turbo"})
    for machine, training, words in (
        ("nope", None, "file not found"),
        ("motor_001", {"contamination": 0.9}, "contamination=0.9 must be in (0, 0.5)"),
    ):
        run_id = submit_to_server(client, machine, training=training)
        run = instance.get_run_by_id(run_id)
        assert run.status.value == "FAILURE", run.status
        failure = [e for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
        assert failure and words in failure[0].message and "not queued" in failure[0].message


def test_a_run_is_not_queued_on_a_full_disk_and_the_message_names_it(tiny_fleet_root, tmp_path, monkeypatch):
    """With the data root's disk (nearly) full, every entry point's check refuses the run, naming the directory
    and its free space (a run started there failed mid-way with an unrelated-looking database error)."""
    from collections import namedtuple

    from pdm_pipeline.core import paths
    from pdm_pipeline.defs.launch import check_request

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    check_request("motor_001", None, None, root=tiny_fleet_root)  # enough space: accepted
    real, usage = shutil.disk_usage, namedtuple("usage", "total used free")

    def full_at_home(path):
        return usage(10**9, 10**9 - 5 * 10**6, 5 * 10**6) if Path(path) == home else real(path)

    monkeypatch.setattr(shutil, "disk_usage", full_at_home)
    with pytest.raises(PreQueueError, match=rf"machine motor_001: not queued, too little free disk space at "
                                            rf"{home} \(5 MB free\).*needs at least 100 MB free"):
        check_request("motor_001", None, None, root=tiny_fleet_root)
    monkeypatch.setenv("PDM_MIN_FREE_MB", "2")  # a small volume: the floor is a setting
    check_request("motor_001", None, None, root=tiny_fleet_root)
    monkeypatch.delenv("PDM_MIN_FREE_MB")
    # a directory not made yet is judged by the disk it will be made on
    assert paths.free_space_problem(home / "data" / "not-yet") is not None
    assert paths.free_space_problem(tiny_fleet_root) is None


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_the_disk_check_looks_where_the_instance_writes(storage, tiny_fleet_root, tmp_path, monkeypatch):
    """The free-space check looked at DAGSTER_HOME, not where the instance writes: its storage, artifact and log
    directories, which dagster.yaml may put anywhere. With PostgreSQL storage there is no local database file:
    only the local directories are judged. PDM_MIN_FREE_MB stands for a full disk."""
    from pdm_pipeline.defs.instance_config import open_instance, render
    from pdm_pipeline.defs.launch import check_request

    home, disk = tmp_path / "home", tmp_path / "bigdisk"
    home.mkdir()
    url = "postgresql://pdm@127.0.0.1:5432/pdm_not_opened" if storage == "postgres" else None
    (home / "dagster.yaml").write_text(render(disk, postgres_url=url))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PDM_MIN_FREE_MB", "1e12")
    written = [disk / "artifacts", disk / "compute_logs"] + ([] if url else [disk / "storage"])

    def judge(**kwargs) -> None:
        with pytest.raises(PreQueueError, match="too little free disk space") as refused:
            check_request("motor_001", None, None, root=tiny_fleet_root, **kwargs)
        message = str(refused.value)
        assert all(f"{d} (" in message for d in written), message
        assert f"{home} (" not in message and (url is None or f"{disk / 'storage'}" not in message), message
        assert f"{tiny_fleet_root} (" in message  # the data root still is

    judge()  # the CLI's check before it opens the instance: DAGSTER_HOME's instance
    if url is None:
        with open_instance(home) as instance:  # the run coordinator's, the sensor's: the instance at hand
            judge(instance=instance)


def test_a_fleet_training_run_is_disk_checked_like_a_machines_run(tiny_fleet_root, tmp_path, monkeypatch):
    """train_fleet_models runs write pooled models and MLflow records but met no free-space check: queued through
    the run coordinator, or run without a queue (`pdm-pipeline fleet`, `dagster asset materialize`), they are now
    refused on a full disk (PDM_MIN_FREE_MB stands for it), naming the directories."""
    from dagster._core.run_coordinator import SubmitRunContext

    from pdm_pipeline.defs.assets.fleet import fleet_models
    from pdm_pipeline.defs.coordinator import refusal
    from pdm_pipeline.defs.definitions import defs
    from pdm_pipeline.defs.resources import DataRootResource, TrainingResource

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PDM_DATA_DIR", str(tiny_fleet_root))
    coordinator = {"module": "pdm_pipeline.defs.coordinator", "class": "ValidatingRunCoordinator"}
    with dg.instance_for_test(temp_dir=str(home), overrides={"run_coordinator": coordinator}) as instance:
        job = defs.resolve_job_def("train_fleet_models")

        run = instance.create_run_for_job(job_def=job)
        assert refusal(run) is None  # room on the disk: it may be queued
        monkeypatch.setenv("PDM_MIN_FREE_MB", "1e12")

        # without a queue: checked when the run starts, before any training
        result = dg.materialize([fleet_models], instance=instance, raise_on_error=False,
                                resources={"data_root": DataRootResource(), "training": TrainingResource()})
        assert not result.success
        errors = [str(getattr(e.event_specific_data, "error", "")) for e in result.all_events]
        assert any("fleet models: too little free disk space at" in e for e in errors), errors
        assert not (tiny_fleet_root / "fleets").exists()

        refused = instance.run_coordinator.submit_run(SubmitRunContext(run, None))  # type: ignore[arg-type]
        assert refused.status == dg.DagsterRunStatus.FAILURE and refused.tags.get("pdm/refused") == "true"
        reason = _refusal(instance, refused.run_id) or ""
        assert "fleet models: too little free disk space at" in reason and f"{home} (" in reason, reason


_RECORD_A_RUN = """
import dagster as dg

@dg.op
def hello():
    return 1

@dg.job
def hello_job():
    hello()

with dg.DagsterInstance.get() as instance:
    print(hello_job.execute_in_process(instance=instance).run_id)
"""


def test_the_cli_uses_dagster_homes_instance_from_any_working_directory(tmp_path, tiny_fleet_root):
    """The project's dagster.yaml names its directories relative to DAGSTER_HOME (.dagster_home/...), which Dagster
    reads against the working directory: `pdm-pipeline status` run elsewhere opened an empty instance there and
    found no run. A run recorded from the project's directory (as `make dev` records them) is now found from any
    directory, and nothing is created in the working directory."""
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), PDM_DATA_DIR=str(tiny_fleet_root))
    recorded = subprocess.run([sys.executable, "-c", _RECORD_A_RUN], cwd=home, env=env, capture_output=True,
                              text=True, timeout=120)
    assert recorded.returncode == 0, recorded.stderr
    run_id = recorded.stdout.strip().splitlines()[-1]
    assert (home / ".dagster_home" / "storage").is_dir()
    status = subprocess.run([str(Path(sys.executable).parent / "pdm-pipeline"), "status", run_id[:8]],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"run {run_id[:8]} (hello_job, machine None): SUCCESS" in status.stdout
    assert list(elsewhere.iterdir()) == []


def test_dagster_started_outside_its_home_refuses_to_launch_into_a_second_store(tmp_path, monkeypatch):
    """`dagster dev` or the daemon started from another directory read dagster.yaml's relative directories against
    it: sensors, schedules and the UI recorded runs in a second, empty store beside the project's. Every launch
    of such a process now fails naming both places (its run coordinator, which every launch goes through, will
    not start); from the home, or opened by the CLI from anywhere, the instance works as before."""
    from dagster._core.instance.ref import InstanceRef

    from pdm_pipeline.defs.coordinator import ValidatingRunCoordinator
    from pdm_pipeline.defs.instance_config import open_instance

    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.chdir(elsewhere)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        with pytest.raises(RuntimeError) as refused:
            instance.run_coordinator  # noqa: B018 (the property builds the coordinator)
    message = str(refused.value)
    assert f"working directory {elsewhere.resolve()}" in message
    assert str(elsewhere.resolve() / ".dagster_home" / "storage") in message and f"under {home.resolve()}" in message
    with open_instance(home) as instance:  # the CLI's way: directories made absolute against the home
        assert isinstance(instance.run_coordinator, ValidatingRunCoordinator)
    monkeypatch.chdir(home)
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert isinstance(instance.run_coordinator, ValidatingRunCoordinator)


@pytest.mark.slow
def test_every_job_meets_the_same_checks_and_the_one_run_per_machine_tag(webserver):
    """The UI's Materialize button and asset backfills run the implicit __ASSET_JOB, not train_machine: its runs
    were queued unchecked (bad data, horizon -5) and without the pdm/machine_id tag, so two full runs of one
    machine ran at once. train_fleet_models with a bad setting was queued too."""
    client, instance = webserver
    bad = {"resources": {"training": {"config": {"horizon": -5}}}}
    for job, assets in (("train_machine", None), ("__ASSET_JOB", MACHINE_ASSETS), ("__ASSET_JOB", ["failure_labels"])):
        refused = _refusal(instance, _launch(client, job, "motor_001", bad, assets))
        assert refused and "horizon=-5" in refused and "must be > 0" in refused, (job, assets)
        refused = _refusal(instance, _launch(client, job, "nope", None, assets))
        assert refused and "machine nope: not queued" in refused and "file not found" in refused, (job, assets)
    # a valid run of the asset job is queued with the tags of a train_machine run
    run_id = _launch(client, "__ASSET_JOB", "pump_002", None, MACHINE_ASSETS)
    assert _refusal(instance, run_id) is None
    tags = instance.get_run_by_id(run_id).tags
    assert tags["pdm/machine_id"] == "pump_002" and tags["dagster/max_retries"] == "1"
    # steps after machine_dataset without it (a first run: no re-execution) are refused, naming it: they failed in
    # their first step ('no stored output'), or read a dataset an earlier run stored, whatever became of it
    refused = _refusal(instance, _launch(client, "train_machine", "pump_002", None, ["machine_release"]))
    assert refused and "selects machine_release without machine_dataset" in refused
    # machine assets without a machine are refused, naming them
    refused = _refusal(instance, _launch(client, "__ASSET_JOB", None, None, ["machine_dataset"]))
    assert refused and "machine-partitioned assets (machine_dataset)" in refused and "dagster/partition" in refused
    # the fleet job has no partition: its settings are checked
    refused = _refusal(instance, _launch(client, "train_fleet_models", None, bad))
    assert refused and "horizon=-5" in refused and "must be > 0" in refused
    assert _refusal(instance, _launch(client, "train_fleet_models", None, {
        "resources": {"training": {"config": {"horizon": 24}}}})) is None


@pytest.mark.slow
def test_env_var_settings_are_checked_as_the_run_will_read_them(webserver):
    """{env: VAR} (Dagster's config source, offered by the launchpad for every field) reached the coordinator
    unresolved: data_dir {env: PDM_DATA_DIR} crashed launchRun with a TypeError and excluded_models [{env: VAR}]
    was refused as an unknown type whatever VAR held."""
    client, instance = webserver

    def launch(resources: dict) -> str:
        return _launch(client, "train_machine", "motor_001", {"resources": resources})

    assert _refusal(instance, launch({"data_root": {"config": {"data_dir": {"env": "PDM_DATA_DIR"}}}})) is None
    assert _refusal(instance, launch({"training": {"config": {"excluded_models": [{"env": "PDM_TEST_MODEL"}]}}})) is None
    refused = _refusal(instance, launch({"training": {"config": {"excluded_models": [{"env": "PDM_TEST_BAD_MODEL"}]}}}))
    assert refused and "excluded_models has unknown types ['classifier']" in refused
    # a variable the server does not have: Dagster's launch itself refuses it, naming it; no run is made
    runs = len(instance.get_run_records())
    result = _launch_result(client, "train_machine", "motor_001",
                            {"resources": {"data_root": {"config": {"data_dir": {"env": "PDM_TEST_UNSET"}}}}})
    assert result["__typename"] != "LaunchRunSuccess" and "PDM_TEST_UNSET" in result["message"], result
    assert len(instance.get_run_records()) == runs


@pytest.mark.slow
def test_status_of_a_refused_run_shows_why_and_exits_2(webserver, capsys):
    """`status` of a refused run said 'FAILURE, 0/8 steps done' and exited 1 (a step raised); no step ran, the
    reason was in the run's log only."""
    from pdm_pipeline.cli import main

    client, instance = webserver
    run_id = _launch(client, "train_machine", "pump_002", {"resources": {"training": {"config": {"horizon": -5}}}})
    progress = run_progress(instance, run_id)
    assert progress["refused"] and "horizon=-5.0 must be > 0" in progress["failure"]
    capsys.readouterr()
    assert main(["status", run_id[:8]]) == 2
    out = capsys.readouterr().out
    assert "REFUSED before queueing" in out and "horizon=-5.0 must be > 0" in out, out
    queued = submit_to_server(client, "motor_001")
    assert not run_progress(instance, queued)["refused"]


def test_status_of_a_failed_step_shows_its_error(dagster_instance, tiny_fleet_root, monkeypatch, capsys):
    """`status` named a failed step but never its error."""
    from pdm_pipeline.cli import _print_progress, _progress_exit
    from pdm_pipeline.defs.launch import materialize_machine

    monkeypatch.setenv("PDM_DATA_DIR", str(tiny_fleet_root))
    result = materialize_machine(dagster_instance, "absent_009", check=False, training={"excluded_models": [
        "classification", "regression", "anomaly", "timeseries"]}, log_level="ERROR")
    assert not result.success
    progress = run_progress(dagster_instance, result.run_id)
    assert not progress["refused"] and progress["failed"] == ["machine_dataset"]
    assert "absent_009" in progress["step_errors"]["machine_dataset"]
    capsys.readouterr()
    _print_progress(progress)
    out = capsys.readouterr().out
    assert f"machine_dataset: {progress['step_errors']['machine_dataset'].splitlines()[0]}" in out, out
    assert _progress_exit(progress) == 1


def test_a_re_execution_of_a_refused_run_is_a_first_run():
    """A re-execution reads what its parent stored, so it may leave machine_dataset out, unless the parent was
    refused (its copied tags say so): then nothing was stored, and the selection rule holds. (The copied
    pdm/refused tag also made `status` call the re-execution refused: the coordinator clears it on runs it passes.)"""
    from dagster._core.storage.dagster_run import DagsterRun

    from pdm_pipeline.defs.coordinator import REFUSED_TAG, _selection_problem

    def run(**kw) -> DagsterRun:
        return DagsterRun(job_name="__ASSET_JOB", asset_selection=frozenset({dg.AssetKey("machine_release")}), **kw)

    assert "without machine_dataset" in (_selection_problem(run()) or "")
    assert _selection_problem(run(parent_run_id="p", root_run_id="p")) is None
    refused_parent = run(parent_run_id="p", root_run_id="p", tags={REFUSED_TAG: "true"})
    assert "without machine_dataset" in (_selection_problem(refused_parent) or "")
