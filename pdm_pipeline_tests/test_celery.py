"""One machine's graph across two Celery worker processes (RabbitMQ broker, Redis result backend).

`dagster dev` runs with PDM_EXECUTOR=celery: the run's steps go to the broker and two `dagster-celery` workers
execute them. The run publishes the same release (models, files, metrics) as the same machine trained in
process on a copy of the data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from conftest import RABBITMQ_BROKER, REDIS_URL, require_service
from test_crash_recovery import write_home

from pdm_pipeline.core import keys
from pdm_pipeline.core.release import current_release_dir, read_release
from pdm_pipeline.defs.devserver import DagsterDev
from pdm_pipeline.defs.instance_config import open_instance
from pdm_pipeline.defs.launch import materialize_machine, submit_to_server

pytestmark = [pytest.mark.slow, pytest.mark.services]

MACHINE = "motor_001"
MODELS = ["anomaly", "classification"]
TRAINING = {"time_limit_s": 8}


def release_content(root: Path) -> dict:
    directory = current_release_dir(root, MACHINE)
    release = read_release(directory, keys.local_trust(root))
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    return {
        # Every metric but the timings (latency is measured, not computed).
        "models": {t: (m["action"], {k: v for k, v in (m.get("metrics") or {}).items() if "latency" not in k
                                     and "seconds" not in k}) for t, m in release["models"].items()},
        "files": [f for f in files if not f.endswith((".sig", "manifest.json", "release.json"))],
    }


@pytest.fixture
def celery_workers(tmp_path):
    require_service("RabbitMQ", "127.0.0.1", 5672)
    require_service("Redis", "127.0.0.1", 6379)
    config = tmp_path / "celery.yaml"
    config.write_text(f"execution:\n  config:\n    broker: '{RABBITMQ_BROKER}'\n    backend: '{REDIS_URL}'\n")
    return config


def test_a_machine_trained_across_two_celery_workers_publishes_what_in_process_publishes(
        tiny_fleet_root, tmp_path, celery_workers, dagster_instance, monkeypatch):
    # Reference: the same machine trained in this process on its own copy of the data.
    local = tmp_path / "local"
    shutil.copytree(tiny_fleet_root, local)
    monkeypatch.setenv("PDM_DATA_DIR", str(local))
    assert materialize_machine(dagster_instance, MACHINE, training=TRAINING, models=MODELS, log_level="WARNING").success
    expected = release_content(local)

    root = tmp_path / "data"
    shutil.copytree(tiny_fleet_root, root)
    home = write_home(tmp_path / "home")
    with open_instance(home):  # create the storage once, before three processes open it at the same time
        pass
    env = {"PDM_EXECUTOR": "celery", "PDM_CELERY_BROKER": RABBITMQ_BROKER, "PDM_CELERY_BACKEND": REDIS_URL}
    worker_env = dict(os.environ, DAGSTER_HOME=str(home), PDM_DATA_DIR=str(root), **env)
    worker_env.pop("MLFLOW_TRACKING_URI", None)
    worker_env["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"  # it starts `celery`
    workers = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
             "-y", str(celery_workers), "-n", f"pdm-test-{i}-{os.getpid()}@%h", "--", "--concurrency=1", "--prefetch-multiplier=1", "-O", "fair"],
            cwd=home, env=worker_env, stdout=(tmp_path / f"worker{i}.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(2)
    ]
    try:
        with DagsterDev(home, root, env=env) as dev:
            dev.stop_sensor("new_machine_data_sensor")
            run_id = submit_to_server(dev.client, MACHINE, models=MODELS, training=TRAINING)
            with open_instance(home) as instance:
                deadline = time.time() + 480
                while not instance.get_run_by_id(run_id).is_finished:
                    assert time.time() < deadline, dev.log_tail() + (tmp_path / "worker0.log").read_text()[-2000:]
                    assert all(w.poll() is None for w in workers), "a celery worker died"
                    time.sleep(2)
                run = instance.get_run_by_id(run_id)
                logs = "\n".join((tmp_path / f"worker{i}.log").read_text()[-1500:] for i in range(2))
                assert run.status == dg.DagsterRunStatus.SUCCESS, dev.log_tail() + logs
                step_pids = {e.dagster_event.pid for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}
                run_worker = {e.dagster_event.pid for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)}
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
    # The steps ran in the workers' processes (more than one), not in the run's own process.
    assert len(step_pids) >= 2 and not (step_pids & run_worker), (step_pids, run_worker)
    assert release_content(root) == expected
