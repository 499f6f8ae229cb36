"""A sensor that trains new generator output: new machines become partitions and get a run in the same tick.

A machine is requested when it is complete (3 splits + metadata), its files have settled (untouched for
SETTLE_SECONDS, the same size and mtime as at the previous tick, every parquet file with its footer), it passes
the data contract (checked here, before anything is queued: a broken machine is reported once per version, not
every tick), and its content fingerprint is neither the one it last requested nor the data version of the
machine's last release (so `make dev` after `make demo` starts nothing). The run key is machine_id + fingerprint,
so a tick evaluated twice requests nothing twice.

Cursor: {"signatures": {machine: size/mtime signature}, "requested": {machine: fingerprint},
"reported": {machine: fingerprint of a reported problem}}.
"""


import json

import dagster as dg

from pdm_pipeline.core.discovery import scan_machines
from pdm_pipeline.core.validation import machine_report
from pdm_pipeline.defs.assets.fleet import fleet_overview_job
from pdm_pipeline.defs.assets.release import RELEASE_ASSET
from pdm_pipeline.defs.assets.source_data import source_observations
from pdm_pipeline.defs.jobs import train_machine_job
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME, machines_partitions
from pdm_pipeline.defs.resources import DataRootResource

# Files younger than this are taken as still being written.
SETTLE_SECONDS = 10.0


def released_data_version(instance: dg.DagsterInstance, machine_id: str) -> str | None:
    """The data version of the machine's latest release materialization (None when it never released)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(RELEASE_ASSET), asset_partitions=[machine_id]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = (records[0].asset_materialization.metadata or {}).get("data_version")
    return getattr(value, "value", value)


def _cursor(text: str | None) -> dict:
    try:
        cursor = json.loads(text) if text else {}
    except json.JSONDecodeError:
        cursor = {}
    if not isinstance(cursor, dict) or "requested" not in cursor:  # older cursor: {machine: fingerprint}
        cursor = {"requested": cursor if isinstance(cursor, dict) else {}}
    for key in ("signatures", "requested", "reported"):
        cursor.setdefault(key, {})
    return cursor


@dg.sensor(
    job=train_machine_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains new or changed generator output under the data root (one run per machine version), after "
    "the files settled and passed the data contract.",
)
def new_machine_data_sensor(context: dg.SensorEvaluationContext, data_root: DataRootResource) -> dg.SensorResult:
    cursor = _cursor(context.cursor)
    root = data_root.root
    known = set(context.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME))
    run_requests, observations, new_partitions = [], [], []
    scans = scan_machines(root, settle_seconds=SETTLE_SECONDS, previous=cursor["signatures"])
    cursor["signatures"] = {s.machine_id: s.signature for s in scans if s.signature}
    for scan in scans:
        mid = scan.machine_id
        if not scan.ready:
            if scan.reason and scan.reason.startswith("invalid machine id"):
                if cursor["reported"].get(mid) != "invalid id":
                    context.log.warning(f"{mid!r}: not triggered ({scan.reason})")
                    cursor["reported"][mid] = "invalid id"
            else:
                context.log.debug(f"{mid}: not triggered yet ({scan.reason})")
            continue
        fingerprint = scan.fingerprint or ""
        if cursor["requested"].get(mid) == fingerprint:
            continue
        if mid in known and released_data_version(context.instance, mid) == fingerprint:
            cursor["requested"][mid] = fingerprint
            context.log.info(f"{mid}: data version {fingerprint[:12]} is already trained and released: nothing to do")
            continue
        if cursor["reported"].get(mid) == fingerprint:
            continue  # this version was checked and reported broken already: not again every tick
        problems = machine_report(root, mid).errors
        if problems:
            context.log.error(
                f"{mid}: not triggered, the data would stop the run ({len(problems)} problem(s)):\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
            cursor["reported"][mid] = fingerprint
            continue
        cursor["reported"].pop(mid, None)
        if mid not in known:
            new_partitions.append(mid)
        observations += source_observations(root, mid)
        run_requests.append(
            dg.RunRequest(
                partition_key=mid,
                run_key=f"{mid}:{fingerprint}",
                tags={"pdm/machine_id": mid, "pdm/data_version": fingerprint, "pdm/trigger": "sensor"},
            )
        )
        cursor["requested"][mid] = fingerprint
        context.log.info(f"{mid}: {'new machine' if mid in new_partitions else 'changed data'}, run requested")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[machines_partitions.build_add_request(new_partitions)] if new_partitions else [],
        asset_events=observations,
        cursor=json.dumps(cursor, sort_keys=True),
    )


@dg.sensor(
    job=fleet_overview_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Refreshes fleet_overview once a minute at most, when a machine has a new release materialization.",
)
def fleet_overview_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    records = context.instance.fetch_materializations(dg.AssetKey(RELEASE_ASSET), limit=1, ascending=False).records
    if not records:
        return dg.SkipReason("no machine released yet")
    latest = records[0].storage_id
    if context.cursor and int(context.cursor) >= latest:
        return dg.SkipReason("no new release since the last overview")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"overview-after-{latest}")], cursor=str(latest))
