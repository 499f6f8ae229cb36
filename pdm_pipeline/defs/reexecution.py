"""Re-executions of a machine run: where each step's work comes from, and whether it is still there.

A re-execution (the UI's "Re-execute from failure" / "from selected", `ReexecutionOptions`, a retry after a lost
worker) runs only some steps of its parent's plan; the others' work is the parent's (or, up a chain of
re-executions, the nearest ancestor's that completed the step: Dagster's own rule for the inputs it loads). For
the model families that work is on disk twice: the pickled step outputs (io_manager.py, per run) and the trained
models with their results in the ancestor's run-scoped staging (`<staging>/<machine>/<run>/`). The release step
reads each family from the run that trained it (`family_sources`), never from another run.

That work is kept for a while only (recovery.py: a run that did not succeed keeps its staging and outputs until
OUTPUT_RETENTION after the last run of its re-execution group ended; a release that used them removes them, and a newer
release of the machine by another run removes the staging it supersedes). A re-execution whose ancestor's work
is gone, or that would replace a newer release of the machine with the ancestor's older models, is refused before
it is queued (coordinator.py), and, for one that never reaches the queue (`execute_job`), when its resources
start (resources.py): `reexecution_problem` says why and what to do (launch a new run).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from pdm_pipeline import families
from pdm_pipeline.core import paths

RESULT_SUFFIX = ".result.json"


def family_step(model_type: str) -> str:
    """The step key of a family's training step (its multi-asset is named train_<model_type>)."""
    return f"train_{model_type}"


def result_file(root: Path, machine_id: str, run_id: str, model_type: str) -> Path:
    return paths.staging_dir(root, machine_id, run_id) / f"{model_type}{RESULT_SUFFIX}"


def lineage(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.DagsterRun]:
    """The run, its parent, the parent's parent, ... (the runs whose work a re-execution may use)."""
    chain, seen = [run], {run.run_id}
    while chain[-1].parent_run_id and chain[-1].parent_run_id not in seen:
        parent = instance.get_run_by_id(chain[-1].parent_run_id)
        if parent is None:
            break
        chain.append(parent)
        seen.add(parent.run_id)
    return chain


_PLANNED_STEPS: dict[str, frozenset[str]] = {}  # plan snapshot id -> its step keys (a snapshot id names its content)


def _planned(instance: dg.DagsterInstance, run: dg.DagsterRun) -> frozenset[str]:
    """The step keys of the run's plan, read once per plan snapshot (every check walks the lineage per step)."""
    snapshot_id = run.execution_plan_snapshot_id
    if not snapshot_id:
        return frozenset()
    if snapshot_id not in _PLANNED_STEPS:
        plan = instance.get_execution_plan_snapshot(snapshot_id)
        _PLANNED_STEPS[snapshot_id] = frozenset(step.key for step in plan.steps)
    return _PLANNED_STEPS[snapshot_id]


def _asset_resume_retry(run: dg.DagsterRun) -> bool:
    """A re-execution "from asset failure" (ReexecutionStrategy.FROM_ASSET_FAILURE: GraphQL, the UI, a
    `dagster/retry_strategy` tag) runs a job subset to the assets that did not materialize, with no steps to
    execute listed: the steps of the others are not in its plan, and their work is its parent's."""
    from dagster._core.storage.tags import ASSET_RESUME_RETRY_TAG

    return run.parent_run_id is not None and (run.tags or {}).get(ASSET_RESUME_RETRY_TAG) == "true"


def _reexecutes(run: dg.DagsterRun) -> bool:
    """A re-execution that reuses some of its parent's work (from failure, from selected, from asset failure)."""
    return run.parent_run_id is not None and (run.step_keys_to_execute is not None or _asset_resume_retry(run))


def _executes(run: dg.DagsterRun, step: str) -> bool:
    return run.step_keys_to_execute is None or step in run.step_keys_to_execute


def _succeeded(instance: dg.DagsterInstance, run_id: str, step: str) -> bool:
    return any(s.step_key == step and s.status is not None and s.status.value == "SUCCESS"
               for s in instance.get_run_step_stats(run_id, step_keys=[step]))


def _step_executor(instance: dg.DagsterInstance, run: dg.DagsterRun, step: str,
                   chain: list[dg.DagsterRun] | None = None) -> dg.DagsterRun | None:
    """The run that executes `step` for `run`: itself, or the nearest ancestor that executed it. None when the
    step is not in the run's plan."""
    for current in chain or lineage(instance, run):
        if step not in _planned(instance, current):
            if _asset_resume_retry(current):  # (its parent's work for the assets it did not select)
                continue
            return None
        if _executes(current, step):
            return current
    return None


def step_source(instance: dg.DagsterInstance, run: dg.DagsterRun, step: str,
                chain: list[dg.DagsterRun] | None = None) -> str | None:
    """The run whose work `run` uses for `step`: itself when it executes the step; else the nearest ancestor that
    completed it. None when the step is not in the run's plan, or the ancestor that executed it did not complete it."""
    executor = _step_executor(instance, run, step, chain)
    return executor.run_id if executor is not None and _completed(instance, run, executor, step) else None


def _family_executors(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, dg.DagsterRun]:
    """model type -> the run that executes its training step for `run` (itself or an ancestor; see _step_executor)."""
    chain = lineage(instance, run)
    executors = {}
    for family in families.all_families():
        if (executor := _step_executor(instance, run, family_step(family.model_type), chain)) is not None:
            executors[family.model_type] = executor
    return executors


def _completed(instance: dg.DagsterInstance, run: dg.DagsterRun, executor: dg.DagsterRun, step: str) -> bool:
    """Whether `run` can use `executor`'s work for `step`: its own step (running now), or an ancestor's that succeeded."""
    return executor.run_id == run.run_id or _succeeded(instance, executor.run_id, step)


def failed_sources(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, str]:
    """model type -> the ancestor run whose training step of it did not complete, for a re-execution that does not
    run that step again ("re-execute selected" of the release alone): that family keeps its previous model, and
    the release says why instead of looking like a family that was never asked for."""
    return {t: e.run_id for t, e in _family_executors(instance, run).items()
            if not _completed(instance, run, e, family_step(t))}


def family_sources(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, str]:
    """model type -> the run that trained it for `run` (this run, or the ancestor a re-execution reuses); a family
    missing here is not part of the run (not selected, or its step never completed): it keeps its previous model."""
    return {t: e.run_id for t, e in _family_executors(instance, run).items()
            if _completed(instance, run, e, family_step(t))}


def missing_work(instance: dg.DagsterInstance, run: dg.DagsterRun, root: Path, machine_id: str) -> list[str]:
    """What `run` reuses from an ancestor and is no longer on disk ('<what> of run <id>'), in words."""
    from pdm_pipeline.defs.io_manager import run_outputs_dir

    if not _reexecutes(run):
        return []
    chain = lineage(instance, run)
    gone: dict[str, list[str]] = {}  # run id -> what of it is gone
    for step in sorted(_planned(instance, run) - set(run.step_keys_to_execute or ())):
        source = step_source(instance, run, step, chain)
        if source is not None and source != run.run_id and not run_outputs_dir(instance, source).is_dir():
            gone.setdefault(source, []).append(step)
    missing = [f"the stored outputs of steps {', '.join(steps)} of run {source[:8]}" for source, steps in gone.items()]
    for model_type, source in family_sources(instance, run).items():
        if source == run.run_id:
            continue
        file = result_file(root, machine_id, source, model_type)
        model = _trained_path(file)
        if model is None or (model and not Path(model).is_dir()):
            missing.append(f"the {model_type} model trained by run {source[:8]}")
    return missing


def _trained_path(file: Path) -> str | None:
    """The trained model's directory a result file names ('' for a family that trained nothing); None when the
    result file is gone or unreadable."""
    try:
        trained = json.loads(file.read_text())["trained"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return "" if trained.get("status") != "trained" else str(trained.get("path") or "")


def _current_release(root: Path, machine_id: str) -> tuple[Path, dict[str, Any]] | None:
    """The machine's current release directory and its description; None when it has none or it does not read."""
    from pdm_pipeline.core.release import current_release_dir, read_release

    current = current_release_dir(root, machine_id)
    if current is None:
        return None
    try:
        return current, read_release(current)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _release_since(root: Path, machine_id: str, started: float, own: set[str], data_version: str | None = None
                   ) -> str | None:
    """The machine's current release when a run not in `own` made it at or after `started` (epoch seconds) from
    other data than `data_version` (the data the reused work learnt from; None: unknown, any release counts). A
    release of the same data is no newer than the reused work: a retry of a killed run, after the machine's next
    queued run published, finishes what was asked on the data both read."""
    release = _current_release(root, machine_id)
    if release is None:
        return None
    current, description = release
    try:
        created = datetime.fromisoformat(description["created_at"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return None
    if description.get("run_id") in own or created < started - 1:  # (created_at is to the second)
        return None
    if data_version and description.get("data_version") == data_version:
        return None
    return f"{current.name} (run {str(description.get('run_id'))[:8]})"


def _started(instance: dg.DagsterInstance, run_ids: list[str]) -> float | None:
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=run_ids))
    started = [r.start_time or r.create_timestamp.timestamp() for r in records]
    return min(started, default=None)


def reused_sources(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[str]:
    """The ancestors whose work `run` uses: the models it releases and the outputs of the steps it does not execute
    (the dataset and features a retrained family learns from)."""
    sources = set(family_sources(instance, run).values())
    if run.parent_run_id is not None and run.step_keys_to_execute is not None:
        chain = lineage(instance, run)
        for step in _planned(instance, run) - set(run.step_keys_to_execute):
            if (source := step_source(instance, run, step, chain)) is not None:
                sources.add(source)
    sources.discard(run.run_id)
    return sources


def newer_release(instance: dg.DagsterInstance, run: dg.DagsterRun, root: Path, machine_id: str) -> str | None:
    """The machine's current release when another run published it after the work `run` reuses was done (its
    models, or the data a family it trains again learns from: releasing would replace newer models with older
    ones, or with ones trained on older data); None otherwise."""
    reused = sorted(reused_sources(instance, run))
    started = _started(instance, reused) if reused else None
    if started is None:
        return None
    from pdm_pipeline.defs.coordinator import DATA_ASSET

    # (a run that reads the data again learns from today's files, whose version is not known before it runs)
    reads_data = DATA_ASSET in _planned(instance, run) and _executes(run, DATA_ASSET)
    version = None if reads_data else _learnt_from(instance, reused)
    return _release_since(root, machine_id, started, {r.run_id for r in lineage(instance, run)}, version)


def _learnt_from(instance: dg.DagsterInstance, run_ids: list[str]) -> str | None:
    """The one data version the machine dataset had in these runs (those that read it); None when none read it or
    they read different versions."""
    versions = {v for run_id in run_ids if (v := dataset_version(instance, run_id))}
    return versions.pop() if len(versions) == 1 else None


def dataset_version(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The data version of the machine dataset `run_id` read (its machine_dataset materialization); None when that
    run did not materialize it (it loaded its parent's)."""
    from pdm_pipeline.defs.coordinator import DATA_ASSET

    for entry in reversed(instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)):
        event = entry.dagster_event
        if event is not None and event.asset_key == dg.AssetKey(DATA_ASSET):
            return event.step_materialization_data.materialization.tags.get("dagster/data_version")
    return None


def superseded(instance: dg.DagsterInstance, run: dg.DagsterRun, root: Path, machine_id: str) -> bool:
    """A finished run that did not succeed whose machine has a release another run made since it started: a
    re-execution of it would be refused (newer_release), so what it trained is of no use any more."""
    if not run.is_finished or run.status == dg.DagsterRunStatus.SUCCESS or not paths.is_valid_machine_id(machine_id):
        return False
    started = _started(instance, [run.run_id])
    if started is None:
        return False
    chain = lineage(instance, run)
    group = {run.run_id, run.root_run_id or run.run_id}
    version = _learnt_from(instance, [r.run_id for r in chain])
    return _release_since(root, machine_id, started, group | {r.run_id for r in chain}, version) is not None


def remove_superseded_staging(instance: dg.DagsterInstance, root: Path, machine_id: str) -> list[str]:
    """Remove the staging of the machine's failed runs that a newer release superseded (after each release, and by
    the recovery sweep); returns what was removed, in words."""
    import shutil

    from pdm_pipeline.defs.recovery import known_run

    done = []
    base = Path(root) / "staging" / machine_id
    for run_dir in sorted(base.iterdir()) if base.is_dir() else []:
        run = known_run(instance, run_dir.name)
        if run is not None and superseded(instance, run, root, machine_id):
            shutil.rmtree(run_dir, ignore_errors=True)
            done.append(f"removed staging of run {run_dir.name[:8]} ({machine_id}): a newer release superseded it")
    return done


def released_by_group(instance: dg.DagsterInstance, run: dg.DagsterRun, root: Path, machine_id: str) -> str | None:
    """'run <id> (release <name>)' when another run of `run`'s re-execution group made the machine's current release;
    None otherwise."""
    release = _current_release(root, machine_id)
    if release is None:
        return None
    current, description = release
    publisher = str(description.get("run_id") or "")
    other = instance.get_run_by_id(publisher) if publisher and publisher != run.run_id else None
    group = run.root_run_id or run.parent_run_id
    if other is None or (other.root_run_id or other.run_id) != group:
        return None
    return f"run {publisher[:8]} (release {current.name})"


def _run_data_root(run: dg.DagsterRun) -> Path | None:
    """The data root the run's settings name (None: the default one)."""
    from pdm_pipeline.defs.coordinator import resolved_settings

    try:
        data_dir = (resolved_settings(run.run_config)["data_root"] or {}).get("data_dir")
    except Exception:  # an unresolvable setting is the settings checks' business (refusal, check_unchecked_run)
        return None
    return Path(data_dir) if data_dir else None


def reexecution_problem(instance: dg.DagsterInstance, run: dg.DagsterRun, root: Path | None = None) -> str | None:
    """Why this re-execution of a machine run must not run (None when it may, or is not a re-execution)."""
    machine_id = (run.tags or {}).get("dagster/partition")
    if not _reexecutes(run) or not machine_id or not paths.is_valid_machine_id(machine_id):
        return None
    root = (_run_data_root(run) or paths.data_root()) if root is None else Path(root)
    advice = (f"launch a new run of {machine_id} instead (`pdm-pipeline train --machine-id {machine_id}`, or "
              "Materialize in the UI)")
    from pdm_pipeline.defs.recovery import OUTPUT_RETENTION_S

    released = released_by_group(instance, run, root, machine_id)
    if released:
        return (f"re-execution of run {run.parent_run_id[:8]}: {released} of the same re-execution group already "
                f"released {machine_id}, and that release is live: nothing is left to release (a run killed after "
                f"its switch, or a second re-execution of one run); to train again, {advice}")
    missing = missing_work(instance, run, root, machine_id)
    if missing:
        return (f"re-execution of run {run.parent_run_id[:8]}: what it would reuse is no longer on disk "
                f"({'; '.join(missing)}): a failed run's work is kept {OUTPUT_RETENTION_S / 3600:g} h after the last run of its "
                f"re-execution group ended, and removed once a release used it; {advice}")
    newer = newer_release(instance, run, root, machine_id)
    if newer:
        return (f"re-execution of run {run.parent_run_id[:8]}: {machine_id} has a newer release since its models "
                f"were trained ({newer}); releasing them would replace newer models with older ones; {advice}")
    return None


_CHECKED: set[str] = set()


def check_reexecution(instance: Any, run: Any) -> None:
    """Fail a re-execution that never came through the run queue (`execute_job`) as the queue would refuse it,
    when its resources start, before any step's work. Checked once per run and process."""
    if instance is None or run is None or run.parent_run_id is None or run.run_id in _CHECKED:
        return
    problem = reexecution_problem(instance, run)
    if problem is not None:
        raise dg.Failure(description=f"not run: {problem}")
    _CHECKED.add(run.run_id)
