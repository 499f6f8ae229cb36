"""Weekly retrain of every registered machine: one run per partition (a backfill on a schedule)."""


import os

import dagster as dg

from pdm_pipeline.core.paths import is_valid_machine_id
from pdm_pipeline.defs.jobs import train_machine_job
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME

# Cron of the fleet retrain; default Sunday 02:00. Override with PDM_RETRAIN_CRON.
RETRAIN_CRON = os.environ.get("PDM_RETRAIN_CRON", "0 2 * * 0")


@dg.schedule(
    job=train_machine_job,
    cron_schedule=RETRAIN_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrains every registered machine (one run per machine partition).",
)
def weekly_fleet_retrain(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    machines = [m for m in context.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME) if is_valid_machine_id(m)]
    if not machines:
        return dg.SkipReason("no machines registered yet")
    return [
        dg.RunRequest(partition_key=m, run_key=f"weekly-{tick}-{m}", tags={"pdm/machine_id": m, "pdm/trigger": "schedule"})
        for m in machines
    ]
