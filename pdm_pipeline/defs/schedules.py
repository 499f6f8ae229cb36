"""Weekly retrain of every registered machine whose data is there: one run per such partition.

A partition is requested only when its id is valid, its three splits and its metadata exist, and its data passes
the contract (the same `machine_report` the sensor and the run coordinator use): a renamed or half-removed machine,
or one with broken data, would only become a refused FAILED run every week. The skipped machines are named, each
with its reason, in the tick's log (WARNING) or in its SkipReason when nothing is requested. The contract is read
for at most CHECK_BUDGET_S seconds in all; machines left after that are requested unchecked (the run coordinator
still checks each before it is queued).
"""


import os
import time

import dagster as dg

from pdm_pipeline.core.discovery import machine_files
from pdm_pipeline.core.paths import is_valid_machine_id
from pdm_pipeline.core.validation import machine_report
from pdm_pipeline.defs.jobs import train_machine_job
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME
from pdm_pipeline.defs.resources import DataRootResource

# Cron of the fleet retrain; default Sunday 02:00. Override with PDM_RETRAIN_CRON.
RETRAIN_CRON = os.environ.get("PDM_RETRAIN_CRON", "0 2 * * 0")

# Seconds the schedule spends reading the machines' data for the contract check (its evaluation has a timeout).
CHECK_BUDGET_S = 30.0


def _skip_reason(root, machine_id: str, check_contract: bool) -> str | None:
    """Why the machine cannot be retrained now, or None."""
    if not is_valid_machine_id(machine_id):
        return "not a valid machine id"
    files = [f for part in machine_files(root, machine_id).values() for f in part]
    missing = [str(f.relative_to(root)) for f in files if not f.is_file()]
    if missing:
        return f"incomplete data: missing {', '.join(missing)}"
    if check_contract:
        errors = machine_report(root, machine_id).errors
        if errors:
            return (f"data fails the contract, {len(errors)} problem(s) (`pdm-pipeline validate --machine-id "
                    f"{machine_id}`), first: {errors[0]}")
    return None


@dg.schedule(
    job=train_machine_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrains every registered machine whose data is complete and passes the contract (one run per "
    "machine partition); the others are named in the tick's log.",
)
def weekly_fleet_retrain(context: dg.ScheduleEvaluationContext, data_root: DataRootResource):
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    root = data_root.root
    registered = sorted(context.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME))
    if not registered:
        return dg.SkipReason("no machines registered yet")
    start = time.monotonic()
    machines, skipped, unchecked = [], {}, []
    for m in registered:
        check_contract = time.monotonic() - start < CHECK_BUDGET_S
        try:
            reason = _skip_reason(root, m, check_contract)
        except Exception as exc:  # an unreadable machine is left to the run coordinator's check
            context.log.warning(f"{m}: could not be checked here ({type(exc).__name__}: {exc}); requested anyway")
            reason = None
        if reason:
            skipped[m] = reason
            continue
        machines.append(m)
        if not check_contract:
            unchecked.append(m)
    lines = [f"{m}: not retrained, {why}" for m, why in skipped.items()]
    if not machines:
        return dg.SkipReason(f"no registered machine can be retrained ({len(skipped)} skipped):\n" + "\n".join(lines))
    for line in lines:
        context.log.warning(line)
    if unchecked:
        context.log.info(f"contract not checked here (over {CHECK_BUDGET_S:.0f} s) for {', '.join(unchecked)}: the "
                         "run coordinator checks them before they are queued")
    return [
        dg.RunRequest(partition_key=m, run_key=f"weekly-{tick}-{m}", tags={"pdm/machine_id": m, "pdm/trigger": "schedule"})
        for m in machines
    ]
