"""The run queue, with pdm-pipeline's checks at the door: nothing invalid is ever queued.

Every run of `train_machine` reaches the instance through its run coordinator, whatever started it (the UI's
launchpad or a backfill, the sensor, the schedule, the CLI, GraphQL). `ValidatingRunCoordinator` runs the same
checks as `pdm-pipeline validate` and `--set` before the run joins the queue: the machine id, the data contract
of the machine's files, every training and gate setting. A run that fails them is marked FAILED at once with
the full list of problems (each naming the file, column or setting) and never queued or executed. A valid run
gets the tags the queue works with: `pdm/machine_id` (one run per machine at a time) and one retry should its
worker die (a step that fails is not retried).
"""

from __future__ import annotations

from typing import Any

from dagster._core.run_coordinator.base import SubmitRunContext
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

TRAIN_JOB = "train_machine"
MAX_RETRIES_TAG = "dagster/max_retries"
WORKER_LOSS_RETRIES = 1


def _resource_config(run_config: dict[str, Any], name: str) -> dict[str, Any]:
    return ((run_config or {}).get("resources", {}).get(name, {}) or {}).get("config", {}) or {}


def refusal(run: DagsterRun) -> str | None:
    """Why this run must not be queued (None when it may)."""
    if run.job_name != TRAIN_JOB:
        return None
    from pdm_pipeline.defs.launch import check_request
    from pdm_pipeline.errors import PdmError

    machine_id = run.tags.get("dagster/partition")
    if not machine_id:
        return "train_machine runs one machine: the run has no dagster/partition tag (pick a machine partition)"
    data_config = _resource_config(run.run_config, "data_root")
    root = None
    if data_config.get("data_dir"):
        from pathlib import Path

        root = Path(data_config["data_dir"])
    try:
        check_request(machine_id, _resource_config(run.run_config, "training") or None,
                      _resource_config(run.run_config, "gates") or None, root=root)
    except PdmError as exc:
        return str(exc)
    return None


class ValidatingRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator that refuses invalid runs before they are queued."""

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = context.dagster_run
        if run.status == DagsterRunStatus.NOT_STARTED:
            reason = refusal(run)
            if reason is not None:
                self._instance.report_run_failed(run, f"not queued: {reason}")
                self._logger.warning(f"run {run.run_id} refused before queueing: {reason}")
                return self._instance.get_run_by_id(run.run_id) or run
            if run.job_name == TRAIN_JOB:
                # A machine appears when its data appears: a valid machine asked for by id (CLI --server, GraphQL)
                # before the sensor saw it becomes a partition now, instead of failing its first step.
                from pdm_pipeline.defs.launch import TAG_MACHINE, TAG_PID, register_machines

                machine_id = run.tags["dagster/partition"]
                register_machines(self._instance, [machine_id])
                # One run per machine at a time is a limit on this tag (dagster.yaml): a run launched with only
                # its partition (UI launchpad, backfill, GraphQL) gets it here, before the queue reads its tags.
                tags = {TAG_MACHINE: machine_id} if run.tags.get(TAG_MACHINE) != machine_id else {}
                # A queued run whose worker dies (killed, out of memory) is run once more by the daemon; a run that
                # failed in a step is not (dagster.yaml run_retries: retry_on_asset_or_op_failure false).
                if MAX_RETRIES_TAG not in run.tags:
                    tags[MAX_RETRIES_TAG] = str(WORKER_LOSS_RETRIES)
                if run.tags.get(TAG_PID):  # a retry copies its parent's tags: that dead worker is not this run's
                    tags[TAG_PID] = ""
                if tags:
                    self._instance.add_run_tags(run.run_id, tags)
                    run = self._instance.get_run_by_id(run.run_id) or run
                    context = SubmitRunContext(run, context.workspace)
        return super().submit_run(context)
