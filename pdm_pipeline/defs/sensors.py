"""A sensor that trains new generator output: new machines become partitions and get a run in the same tick.

A machine is requested when it is complete (3 splits + metadata), its files have settled (untouched for
SETTLE_SECONDS, the same size and mtime as at the previous tick, every parquet file with its footer), it passes
the data contract (checked here, before anything is queued: a broken machine is reported once per version, not
every tick), its content fingerprint is not the data version of the machine's last release materialization (so
`make dev` after `make demo` starts nothing), and no run of that data version is queued or running.

What is requested is remembered per machine as "<fingerprint>@r<release event>" (the storage id of the machine's
latest machine_release materialization): ticks that see the same data and the same latest release request nothing
again (a run that failed is not retried every tick), but a new release re-opens the question, so data that goes
back to a version trained before (A -> B released -> A) is trained again.

The run key is machine_id:fingerprint:r<release event>:<size/mtime signature of the files>, so a tick evaluated
twice requests nothing twice, while data going back to an earlier version, or files written again after a failed
run, get a key Dagster has not seen (a reused key is dropped by the daemon without a run). A key that was used
anyway (the same files put back with their old mtime, no release since) is reported once at WARNING, not dropped
silently.

Machines that are not complete (a missing split or metadata file; a partition whose directory is gone while its
metadata is not) are reported at WARNING once per change, after they stayed so for two ticks (a generator writing
its files one by one is not reported). A partition whose directory and metadata are both gone is removed from the
machine partitions (when no run of it is queued or running and the data root has its synthetic/ and metadata/
directories): only the partition key goes; its runs, materializations and releases stay, and it becomes a
partition again when its data comes back.

Cursor: {"signatures": {machine: size/mtime signature}, "requested": {machine: fingerprint@r<release event>},
"reported": {machine: fingerprint of a reported problem}, "incomplete": {machine: {"reason", "warned"}},
"seen": [machines found under this data root]}. Only a machine once found under the sensor's root can be gone
from it: partitions of machines trained from another data root are left alone.
"""


import json

import dagster as dg

from pdm_pipeline.core import paths
from pdm_pipeline.core.discovery import scan_machines
from pdm_pipeline.core.validation import machine_report
from pdm_pipeline.defs.assets.fleet import fleet_overview_job
from pdm_pipeline.defs.assets.release import RELEASE_ASSET
from pdm_pipeline.defs.assets.source_data import source_observations
from pdm_pipeline.defs.jobs import train_machine_job
from pdm_pipeline.defs.launch import disk_problem
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME, machines_partitions
from pdm_pipeline.defs.resources import DataRootResource

# Files younger than this are taken as still being written.
SETTLE_SECONDS = 10.0

SENSOR_NAME = "new_machine_data_sensor"

# A run in one of these holds its request: the same data version is not requested again meanwhile.
PENDING_STATUSES = [
    dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]


def latest_release_event(instance: dg.DagsterInstance, machine_id: str) -> tuple[int, str | None]:
    """(storage id, data version) of the machine's latest release materialization; (0, None) when it never
    released. The storage id only grows, so it tells one release from the next even when their data is the same."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(RELEASE_ASSET), asset_partitions=[machine_id]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return 0, None
    value = (records[0].asset_materialization.metadata or {}).get("data_version")
    return records[0].storage_id, getattr(value, "value", value)


def released_data_version(instance: dg.DagsterInstance, machine_id: str) -> str | None:
    """The data version of the machine's latest release materialization (None when it never released)."""
    return latest_release_event(instance, machine_id)[1]


def _cursor(text: str | None) -> dict:
    try:
        cursor = json.loads(text) if text else {}
    except json.JSONDecodeError:
        cursor = {}
    if not isinstance(cursor, dict) or "requested" not in cursor:  # older cursor: {machine: fingerprint}
        cursor = {"requested": cursor if isinstance(cursor, dict) else {}}
    for key in ("signatures", "requested", "reported", "incomplete"):
        if not isinstance(cursor.get(key), dict):
            cursor[key] = {}
    return cursor


def _runs(instance: dg.DagsterInstance, tags: dict[str, str], statuses=None) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags=tags, statuses=statuses), limit=5))


def _report_incomplete(context: dg.SensorEvaluationContext, cursor: dict, now: dict[str, str]) -> None:
    """WARNING once per change of what is missing, after it was seen on two ticks in a row."""
    before = cursor["incomplete"]
    after = {}
    for mid, reason in sorted(now.items()):
        previous = before.get(mid) if isinstance(before.get(mid), dict) else {}
        warned = bool(previous.get("warned")) and previous.get("reason") == reason
        if previous.get("reason") == reason and not warned:
            context.log.warning(f"{mid}: not trained, {reason}")
            warned = True
        elif not warned:
            context.log.debug(f"{mid}: not triggered yet ({reason})")
        after[mid] = {"reason": reason, "warned": warned}
    for mid, previous in before.items():
        if mid not in now and isinstance(previous, dict) and previous.get("warned"):
            context.log.info(f"{mid}: no longer incomplete (was: {previous.get('reason')})")
    cursor["incomplete"] = after


@dg.sensor(
    name=SENSOR_NAME,
    job=train_machine_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Trains new or changed generator output under the data root (one run per machine version), after "
    "the files settled and passed the data contract; removes the partition of a machine whose data and metadata "
    "are both gone (its runs, materializations and releases stay).",
)
def new_machine_data_sensor(context: dg.SensorEvaluationContext, data_root: DataRootResource) -> dg.SensorResult:
    cursor = _cursor(context.cursor)
    root = data_root.root
    instance = context.instance
    known = set(instance.get_dynamic_partitions(MACHINES_PARTITION_NAME))
    run_requests, observations, new_partitions, incomplete = [], [], [], {}
    # A full disk is refused at the door; asked here, the machine would count as requested and never be asked
    # again: nothing is requested meanwhile (nor recorded), and the next tick with room asks.
    disk = disk_problem(root, instance)  # where the run would write: the data root, this instance's directories
    held: list[str] = []
    scans = scan_machines(root, settle_seconds=SETTLE_SECONDS, previous=cursor["signatures"])
    cursor["signatures"] = {s.machine_id: s.signature for s in scans if s.signature}
    # Machines this sensor found under its root: only theirs can be gone from it (a partition registered by a run
    # on another data root, `--data-dir`, was removed here for not being under this one).
    seen = set(cursor.get("seen") or []) | {s.machine_id for s in scans if paths.is_valid_machine_id(s.machine_id)}
    seen |= {m for m in known if paths.is_valid_machine_id(m) and paths.metadata_path(root, m).exists()}
    for scan in scans:
        mid = scan.machine_id
        if not scan.ready:
            if scan.reason and scan.reason.startswith("invalid machine id"):
                if cursor["reported"].get(mid) != "invalid id":
                    context.log.warning(f"{mid!r}: not triggered ({scan.reason})")
                    cursor["reported"][mid] = "invalid id"
            elif scan.missing:
                incomplete[mid] = f"{scan.reason} (a machine needs synthetic/{mid}/{{train,val,test}}.parquet and " \
                                  f"metadata/{mid}_metadata.json)"
            else:
                context.log.debug(f"{mid}: not triggered yet ({scan.reason})")
            continue
        fingerprint = scan.fingerprint or ""
        release_event, released = latest_release_event(instance, mid)
        state = f"{fingerprint}@r{release_event}"
        if cursor["requested"].get(mid) == state:  # requested (or found released) since the latest release
            if mid not in known:
                new_partitions.append(mid)  # its partition was removed meanwhile (UI): its data is here
            continue
        if released == fingerprint:
            cursor["requested"][mid] = state
            if mid not in known:
                new_partitions.append(mid)
                context.log.info(f"{mid}: data back, a partition again; data version {fingerprint[:12]} is already "
                                 "trained and released: nothing to do")
            else:
                context.log.info(f"{mid}: data version {fingerprint[:12]} is already trained and released: "
                                 "nothing to do")
            continue
        if cursor["reported"].get(mid) == fingerprint:
            continue  # this version was checked and reported broken already: not again every tick
        pending = _runs(instance, {"dagster/partition": mid, "pdm/data_version": fingerprint}, PENDING_STATUSES)
        if pending:
            if mid not in known:
                new_partitions.append(mid)
            cursor["requested"][mid] = state
            context.log.info(f"{mid}: data version {fingerprint[:12]} is already queued or running (run "
                             f"{pending[0].run_id[:8]}, {pending[0].status.value}): not requested again")
            continue
        run_key = f"{mid}:{fingerprint}:r{release_event}:{scan.signature}"
        used = _runs(instance, {"dagster/run_key": run_key, "dagster/sensor_name": SENSOR_NAME})
        if used:  # Dagster would drop the request: say so once instead of recording it as requested
            if mid not in known:
                new_partitions.append(mid)
            if cursor["reported"].get(mid) != f"run key {run_key}":
                context.log.warning(
                    f"{mid}: data version {fingerprint[:12]} differs from the one of its latest release "
                    f"({(released or 'none')[:12]}), but these same files were already run since that release (run "
                    f"{used[0].run_id[:8]}, ended {used[0].status.value}): not requested again. Write the files again or "
                    f"run `pdm-pipeline train --machine-id {mid}` to retrain."
                )
                cursor["reported"][mid] = f"run key {run_key}"
            continue
        if disk:
            held.append(mid)
            continue
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
        cursor["requested"][mid] = state
        observations += source_observations(root, mid)
        run_requests.append(
            dg.RunRequest(
                partition_key=mid,
                run_key=run_key,
                tags={"pdm/machine_id": mid, "pdm/data_version": fingerprint, "pdm/trigger": "sensor"},
            )
        )
        context.log.info(f"{mid}: {'new machine' if mid in new_partitions else 'changed data'}, run requested "
                         f"(data version {fingerprint[:12]}, latest release's {(released or 'none')[:12]})")
    if held and cursor.get("disk") != disk:
        context.log.warning(f"not requested: {', '.join(held)}: {disk} (asked again once there is room)")
    if held:
        cursor["disk"] = disk
    else:
        cursor.pop("disk", None)
    removed = _gone_machines(context, cursor, root, (known & seen) - {s.machine_id for s in scans}, incomplete)
    cursor["seen"] = sorted(seen - set(removed))
    _report_incomplete(context, cursor, incomplete)
    partition_requests = []
    if new_partitions:
        partition_requests.append(machines_partitions.build_add_request(new_partitions))
    if removed:
        partition_requests.append(machines_partitions.build_delete_request(removed))
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        asset_events=observations,
        cursor=json.dumps(cursor, sort_keys=True),
    )


def _gone_machines(context: dg.SensorEvaluationContext, cursor: dict, root, absent: set[str],
                   incomplete: dict[str, str]) -> list[str]:
    """Partitions without a directory under synthetic/: the ones whose metadata is gone too are returned (to be
    removed); the others are reported incomplete. Nothing is removed when the data root looks unmounted."""
    absent = sorted(m for m in absent if paths.is_valid_machine_id(m))
    if not absent:
        return []
    mounted = paths.synthetic_dir(root).is_dir() and paths.metadata_dir(root).is_dir()
    removed = []
    for mid in absent:
        meta = paths.metadata_path(root, mid)
        if meta.exists() or not mounted:
            what = (f"metadata/{meta.name} is still there" if meta.exists()
                    else f"the data root {root} has no synthetic/ or metadata/ directory: nothing is removed")
            incomplete[mid] = (f"incomplete: its directory synthetic/{mid} is gone ({what}); it stays a partition "
                               "and the weekly retrain skips it (restore the directory, or remove the metadata too "
                               "to retire the machine)")
            continue
        pending = _runs(context.instance, {"dagster/partition": mid}, PENDING_STATUSES)
        if pending:
            incomplete[mid] = (f"its data and metadata are gone: the partition is removed once run "
                               f"{pending[0].run_id[:8]} ({pending[0].status.value}) has ended")
            continue
        removed.append(mid)
        for key in ("requested", "reported", "incomplete"):
            cursor[key].pop(mid, None)
        context.log.warning(
            f"{mid}: synthetic/{mid} and metadata/{mid}_metadata.json are gone: removed from the machine partitions "
            "(its runs, materializations and releases are kept; it becomes a partition again when its data comes "
            "back)"
        )
    return removed


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
