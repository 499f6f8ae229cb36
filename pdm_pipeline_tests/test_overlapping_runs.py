"""Two requests for one machine at the same time, on a real `dagster dev` (webserver, daemon, run queue).

The project's dagster.yaml limits runs per `pdm/machine_id` to one: the second request waits in the queue until
the first has ended, and each run publishes its own models with its own metrics (run-scoped staging and step
outputs), never the other's.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from test_crash_recovery import write_home

from pdm_pipeline.core import keys
from pdm_pipeline.core.release import read_release
from pdm_pipeline.defs.devserver import DagsterDev
from pdm_pipeline.defs.instance_config import open_instance
from pdm_pipeline.defs.launch import submit_to_server

pytestmark = pytest.mark.slow

MACHINE = "motor_001"


@pytest.fixture
def dagster_dev(tiny_fleet_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_fleet_root, root)
    home = write_home(tmp_path / "home")
    with DagsterDev(home, root) as dev:
        dev.stop_sensor("new_machine_data_sensor")  # only the test's own requests
        with open_instance(home) as instance:
            yield dev.client, instance, root, dev.log_path


def wait_finished(instance: dg.DagsterInstance, run_ids: list[str], timeout: float, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [instance.get_run_by_id(r) for r in run_ids]
        if all(r is not None and r.is_finished for r in runs):
            return
        time.sleep(2)
    raise AssertionError(f"runs not finished in {timeout} s: {[instance.get_run_by_id(r).status for r in run_ids]}\n"
                         + log.read_text()[-3000:])


def failures(instance: dg.DagsterInstance, run_ids) -> str:
    lines = []
    for run_id in run_ids:
        for event in instance.all_logs(run_id):
            if event.dagster_event and event.dagster_event.event_type_value in ("PIPELINE_FAILURE", "STEP_FAILURE",
                                                                                "ENGINE_EVENT"):
                error = getattr(event.dagster_event.event_specific_data, "error", None)
                detail = f" {error.message[:800]}" if error is not None else ""
                lines.append(f"{run_id[:8]} {event.dagster_event.event_type_value}: {event.message[:300]}{detail}")
    return "\n".join(lines)


def test_two_requests_for_one_machine_run_one_after_the_other_and_each_publishes_its_own(dagster_dev):
    client, instance, root, log = dagster_dev
    first = submit_to_server(client, MACHINE, models=["anomaly"], training={"time_limit_s": 5})
    second = submit_to_server(client, MACHINE, models=["anomaly"], training={"time_limit_s": 5, "contamination": 0.02})
    wait_finished(instance, [first, second], 420, log)
    records = {r.dagster_run.run_id: r for r in instance.get_run_records()
               if r.dagster_run.run_id in (first, second)}
    assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records.values()), failures(instance, records)
    a, b = sorted(records.values(), key=lambda r: r.start_time or 0)
    assert b.start_time >= a.end_time, "the two runs of one machine overlapped"

    releases = {}
    for path in (root / "releases" / MACHINE).glob("*/release.json"):
        release = read_release(path.parent, keys.local_trust(root))
        releases[release["run_id"]] = release
    # The release's run_id is the Dagster run id of the run that published it (run-scoped staging).
    mine = {run_id: releases[run_id] for run_id in (first, second)}
    assert mine[b.dagster_run.run_id]["previous_release"] == mine[a.dagster_run.run_id]["release_id"]
    for run_id, release in mine.items():
        anomaly = release["models"]["anomaly"]
        assert anomaly["action"] == "released" and anomaly["source_release"] == release["release_id"]
        # Its metrics are the ones its own run evaluated (not the other run's).
        evaluation = [e for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                      if e.dagster_event.asset_key == dg.AssetKey("anomaly_detector_evaluation")]
        assert evaluation, f"run {run_id[:8]} has no anomaly evaluation"
        evaluated = evaluation[-1].asset_materialization.metadata
        assert abs(anomaly["metrics"]["f1"] - evaluated["f1"].value) < 1e-9
        # ... and its model was trained with its own settings (the second run asked for contamination 0.02).
        card = json.loads((root / "releases" / MACHINE / release["release_id"] / "anomaly" / "model_card.json")
                          .read_text())
        expected = "0.98" if run_id == second else "0.95"  # default contamination 0.05
        assert f"conformal {expected} quantile" in card["threshold_rule"], card["threshold_rule"]


def test_a_killed_run_worker_is_failed_and_the_next_run_of_the_machine_goes_ahead(dagster_dev):
    """kill -9 of a daemon-launched run: the run is failed (by the code server that launched the worker, else by the
    recovery sensor, which finds its process gone), so the machine's queued run starts."""
    import signal

    client, instance, root, log = dagster_dev
    doomed = submit_to_server(client, MACHINE, models=["anomaly", "timeseries"], training={"time_limit_s": 5})
    waiting = submit_to_server(client, MACHINE, models=["anomaly"], training={"time_limit_s": 5})
    deadline, pid = time.time() + 180, None
    while pid is None and time.time() < deadline:
        time.sleep(0.5)
        run = instance.get_run_by_id(doomed)
        pid = run.tags.get("pdm/pid") if run.status == dg.DagsterRunStatus.STARTED else None
    assert pid, f"the run never started: {instance.get_run_by_id(doomed).status}\n" + log.read_text()[-2000:]
    os.kill(int(pid), signal.SIGKILL)
    assert instance.get_run_by_id(waiting).status == dg.DagsterRunStatus.QUEUED  # held by the per-machine limit
    wait_finished(instance, [doomed, waiting], 300, log)
    dead = instance.get_run_by_id(doomed)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    # Failed by whoever sees it first: the code server that launched the worker, or the recovery sensor.
    assert instance.all_logs(doomed, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert instance.get_run_by_id(waiting).status == dg.DagsterRunStatus.SUCCESS, failures(instance, [waiting])
    # Its worker died, no step failed: the daemon runs it once more (the coordinator tagged it max_retries 1),
    # with the same machine tag, so it too waited its turn; it publishes.
    assert dead.tags["dagster/max_retries"] == "1"
    from dagster._core.storage.dagster_run import RunsFilter

    deadline, retries = time.time() + 120, []
    while not retries and time.time() < deadline:
        retries = instance.get_run_records(filters=RunsFilter(tags={"dagster/parent_run_id": doomed}))
        time.sleep(1)
    assert len(retries) == 1, "the killed run was not retried\n" + log.read_text()[-2000:]
    retry = retries[0].dagster_run
    assert retry.tags["pdm/machine_id"] == MACHINE and retry.tags["dagster/partition"] == MACHINE
    wait_finished(instance, [retry.run_id], 300, log)
    assert instance.get_run_by_id(retry.run_id).status == dg.DagsterRunStatus.SUCCESS, failures(instance, [retry.run_id])
