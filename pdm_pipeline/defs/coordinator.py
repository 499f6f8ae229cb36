"""The run queue, with pdm-pipeline's checks at the door: nothing invalid is ever queued.

Every run submitted to the instance reaches its run coordinator, whatever started it (the UI's launchpad, its
Materialize button (`__ASSET_JOB`) or a backfill, the sensor, the schedule, the CLI's `--server`, GraphQL).
`ValidatingRunCoordinator` runs the same checks as `pdm-pipeline validate` and `--set` before the run joins the
queue:

- a run of one machine (any job, any asset selection, with a `dagster/partition` tag): the machine id, the data
  contract of the machine's files, every training and gate setting (`launch.check_request`);
- a run that targets machine-partitioned assets without a partition (`train_machine` or `__ASSET_JOB`): refused;
- any other run with training, gate or data-root settings (`train_fleet_models`): those settings; a run that
  trains the fleet models: free disk space too, as for a machine's run (`launch.disk_problem`);
- a re-execution of a machine run (UI "Re-execute from failure", a retry): the work it reuses from its parent
  (trained models, stored outputs) is still on disk, and the machine has no newer release than those models
  (`reexecution.reexecution_problem`).

Settings are read as Dagster will give them to the run: `{env: VAR}` resolved, defaults filled in (the run's
config is processed with the resources' own config schema). A run that fails the checks is marked FAILED at
once with the full list of problems (each naming the file, column or setting), tagged `pdm/refused`, and never
queued or executed. A valid machine run gets the tags the queue works with: `pdm/machine_id` (one run per
machine at a time, dagster.yaml) and one retry should its worker die (a step that fails is not retried).

`dagster job execute` and `dagster asset materialize` execute in their own process without submitting the run,
so no run coordinator sees them: such a run (no `pdm/checked` tag) meets the same checks when its resources
start, and fails there, before any step's work, naming the problem.
"""

from __future__ import annotations

from typing import Any

from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

TRAIN_JOB = "train_machine"
MAX_RETRIES_TAG = "dagster/max_retries"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
REFUSED_TAG = "pdm/refused"
# On every run an entry point checked (this coordinator, the CLI's in-process runs): a run without it (`dagster job
# execute`, `dagster asset materialize`, a direct call) is checked when its resources start (defs/resources.py).
CHECKED_TAG = "pdm/checked"
REFUSED_PREFIX = "not queued: "
WORKER_LOSS_RETRIES = 1


class _Refused(Exception):
    pass


def _resource_classes() -> dict[str, Any]:
    from pdm_pipeline.defs.resources import DataRootResource, GatesResource, TrainingResource

    return {"data_root": DataRootResource, "training": TrainingResource, "gates": GatesResource}


def _raw_resource_config(run_config: dict[str, Any] | None, name: str) -> Any:
    resources = (run_config or {}).get("resources") or {}
    entry = resources.get(name)
    if not isinstance(entry, dict) or "config" not in entry:
        return None
    return entry.get("config")


def resolved_settings(run_config: dict[str, Any] | None) -> dict[str, dict[str, Any] | None]:
    """The run's data_root, training and gates config as the run will see it: `{env: VAR}` resolved and
    defaults filled in by the resources' own config schema (None for a resource the run does not configure).

    Raises _Refused naming the setting when Dagster could not resolve it (an environment variable not set)."""
    from dagster._config import process_config

    out: dict[str, dict[str, Any] | None] = {}
    for name, cls in _resource_classes().items():
        raw = _raw_resource_config(run_config, name)
        if raw is None:
            out[name] = None
            continue
        result = process_config(cls.to_config_schema().as_field().config_type, raw)
        if not result.success:
            problems = []
            for error in result.errors or []:
                message = error.message.split("\n\nStack Trace")[0]
                message = message.replace("dagster._config.errors.PostProcessingError: ", "").replace("\n", " ")
                problems.append(f"resources.{name}.config: {message}")
            raise _Refused("invalid run config: " + "; ".join(problems))
        out[name] = dict(result.value or {})
    return out


def _machine_partitioned_targets(run: DagsterRun, workspace: Any) -> list[str] | None:
    """The machine-partitioned assets the run materializes or checks (None when the workspace cannot tell)."""
    if workspace is None or run.remote_job_origin is None:
        return None
    try:
        origin = run.remote_job_origin
        location = workspace.get_code_location(origin.location_name)
        repository = location.get_repository(origin.repository_origin.repository_name)
        snaps = repository.get_asset_node_snaps()
    except Exception:  # a location that cannot be read: the partition tag alone decides
        return None
    partitioned = {s.asset_key for s in snaps if s.partitions is not None}
    if run.asset_selection is not None:
        targets = set(run.asset_selection)
    else:
        targets = {s.asset_key for s in repository.get_asset_node_snaps(job_name=run.job_name)}
    targets |= {c.asset_key for c in (run.asset_check_selection or ())}
    return sorted(k.to_user_string() for k in targets & partitioned)


def _machine_of(run: DagsterRun) -> str | None:
    machine_id = run.tags.get(PARTITION_TAG)
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if not machine_id and start and start == end:
        machine_id = start
    elif not machine_id and (start or end):
        raise _Refused(f"the run covers the machine range {start}..{end}: one run per machine (backfill one run "
                       "per partition)")
    return machine_id


# The machine's data as the run reads it: every step after it loads it from this run's stored outputs.
DATA_ASSET = "machine_dataset"
SOURCE_ASSETS = ("machine_splits", "machine_metadata")  # observed, never read by the steps


def _selection_problem(run: DagsterRun) -> str | None:
    """A machine run that selects steps after machine_dataset without it (not a re-execution of an earlier run,
    whose stored outputs it reads): it would fail in its first step ('no stored output'), or read a dataset
    stored by an earlier run, whatever became of it."""
    # A re-execution reads what its parent stored, unless the parent was refused (its tags, copied, say so): then
    # nothing was stored and it is a first run.
    if run.asset_selection is None or (run.parent_run_id is not None and run.tags.get(REFUSED_TAG) != "true"):
        return None
    names = sorted(k.to_user_string() for k in run.asset_selection)
    after = [n for n in names if n not in (DATA_ASSET, *SOURCE_ASSETS) and not n.startswith("fleet_")]
    if DATA_ASSET in names or not after:
        return None
    return (f"the run selects {', '.join(after)} without {DATA_ASSET}, which every step after it reads in the "
            f"same run: add {DATA_ASSET} and the steps between (or materialize all)")


def _trains_fleets(run: DagsterRun, instance: Any = None) -> bool:
    """A run that trains the pooled fleet models (train_fleet_models, fleet_models selected in the UI, or a job
    made of it: `pdm-pipeline fleet`, `dagster asset materialize`): it writes models and MLflow records like a
    machine's run."""
    from pdm_pipeline.defs.assets.fleet import FLEET_JOB, FLEET_MODELS

    if run.job_name == FLEET_JOB:
        return True
    if run.asset_selection:  # (a job built for the assets it runs, as dg.materialize builds one, has an empty one)
        return any(k.to_user_string() == FLEET_MODELS for k in run.asset_selection)
    if instance is not None and run.job_snapshot_id and instance.has_job_snapshot(run.job_snapshot_id):
        return FLEET_MODELS in instance.get_job_snapshot(run.job_snapshot_id).node_names
    return False


def refusal(run: DagsterRun, workspace: Any = None, instance: Any = None) -> str | None:
    """Why this run must not be queued (None when it may). `instance`: the one that records the run (its
    directories' free space is checked; DAGSTER_HOME's without it)."""
    from pathlib import Path

    from pdm_pipeline.core.config import build_gate_settings, build_training_config
    from pdm_pipeline.core.paths import data_root
    from pdm_pipeline.defs.launch import check_request, disk_problem
    from pdm_pipeline.errors import PdmError

    try:
        machine_id = _machine_of(run)
        settings = resolved_settings(run.run_config)
        root = None
        if settings["data_root"] and settings["data_root"].get("data_dir"):
            root = Path(settings["data_root"]["data_dir"])
        if machine_id:
            check_request(machine_id, settings["training"], settings["gates"], root=root, instance=instance)
            return _selection_problem(run)
        if run.job_name == TRAIN_JOB:
            return (f"{TRAIN_JOB} runs one machine: the run has no {PARTITION_TAG} tag (pick a machine partition)")
        targets = _machine_partitioned_targets(run, workspace)
        if targets:
            return (f"the run materializes machine-partitioned assets ({', '.join(targets)}) without a machine: "
                    f"it has no {PARTITION_TAG} tag (pick a machine partition)")
        if settings["training"] is not None:
            build_training_config(settings["training"])
        if settings["gates"] is not None:
            build_gate_settings(settings["gates"])
        if _trains_fleets(run, instance) and (problem := disk_problem(data_root() if root is None else root, instance)):
            return f"fleet models: {problem}"
    except (_Refused, PdmError) as exc:
        return str(exc)
    return None


class ValidatingRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator that refuses invalid runs before they are queued."""

    def register_instance(self, instance: Any) -> None:
        # The webserver and the daemon (every sensor, schedule, UI and GraphQL launch) reach the instance through
        # its coordinator: one started outside DAGSTER_HOME would keep a second store (dagster.yaml's relative
        # directories are read against the working directory).
        from pdm_pipeline.defs.instance_config import misplaced_directories

        if (problem := misplaced_directories(instance)) is not None:
            raise RuntimeError(problem)
        super().register_instance(instance)

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        from pdm_pipeline.defs.reexecution import reexecution_problem

        run = context.dagster_run
        if run.status == DagsterRunStatus.NOT_STARTED:
            reason = refusal(run, context.workspace, self._instance) or reexecution_problem(self._instance, run)
            if reason is not None:
                self._instance.add_run_tags(run.run_id, {REFUSED_TAG: "true"})
                self._instance.report_run_failed(run, f"{REFUSED_PREFIX}{reason}")
                self._logger.warning(f"run {run.run_id} refused before queueing: {reason}")
                return self._instance.get_run_by_id(run.run_id) or run
            # (a re-execution copies its parent's tags: a refused parent's mark is not this run's)
            tags = {CHECKED_TAG: "coordinator", REFUSED_TAG: ""}
            machine_id = _machine_of(run)
            if machine_id:
                # A machine appears when its data appears: a valid machine asked for by id (CLI --server, GraphQL)
                # before the sensor saw it becomes a partition now, instead of failing its first step.
                from pdm_pipeline.defs.launch import TAG_MACHINE, TAG_PID, register_machines

                register_machines(self._instance, [machine_id])
                # One run per machine at a time is a limit on this tag (dagster.yaml): a run launched with only
                # its partition (UI launchpad or Materialize button, backfill, GraphQL) gets it here, before the
                # queue reads its tags, whatever its job.
                if run.tags.get(TAG_MACHINE) != machine_id:
                    tags[TAG_MACHINE] = machine_id
                # A queued run whose worker dies (killed, out of memory) is run once more by the daemon; a run that
                # failed in a step is not (dagster.yaml run_retries: retry_on_asset_or_op_failure false).
                if MAX_RETRIES_TAG not in run.tags:
                    tags[MAX_RETRIES_TAG] = str(WORKER_LOSS_RETRIES)
                if run.tags.get(TAG_PID):  # a retry copies its parent's tags: that dead worker is not this run's
                    tags[TAG_PID] = ""
            self._instance.add_run_tags(run.run_id, tags)
            context = SubmitRunContext(self._instance.get_run_by_id(run.run_id) or run, context.workspace)
        return super().submit_run(context)
