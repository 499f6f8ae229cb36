"""Crash recovery: what a killed process leaves behind is found and repaired at the next start.

`sweep` runs when the CLI opens the instance and on every tick of `recovery_sensor` (under `make dev`):

- an in-process run (CLI, demo) whose process is gone is still STARTED in the instance: it is marked FAILED
  (its host and pid are its tags `pdm/host`, `pdm/pid`), and any concurrency slot it held is freed, so it
  neither blocks the queue nor counts as in progress forever (runs launched by the daemon are watched by
  Dagster's run monitoring, configured in dagster.yaml);
- every machine's releases: interrupted `.building-*` directories removed, a dangling `current` re-pointed to
  the newest complete release (core/release.py `recover_machine`, under the machine's lock);
- staging directories (trained models) and stored step outputs of runs that ended are removed: those of a run
  that did not succeed are kept until OUTPUT_RETENTION after the last run of its re-execution group ended (none
  still queued or running), since a re-execution from failure reuses them (defs/reexecution.py; its release
  removes what it used), its staging less long if a newer release of its machine by another run supersedes it
  (a re-execution would be refused); a succeeded run's staging goes at once (its release removed it already),
  its outputs after OUTPUT_RETENTION. A run this instance does not know (another instance's) loses its staging
  once the process that wrote it is gone, and its outputs OUTPUT_RETENTION after their last write;
- the MLflow run of a Dagster run that failed or was cancelled is ended FAILED instead of staying RUNNING;
- a release whose process died between its switch and the MLflow registry gets its `deployed` aliases.
"""

import os
import shutil
import socket
import time
from pathlib import Path

import dagster as dg

from pdm_pipeline.core import paths
from pdm_pipeline.core.release import machine_lock, recover_machine
from pdm_pipeline.defs.io_manager import outputs_root

OUTPUT_RETENTION_S = 24 * 3600
IN_PROGRESS = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed child not yet reaped) is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def owner_gone(host: str | None, pid: object) -> bool | None:
    """Whether the process `pid` recorded on `host` is gone: True / False on this host, None elsewhere (unknown)."""
    if host != socket.gethostname() or not str(pid).isdigit():
        return None
    return not _process_alive(int(str(pid)))


def fail_dead_in_process_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILED the in-process runs of this host whose process no longer exists; free their slots."""
    from dagster._core.storage.dagster_run import RunsFilter

    host = socket.gethostname()
    done = []
    records = instance.get_run_records(filters=RunsFilter(statuses=list(IN_PROGRESS), tags={"pdm/host": host}))
    for record in records:
        run = record.dagster_run
        pid = run.tags.get("pdm/pid")
        if not pid or pid == str(os.getpid()) or not owner_gone(host, pid):
            continue
        fresh = instance.get_run_by_id(run.run_id)  # it may have ended since it was listed
        if fresh is None or fresh.status not in IN_PROGRESS:
            continue
        instance.report_run_failed(run, f"its process (pid {pid} on {host}) is gone: the run was killed or crashed")
        try:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        except Exception:
            pass
        done.append(f"run {run.run_id[:8]} of {run.tags.get('pdm/machine_id', '?')} marked FAILED (process {pid} gone)")
        done += end_mlflow(run.run_id, "FAILED")
    return done


def end_mlflow(dagster_run_id: str, status: str) -> list[str]:
    from pdm_pipeline.defs.tracking import end_mlflow_runs_of

    try:
        ended = end_mlflow_runs_of(dagster_run_id, status)
    except Exception as exc:  # a tracking store that is down must not stop the recovery of everything else
        return [f"could not end the MLflow runs of run {dagster_run_id[:8]}: {exc}"]
    return [f"MLflow run {r[:8]} of run {dagster_run_id[:8]} ended {status}" for r in ended]


def _active_run_ids(instance: dg.DagsterInstance) -> set[str]:
    from dagster._core.storage.dagster_run import RunsFilter

    statuses = [*IN_PROGRESS, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
    return {r.dagster_run.run_id for r in instance.get_run_records(filters=RunsFilter(statuses=statuses))}


def recover_releases(root: Path) -> list[str]:
    done = []
    base = Path(root) / "releases"
    if not base.is_dir():
        return done
    for machine in sorted(p.name for p in base.iterdir() if p.is_dir() and paths.is_valid_machine_id(p.name)):
        try:
            with machine_lock(root, machine, timeout_s=0.5):
                lines = recover_machine(root, machine) + reconcile_deployed(root, machine)
                done += [f"{machine}: {line}" for line in lines]
        except TimeoutError:
            continue  # a release is being written right now: not a leftover
        except Exception as exc:  # one machine's broken state must not stop the recovery of the others
            done.append(f"{machine}: recovery failed, needs a look: {type(exc).__name__}: {exc}")
    return done


STAGING_OWNER = ".owner"  # "<host> <pid>" of the process that trains into a run's staging directory
UNKNOWN_STAGING_RETENTION_S = OUTPUT_RETENTION_S


def mark_staging_owner(run_dir: Path) -> None:
    """Record this process as the one writing into a run's staging directory (see remove_stale_staging)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STAGING_OWNER).write_text(f"{socket.gethostname()} {os.getpid()}")


def _abandoned(run_dir: Path) -> bool:
    """Staging of a run this instance does not know (another instance's, a core caller's): abandoned when its
    owner process on this host is gone; with no owner here to ask, only after a day without a write."""
    try:
        host, pid = (run_dir / STAGING_OWNER).read_text().split()
    except (OSError, ValueError):
        host, pid = "", ""
    gone = owner_gone(host, pid)
    if gone is not None:
        return gone
    newest = max((p.stat().st_mtime for p in run_dir.rglob("*")), default=run_dir.stat().st_mtime)
    return time.time() - newest > UNKNOWN_STAGING_RETENTION_S


def reconcile_deployed(root: Path, machine: str) -> list[str]:
    """A release whose process died after its switch but before the MLflow registry followed: point each new
    model's `deployed` alias at the version of this release (core/release.py DEPLOY_PENDING). Under the
    machine's lock, so no release switches or writes the marker meanwhile."""
    from pdm_pipeline.core.release import DEPLOY_PENDING, read_deploy_pending

    pending = read_deploy_pending(root, machine)
    marker = paths.releases_dir(root, machine) / DEPLOY_PENDING
    if pending is not None and not (isinstance(pending, dict) and isinstance(pending.get("release_id"), str)
                                    and isinstance(pending.get("mlflow_runs"), dict)):
        marker.rename(marker.with_name(f"{DEPLOY_PENDING}.malformed"))
        return [f"{marker} is not a deploy marker (moved aside to {DEPLOY_PENDING}.malformed); set the MLflow "
                "'deployed' aliases by hand if its release needs them"]
    if pending is None or owner_gone(pending.get("host"), pending.get("pid")) is False:
        return []  # nothing pending, or its release is still promoting
    marker = paths.releases_dir(root, machine) / DEPLOY_PENDING
    current = paths.current_release(root, machine)
    if not (current.is_symlink() and os.readlink(current) == pending["release_id"]):
        marker.unlink(missing_ok=True)  # never switched to, or superseded by a later release
        return []
    from pdm_pipeline.core.tracking import mark_deployed

    done = []
    for model_type, run_id in pending["mlflow_runs"].items():
        try:
            version = mark_deployed(tracking_uri=pending["tracking_uri"], run_id=run_id, machine_id=machine,
                                    model_type=model_type, release_id=pending["release_id"])
        except Exception as exc:  # the store is down: try again at the next sweep
            return [*done, f"could not set {model_type}'s deployed alias: {exc}"]
        done.append(f"{model_type} 'deployed' alias set to version {version} (release {pending['release_id']})")
    marker.unlink(missing_ok=True)
    return done


def group_last_end(instance: dg.DagsterInstance, run: dg.DagsterRun) -> float | None:
    """When the last run of `run`'s re-execution group (its root run and every re-execution of it) ended; None
    while one of them is not finished (queued, running: it may be reusing this run's work)."""
    from dagster._core.storage.dagster_run import RunsFilter
    from dagster._core.storage.tags import ROOT_RUN_ID_TAG

    root_id = run.root_run_id or run.run_id
    records = [*instance.get_run_records(filters=RunsFilter(run_ids=[root_id])),
               *instance.get_run_records(filters=RunsFilter(tags={ROOT_RUN_ID_TAG: root_id}))]
    ends = []
    for record in records:
        if not record.dagster_run.is_finished:
            return None
        ends.append(record.end_time or record.update_timestamp.timestamp())
    return max(ends, default=None)


def kept_for_reexecution(instance: dg.DagsterInstance, run: dg.DagsterRun, now: float | None = None) -> bool:
    """A run that did not succeed can be re-executed from failure, reusing its staging and stored outputs: they
    are kept while its group is active and until OUTPUT_RETENTION after the group's last run ended."""
    if run.status == dg.DagsterRunStatus.SUCCESS:
        return False
    last = group_last_end(instance, run)
    return last is None or (time.time() if now is None else now) - last <= OUTPUT_RETENTION_S


def known_run(instance: dg.DagsterInstance, name: str) -> dg.DagsterRun | None:
    """The run of this instance a staging or outputs directory is named after (None: not a run id it knows)."""
    return instance.get_run_by_id(name) if len(name) == 36 else None


def remove_stale_staging(instance: dg.DagsterInstance, root: Path, active: set[str]) -> list[str]:
    from pdm_pipeline.defs.reexecution import superseded

    done = []
    base = Path(root) / "staging"
    if not base.is_dir():
        return done
    for machine in base.iterdir():
        for run_dir in machine.iterdir() if machine.is_dir() else []:
            if run_dir.name in active:
                continue
            run = known_run(instance, run_dir.name)
            # A run of this instance that ended: its staging goes, unless a re-execution may still release its
            # models. Any other may be another instance's run still training (sharing the data root): it goes
            # once its owner process is gone.
            if run is None:
                stale = _abandoned(run_dir)
            else:  # (the re-execution checks query the run storage: only for runs that ended)
                stale = run.is_finished and not (kept_for_reexecution(instance, run)
                                                 and not superseded(instance, run, root, machine.name))
            if stale:
                shutil.rmtree(run_dir, ignore_errors=True)
                done.append(f"removed staging of run {run_dir.name[:8]} ({machine.name})")
    return done


def remove_old_outputs(instance: dg.DagsterInstance, active: set[str]) -> list[str]:
    done = []
    base = outputs_root(instance)
    if not base.is_dir():
        return done
    for run_dir in base.iterdir():
        if run_dir.name in active:
            continue
        run = known_run(instance, run_dir.name)
        if run is not None:  # counted from when its group's last run ended (a re-execution reads them)
            last = group_last_end(instance, run)
            old = last is not None and time.time() - last > OUTPUT_RETENTION_S
        else:
            old = time.time() - run_dir.stat().st_mtime > OUTPUT_RETENTION_S
        if old:
            shutil.rmtree(run_dir, ignore_errors=True)
            done.append(f"removed stored outputs of run {run_dir.name[:8]}")
    return done


def sweep(instance: dg.DagsterInstance, root: Path) -> list[str]:
    """Everything above; returns what it did, in words."""
    done = fail_dead_in_process_runs(instance)
    active = _active_run_ids(instance)
    done += recover_releases(root)
    done += remove_stale_staging(instance, root, active)
    done += remove_old_outputs(instance, active)
    return done


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Crash recovery every 30 s: runs of dead processes failed, interrupted releases repaired, "
    "staging of ended runs removed (see pdm_pipeline/defs/recovery.py).",
)
def recovery_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    from pdm_pipeline.core.paths import data_root

    done = sweep(context.instance, data_root())
    for line in done:
        context.log.info(line)
    return dg.SkipReason("; ".join(done) if done else "nothing to recover")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.FAILURE,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A failed Dagster run ends its MLflow runs FAILED (dagster-mlflow ends them only on success).",
)
def mlflow_on_run_failure(context: dg.RunStatusSensorContext) -> None:
    for line in end_mlflow(context.dagster_run.run_id, "FAILED"):
        context.log.info(line)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A cancelled Dagster run ends its MLflow runs KILLED.",
)
def mlflow_on_run_canceled(context: dg.RunStatusSensorContext) -> None:
    for line in end_mlflow(context.dagster_run.run_id, "KILLED"):
        context.log.info(line)
