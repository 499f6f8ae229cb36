"""A sensor that trains new generator output: new machines become partitions and get a run in the same tick.

Cursor: {machine_id: content fingerprint of the last version requested}. A machine is requested when it is
complete (3 splits + metadata), its files have settled, and its fingerprint differs from the cursor's; the
run key is machine_id + fingerprint, so a tick evaluated twice requests nothing twice.
"""


import json

import dagster as dg

from pdm_pipeline.core.discovery import scan_machines
from pdm_pipeline.defs.assets.source_data import source_observations
from pdm_pipeline.defs.jobs import train_machine_job
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME, machines_partitions
from pdm_pipeline.defs.resources import DataRootResource

# Files younger than this are taken as still being written.
SETTLE_SECONDS = 10.0


@dg.sensor(
    job=train_machine_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains new or changed generator output under the data root (one run per machine version).",
)
def new_machine_data_sensor(context: dg.SensorEvaluationContext, data_root: DataRootResource) -> dg.SensorResult:
    cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME))
    run_requests, observations, new_partitions = [], [], []
    for scan in scan_machines(data_root.root, settle_seconds=SETTLE_SECONDS):
        if not scan.ready:
            context.log.info(f"{scan.machine_id}: not triggered ({scan.reason})")
            continue
        if cursor.get(scan.machine_id) == scan.fingerprint:
            continue
        if scan.machine_id not in known:
            new_partitions.append(scan.machine_id)
        observations += source_observations(data_root.root, scan.machine_id)
        run_requests.append(
            dg.RunRequest(
                partition_key=scan.machine_id,
                run_key=f"{scan.machine_id}:{scan.fingerprint}",
                tags={"pdm/machine_id": scan.machine_id, "pdm/data_version": scan.fingerprint or ""},
            )
        )
        cursor[scan.machine_id] = scan.fingerprint or ""
        context.log.info(f"{scan.machine_id}: {'new machine' if scan.machine_id in new_partitions else 'changed data'}, run requested")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[machines_partitions.build_add_request(new_partitions)] if new_partitions else [],
        asset_events=observations,
        cursor=json.dumps(cursor, sort_keys=True),
    )
