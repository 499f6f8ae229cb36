"""Crashes at any instant, on real processes: SIGKILL at each step of the graph, and inside the release.

- A CLI run (`pdm-pipeline train`, in-process executor, the project's dagster.yaml) is killed with SIGKILL when a
  chosen step has started. The next CLI start marks the dead run FAILED (its MLflow run too), and the next run of
  the same machine and of another machine both succeed without any manual help; the machine's published set is
  at every moment a whole, verified release (the old one, or the new one).
- A process publishing releases in a loop is killed at random instants while this process reads the machine's
  `current` release the whole time: every read is a whole, verified release; after each kill the next release
  works.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.release import current_release_dir, read_release, recover_machine, verify_release
from pdm_pipeline.defs.instance_config import open_instance, write_instance

pytestmark = pytest.mark.slow

CLI = str(Path(sys.executable).parent / "pdm-pipeline")
FAST = ["--set", "time_limit_s=5", "--set", "extra.forecast_validation_windows=1"]


def write_home(home: Path) -> Path:
    """A Dagster home with the project's dagster.yaml (SQLite), its storage under `home`."""
    write_instance(home)
    return home


def cli_env(home: Path, root: Path) -> dict[str, str]:
    env = dict(os.environ, DAGSTER_HOME=str(home), PDM_DATA_DIR=str(root))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_cli(args: list[str], home: Path, root: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=home, env=cli_env(home, root), capture_output=True, text=True,
                          timeout=timeout)


def released_id(root: Path, machine_id: str) -> str | None:
    """The current release id, after verifying the whole release (signature, every file's hash)."""
    directory = current_release_dir(root, machine_id)
    if directory is None:
        return None
    return verify_release(directory, keys.local_trust(root))["release_id"]


def step_started(instance: dg.DagsterInstance, pid: int, step: str) -> str | None:
    from dagster._core.storage.dagster_run import RunsFilter

    records = instance.get_run_records(filters=RunsFilter(tags={"pdm/pid": str(pid)}))
    for record in records:
        events = instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START)
        if any(e.step_key == step for e in events):
            return record.dagster_run.run_id
    return None


@pytest.fixture(scope="module")
def site(tiny_fleet_root, tmp_path_factory):
    """A private copy of the tiny fleet, a Dagster home, and a first release of both machines."""
    base = tmp_path_factory.mktemp("crash")
    root = base / "data"
    shutil.copytree(tiny_fleet_root, root)
    home = write_home(base / "home")
    done = run_cli(["run", "--machine-id", "motor_001", "--machine-id", "pump_002", "--models", "anomaly", *FAST],
                   home, root)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    with open_instance(home) as instance:
        yield root, home, instance


# (step to kill in, delay after its start - or the file of the staging directory whose appearance marks the
# instant, e.g. AutoGluon's work directory: then 0.5 s later, mid-fit whatever the machine's speed -, models of
# the killed run and of the next runs)
KILL_POINTS = [
    ("machine_features", 0.0, "anomaly"),
    ("train_classification", "classification/autogluon", "classification"),
    ("train_timeseries", 2.0, "timeseries"),  # well inside the step: its Prophet import and validation fits take longer
    ("machine_release", 0.0, "anomaly"),
]


@pytest.mark.parametrize(("step", "delay", "models"), KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_sigkill_at_a_step_leaves_a_whole_release_and_the_next_runs_work(site, step, delay, models, monkeypatch):
    root, home, instance = site
    before = {m: released_id(root, m) for m in ("motor_001", "pump_002")}
    proc = subprocess.Popen([CLI, "train", "--machine-id", "motor_001", "--models", models, *FAST], cwd=home,
                            env=cli_env(home, root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run_id, deadline = None, time.time() + 300
    while run_id is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        run_id = step_started(instance, proc.pid, step)
    assert run_id is not None, f"step {step} never started (exit code {proc.poll()})"
    if isinstance(delay, str):
        mark = paths.staging_dir(root, "motor_001", run_id) / delay
        while not mark.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert mark.exists(), f"{mark} never appeared (exit code {proc.poll()})"
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before the kill: this kill point tests nothing"
    else:
        time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)  # the run's process and its children (Prophet's cmdstan, ...)
    proc.wait()
    # Killed at any point: the published set is the old release or the new one of the killed run, whole and
    # verified (released_id verifies the signature and every file's hash).
    after_kill = released_id(root, "motor_001")
    assert after_kill == before["motor_001"] or read_release(
        current_release_dir(root, "motor_001"), keys.local_trust(root))["run_id"] == run_id
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # nobody has looked yet

    nxt = run_cli(["run", "--machine-id", "motor_001", "--machine-id", "pump_002", "--models", models, *FAST],
                  home, root)
    assert nxt.returncode in (0, 3), nxt.stdout + nxt.stderr
    assert f"run {run_id[:8]} of motor_001 marked FAILED" in nxt.stderr
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    # its status names no step as running: the killed one is interrupted (or it had just ended)
    from pdm_pipeline.defs.launch import run_progress

    progress = run_progress(instance, run_id)
    assert progress["current"] == [] and set(progress["interrupted"]) <= {step}, progress
    for machine in ("motor_001", "pump_002"):
        new = released_id(root, machine)
        assert new is not None and new != before[machine], f"{machine} did not publish a new release"
        release = read_release(current_release_dir(root, machine), keys.local_trust(root))
        assert release["models"][models]["action"] == "released", release["models"][models]
    # Nothing of the dead run is left behind: no half-written release; its staging only while a re-execution (the
    # daemon's retry) may still release from it, on the same data the next run published from, and not after.
    from pdm_pipeline.defs import recovery

    dead_run = instance.get_run_by_id(run_id)
    assert not list((root / "staging").glob(f"*/{run_id}")) or recovery.kept_for_reexecution(instance, dead_run)
    monkeypatch.setattr(recovery, "OUTPUT_RETENTION_S", -1)  # its re-execution window has passed
    recovery.remove_stale_staging(instance, root, set())
    assert not list((root / "staging").glob(f"*/{run_id}"))
    assert not list((root / "releases").glob("*/.building-*"))
    # Its MLflow run did not stay RUNNING: FAILED, or FINISHED only when the killed run had already switched its
    # release (the release step ends the MLflow run right after the switch; a kill in the last instants of that
    # step fails the Dagster run, but its models were published and MLflow says so).
    published_by_killed_run = after_kill != before["motor_001"]
    expected = {"FAILED", "FINISHED"} if published_by_killed_run else {"FAILED"}
    from mlflow import MlflowClient

    from pdm_pipeline.core import tracking

    client = MlflowClient(tracking.default_tracking_uri(root))
    experiment = client.get_experiment_by_name("pdm-pipeline")
    runs = client.search_runs([experiment.experiment_id], f"tags.dagster_run_id = '{run_id}'")
    assert all(r.info.status in expected for r in runs), ([r.info.status for r in runs], published_by_killed_run)


RELEASE_LOOP = r"""
import shutil, sys
from pathlib import Path
from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.config import GateSettings, TrainingConfig
from pdm_pipeline.core.contract import load_machine
from pdm_pipeline.core.pipeline import evaluate_model, new_run_id, prepare_features, prepare_labels, train_model
from pdm_pipeline.core.release import release_machine

root, machine = Path(sys.argv[1]), sys.argv[2]
config = TrainingConfig(time_limit_s=5)
data = load_machine(root, machine)
labels = prepare_labels(data, config)
features = prepare_features(data, labels, config)
template = root / "template"
trained = train_model("anomaly", data, labels, features, template, config, keys.signing_key(root))
evaluation = evaluate_model(trained, data, features, keys.local_trust(root))
print("ready", flush=True)
while True:
    run_id = new_run_id()
    staging = paths.staging_dir(root, machine, run_id) / "anomaly"
    shutil.copytree(template, staging)
    trained.path = staging
    result = release_machine(root, machine, {"anomaly": trained}, {"anomaly": evaluation}, GateSettings(),
                             run_id=run_id, data=data)
    print("released", result.release_id, flush=True)
"""


def test_a_release_killed_at_random_instants_is_never_seen_half_written(tiny_fleet_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_fleet_root, root)
    machine = "pump_002"
    seen, errors, stop = set(), [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                release_id = released_id(root, machine)
                if release_id:
                    seen.add(release_id)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    rng = random.Random(3)
    published = 0
    for _ in range(3):  # three writer processes, each killed several times mid-loop
        writer = subprocess.Popen([sys.executable, "-c", RELEASE_LOOP, str(root), machine], stdout=subprocess.PIPE,
                                  text=True)
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        watcher = threading.Thread(target=reader)
        watcher.start()
        time.sleep(rng.uniform(1.0, 4.0))  # somewhere inside one of the releases
        writer.kill()
        writer.wait()
        stop.set()
        watcher.join()
        stop.clear()
        published += sum(1 for line in writer.stdout.read().splitlines() if line.startswith("released"))
        for line in recover_machine(root, machine):
            assert "re-pointed" not in line, line  # `current` never dangles: recovery only removes leftovers
        assert released_id(root, machine) is not None
    assert not errors, errors[:3]
    assert published >= 3 and len(seen) >= 2, (published, seen)
    assert not list((root / "releases" / machine).glob(".building-*"))


KILLED_AT_SWITCH = r"""
import os, signal, sys
from pathlib import Path
from pdm_pipeline.core import keys, paths, release
from pdm_pipeline.core.config import GateSettings, TrainingConfig
from pdm_pipeline.core.contract import load_machine
from pdm_pipeline.core.pipeline import evaluate_model, new_run_id, prepare_features, prepare_labels, train_model

root, machine, kill = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "kill"
if kill:  # SIGKILL after the release is renamed into place, before `current` switches to it
    release._switch = lambda directory, release_id: os.kill(os.getpid(), signal.SIGKILL)
config = TrainingConfig(time_limit_s=5)
data = load_machine(root, machine)
labels = prepare_labels(data, config)
features = prepare_features(data, labels, config)
run_id = new_run_id()
trained = train_model("anomaly", data, labels, features, paths.staging_dir(root, machine, run_id) / "anomaly",
                      config, keys.signing_key(root))
evaluation = evaluate_model(trained, data, features, keys.local_trust(root))
result = release.release_machine(root, machine, {"anomaly": trained}, {"anomaly": evaluation}, GateSettings(),
                                 run_id=run_id, data=data)
print("released", result.release_id, flush=True)
"""


def test_a_release_killed_between_its_rename_and_its_switch_is_not_left_behind(tiny_fleet_root, tmp_path):
    """SIGKILL after the release directory is renamed into place but before `current` switches to it: a whole
    release that never became current (its run failed). Its `.switching-<id>` marker tells recovery so, which
    removes it, with or without a current release; the next release works."""
    root = tmp_path / "data"
    shutil.copytree(tiny_fleet_root, root)
    machine = "pump_002"
    directory = root / "releases" / machine

    def release(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", KILLED_AT_SWITCH, str(root), machine, mode],
                              capture_output=True, text=True, timeout=300)

    def whole() -> list[str]:
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".") and p.name != "current")

    killed = release("kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (first,) = whole()
    assert current_release_dir(root, machine) is None and (directory / f".switching-{first}").is_file()
    done = recover_machine(root, machine)
    assert whole() == [] and not list(directory.glob(".switching-*")), done
    assert any("never switched to" in line for line in done)

    ok = release("ok")
    assert ok.returncode == 0, ok.stderr[-2000:]
    live = released_id(root, machine)
    assert live is not None and whole() == [live]

    killed = release("kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(whole()) == 2 and released_id(root, machine) == live  # the orphan sits beside the current one
    done = recover_machine(root, machine)
    assert whole() == [live] and released_id(root, machine) == live, done
    assert recover_machine(root, machine) == []
    ok = release("ok")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert released_id(root, machine) not in (None, live)


def test_one_machines_broken_state_does_not_stop_the_recovery_of_the_others(tmp_path):
    """A `.lock` that is a directory (or a read-only root) made the sweep raise at that machine: every CLI command
    and the recovery sensor crashed, and the machines after it were never repaired. A deploy marker of the wrong
    shape is moved aside with a message instead of a KeyError."""
    import json

    from pdm_pipeline.core.release import DEPLOY_PENDING
    from pdm_pipeline.defs.recovery import recover_releases

    root = tmp_path / "data"
    for machine in ("a_broken", "b_marker", "c_leftover"):
        paths.releases_dir(root, machine).mkdir(parents=True)
    (paths.releases_dir(root, "a_broken") / ".lock").mkdir()
    (paths.releases_dir(root, "b_marker") / DEPLOY_PENDING).write_text(json.dumps({"release_id": 3}))
    leftover = paths.releases_dir(root, "c_leftover") / ".building-20990101T000000-deadbeef"
    leftover.mkdir()
    done = recover_releases(root)
    assert any(line.startswith("a_broken: recovery failed, needs a look: IsADirectoryError") for line in done), done
    assert any(line.startswith("b_marker: ") and "is not a deploy marker" in line for line in done), done
    assert (paths.releases_dir(root, "b_marker") / f"{DEPLOY_PENDING}.malformed").is_file()
    assert not leftover.exists(), "the machine after the broken one is still repaired"


def test_sigterm_stops_a_batch_instead_of_moving_on_to_the_next_machine(site):
    """SIGTERM (a service manager stopping the host) during the first machine of `run`: the batch stops with 130
    and names the machine it did not start; it used to interrupt that run only and train the next machine."""
    root, home, instance = site
    before = released_id(root, "pump_002")
    proc = subprocess.Popen([CLI, "run", "--machine-id", "motor_001", "--machine-id", "pump_002", "--models",
                             "anomaly", *FAST], cwd=home, env=cli_env(home, root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    run_id, deadline = None, time.time() + 300
    while run_id is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        run_id = step_started(instance, proc.pid, "train_anomaly")
    assert run_id is not None, f"train_anomaly never started (exit code {proc.poll()})"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "not started: pump_002" in err, err
    assert released_id(root, "pump_002") == before, "the next machine was not trained"


def test_two_cli_runs_of_one_machine_run_one_after_the_other(site):
    """In-process runs skip the queue that holds one run per machine: two `train` of one machine ran side by side
    (both STARTED). The second now waits for the first to end."""
    root, home, instance = site
    procs = [subprocess.Popen([CLI, "train", "--machine-id", "motor_001", "--models", "anomaly", *FAST], cwd=home,
                              env=cli_env(home, root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode in (0, 3) for p in procs), outputs
    from dagster._core.storage.dagster_run import RunsFilter

    runs = [instance.get_run_records(filters=RunsFilter(tags={"pdm/pid": str(p.pid)}))[0] for p in procs]
    spans = sorted((r.start_time, r.end_time) for r in runs)
    assert spans[0][1] is not None and spans[1][0] >= spans[0][1], spans
    assert any("waiting" in out for out in outputs), outputs
