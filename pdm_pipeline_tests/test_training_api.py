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

from pdm_pipeline.defs.launch import excluded_for, run_progress, server_client, submit_to_server

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
    env = dict(os.environ, DAGSTER_HOME=str(home), PDM_DATA_DIR=str(tiny_fleet_root))
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
            client = server_client(f"127.0.0.1:{port}")
        assert client is not None, "dagster-webserver did not answer within 120 s"
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


def test_no_server_means_no_client():
    assert server_client(f"127.0.0.1:{_free_port()}", timeout=0.5) is None


def test_models_option_maps_to_excluded_models():
    assert excluded_for(["classification", "anomaly"]) == ["regression", "timeseries"]
    assert excluded_for(None) == []
    with pytest.raises(ValueError, match="unknown model types"):
        excluded_for(["classifier"])


@pytest.mark.slow
def test_submit_queues_a_partitioned_run_and_status_reports_its_steps(webserver):
    client, instance = webserver
    run_id = submit_to_server(client, "motor_001", training={"excluded_models": ["timeseries"]})
    run = instance.get_run_by_id(run_id)
    assert run is not None and run.job_name == "train_machine"
    assert run.tags["dagster/partition"] == "motor_001"
    assert run.run_config["resources"]["training"]["config"]["excluded_models"] == ["timeseries"]
    progress = run_progress(instance, run_id)
    # No daemon runs here, so the queued run coordinator keeps it queued: nothing done yet, all steps known.
    assert progress["status"] == "QUEUED"
    assert progress["steps_done"] == 0 and progress["steps_total"] >= 14
    with pytest.raises(Exception, match="invalid machine id"):
        submit_to_server(client, "../etc")
