"""The sensor that trains new generator output, and the weekly fleet retrain schedule."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME
from pdm_pipeline.defs.resources import DataRootResource
from pdm_pipeline.defs.schedules import weekly_fleet_retrain
from pdm_pipeline.defs.sensors import new_machine_data_sensor


def _age(root: Path, seconds: float = 3600) -> None:
    """Make every file look written `seconds` ago (the sensor waits for files to settle)."""
    past = time.time() - seconds
    for f in root.rglob("*"):
        if f.is_file():
            os.utime(f, (past, past))


@pytest.fixture
def data_root(tiny_fleet_root, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_fleet_root, root)
    _age(root)
    return root


def _tick(instance, root: Path, cursor: str | None, log: list | None = None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"data_root": DataRootResource(data_dir=str(root))}
    ) as context:
        if log is not None:
            context._logger = _list_logger(log)  # the sensor's tick log, as (level, message)
        return new_machine_data_sensor(context)


def _list_logger(sink: list) -> logging.Logger:
    class Sink(logging.Handler):
        def emit(self, record):
            sink.append((record.levelname, record.getMessage()))

    logger = logging.getLogger(f"pdm-test-sensor-{id(sink)}")
    logger.handlers[:] = [Sink()]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


def _partition_adds(result) -> list[str]:
    return [k for req in result.dynamic_partitions_requests if isinstance(req, dg.AddDynamicPartitionsRequest)
            for k in req.partition_keys]


def _partition_deletes(result) -> list[str]:
    return [k for req in result.dynamic_partitions_requests if isinstance(req, dg.DeleteDynamicPartitionsRequest)
            for k in req.partition_keys]


def _settled_tick(instance, root: Path, cursor: str | None):
    """Two ticks: the first records every file's size and mtime, the second sees them unchanged."""
    first = _tick(instance, root, cursor)
    assert first.run_requests == [], "a machine seen for the first time waits one tick (its files may still grow)"
    return _tick(instance, root, first.cursor)


def test_new_machines_become_partitions_and_runs_once_their_files_are_stable(dagster_instance, data_root):
    result = _settled_tick(dagster_instance, data_root, None)
    assert sorted(r.partition_key for r in result.run_requests) == ["motor_001", "pump_002"]
    assert sorted(_partition_adds(result)) == ["motor_001", "pump_002"]
    # Each run key names the machine, its data version, the latest release event (none: r0) and the files' size/mtime
    # signature; observations carry the same version.
    for request in result.run_requests:
        machine, version, release, signature = request.run_key.split(":")
        assert machine == request.partition_key and request.tags["pdm/data_version"] == version
        assert release == "r0" and signature
    observed = {(o.asset_key.to_user_string(), o.partition) for o in result.asset_events}
    assert ("machine_splits", "motor_001") in observed and ("machine_metadata", "pump_002") in observed
    assert all(o.tags["dagster/data_version"] for o in result.asset_events)


def test_nothing_new_triggers_nothing(dagster_instance, data_root):
    first = _settled_tick(dagster_instance, data_root, None)
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, _partition_adds(first))
    second = _tick(dagster_instance, data_root, first.cursor)
    assert second.run_requests == []
    assert second.dynamic_partitions_requests == []
    assert json.loads(second.cursor) == json.loads(first.cursor)


def test_changed_content_requests_exactly_one_retrain(dagster_instance, data_root):
    first = _settled_tick(dagster_instance, data_root, None)
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, _partition_adds(first))
    # Rewriting a file with identical bytes is not a change.
    meta = data_root / "metadata" / "pump_002_metadata.json"
    meta.write_text(meta.read_text())
    _age(data_root)
    same = _tick(dagster_instance, data_root, first.cursor)
    assert _tick(dagster_instance, data_root, same.cursor).run_requests == []
    # A changed byte is.
    content = json.loads(meta.read_text())
    content["note"] = "recalibrated"
    meta.write_text(json.dumps(content))
    _age(data_root)
    changed = _settled_tick(dagster_instance, data_root, first.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["pump_002"]
    assert _partition_adds(changed) == []  # known machine: no new partition
    old_key = next(r.run_key for r in first.run_requests if r.partition_key == "pump_002")
    assert changed.run_requests[0].run_key != old_key
    assert _tick(dagster_instance, data_root, changed.cursor).run_requests == []


def test_half_written_and_invalid_machines_are_not_triggered(dagster_instance, data_root):
    # A machine whose test split is still missing, one whose files are still changing, and a bad id.
    pump_test = (data_root / "synthetic" / "pump_002" / "test.parquet").read_bytes()
    (data_root / "synthetic" / "pump_002" / "test.parquet").unlink()
    motor_train = data_root / "synthetic" / "motor_001" / "train.parquet"
    motor_train.write_bytes(motor_train.read_bytes())  # just written: mtime = now
    bad = data_root / "synthetic" / ".hidden..x"
    bad.mkdir()
    bad_dir = data_root / "synthetic" / "bad..id"
    shutil.copytree(data_root / "synthetic" / "motor_001", bad_dir)
    _age(bad_dir)
    result = _tick(dagster_instance, data_root, None)
    result = _tick(dagster_instance, data_root, result.cursor)
    assert result.run_requests == []
    assert _partition_adds(result) == []
    # Once the files are complete and settled, the machines are picked up.
    (data_root / "synthetic" / "pump_002" / "test.parquet").write_bytes(pump_test)
    _age(data_root)
    later = _settled_tick(dagster_instance, data_root, result.cursor)
    assert sorted(r.partition_key for r in later.run_requests) == ["motor_001", "pump_002"]


def _schedule(instance, root: Path, when: datetime.datetime, log: list | None = None):
    # As a context manager, as the daemon uses it: the context opens its own instance from the ref and must close
    # it (left open, it later reset Dagster's current defs-state storage to a dead instance's).
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources={"data_root": DataRootResource(data_dir=str(root))}
    ) as context:
        if log is not None:
            context._logger = _list_logger(log)
        return weekly_fleet_retrain(context)


def test_weekly_schedule_requests_one_run_per_registered_machine(dagster_instance, data_root):
    sunday = datetime.datetime(2026, 11, 22, 2, 0, tzinfo=datetime.UTC)
    assert isinstance(_schedule(dagster_instance, data_root, sunday), dg.SkipReason)
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, ["motor_001", "pump_002"])
    requests = _schedule(dagster_instance, data_root, sunday)
    assert sorted(r.partition_key for r in requests) == ["motor_001", "pump_002"]
    assert len({r.run_key for r in requests}) == 2
    # The next week's tick gets new run keys (a run key is only ever launched once).
    next_week = _schedule(dagster_instance, data_root, sunday + datetime.timedelta(days=7))
    assert not {r.run_key for r in next_week} & {r.run_key for r in requests}
    assert weekly_fleet_retrain.cron_schedule == "0 2 * * 0"


def test_weekly_schedule_skips_machines_without_complete_valid_data_and_names_them(dagster_instance, data_root):
    """F6: a removed, renamed or broken machine was requested every week, each request a refused FAILED run."""
    sunday = datetime.datetime(2026, 11, 22, 2, 0, tzinfo=datetime.UTC)
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, ["motor_001", "pump_002", "fan_005"])
    # fan_005 has no data at all; pump_002's directory was renamed (its metadata keeps the old name).
    (data_root / "synthetic" / "pump_002").rename(data_root / "synthetic" / "pump_002x")
    log: list = []
    requests = _schedule(dagster_instance, data_root, sunday, log)
    assert [r.partition_key for r in requests] == ["motor_001"]
    warned = " | ".join(m for level, m in log if level == "WARNING")
    assert "fan_005: not retrained, incomplete data: missing" in warned
    assert "pump_002: not retrained, incomplete data: missing synthetic/pump_002/train.parquet" in warned
    # Broken data (a float sensor declared datetime) is skipped too, with the contract's message.
    meta = data_root / "metadata" / "motor_001_metadata.json"
    content = json.loads(meta.read_text())
    sensor = next(c for c, v in content["columns"].items() if v.get("sdtype") == "numerical")
    content["columns"][sensor]["sdtype"] = "datetime"
    meta.write_text(json.dumps(content))
    skipped = _schedule(dagster_instance, data_root, sunday)
    assert isinstance(skipped, dg.SkipReason)
    assert "motor_001: not retrained, data fails the contract" in skipped.skip_message
    assert "fan_005" in skipped.skip_message and "pump_002" in skipped.skip_message


def test_a_writer_pausing_inside_a_file_is_not_taken_for_finished(dagster_instance, data_root):
    """Old mtime but still growing, or no parquet footer yet: not triggered until stable over two ticks."""
    train = data_root / "synthetic" / "pump_002" / "train.parquet"
    content = train.read_bytes()
    train.write_bytes(content[: len(content) // 2])  # truncated: no footer
    _age(data_root)
    first = _tick(dagster_instance, data_root, None)
    second = _tick(dagster_instance, data_root, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["motor_001"]
    train.write_bytes(content)
    _age(data_root)
    third = _tick(dagster_instance, data_root, second.cursor)
    assert third.run_requests == [], "size changed since the last tick: wait one more"
    fourth = _tick(dagster_instance, data_root, third.cursor)
    assert [r.partition_key for r in fourth.run_requests] == ["pump_002"]


def test_broken_data_is_reported_once_not_every_tick_and_never_queued(dagster_instance, data_root, monkeypatch):
    from pdm_pipeline.defs import sensors

    meta = data_root / "metadata" / "pump_002_metadata.json"
    content = json.loads(meta.read_text())
    content["columns"]["bearing_temp_C"]["sdtype"] = "datetime"  # a float sensor declared datetime
    meta.write_text(json.dumps(content))
    _age(data_root)
    checked = []
    real = sensors.machine_report
    monkeypatch.setattr(sensors, "machine_report", lambda root, mid: checked.append(mid) or real(root, mid))
    cursor, requests, reported = None, [], []
    for _ in range(4):
        result = _tick(dagster_instance, data_root, cursor)
        requests += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
        reported.append(json.loads(cursor)["reported"].get("pump_002"))
    assert requests == ["motor_001"]
    problems = real(data_root, "pump_002").errors
    assert any("bearing_temp_C" in str(p) and "sdtype 'datetime'" in str(p) for p in problems)
    # Reported on the first settled tick, then remembered by data version: neither re-read nor re-logged.
    assert reported[0] is None and reported[1] is not None and len(set(reported[1:])) == 1
    assert checked.count("pump_002") == 1


def test_a_machine_already_released_with_this_data_is_not_retrained(dagster_instance, data_root):
    """`make dev` after `make demo`: the demo's release of the same data version starts nothing."""
    from pdm_pipeline.core.contract import machine_fingerprint

    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, ["motor_001", "pump_002"])
    fingerprint = machine_fingerprint(data_root, "motor_001")
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="machine_release", partition="motor_001", metadata={"data_version": fingerprint},
    ))
    result = _settled_tick(dagster_instance, data_root, None)
    assert [r.partition_key for r in result.run_requests] == ["pump_002"]


def test_the_fleet_overview_is_refreshed_once_per_new_release(dagster_instance):
    from pdm_pipeline.defs.sensors import fleet_overview_sensor

    def tick(cursor):
        with dg.build_sensor_context(instance=dagster_instance, cursor=cursor) as context:
            return fleet_overview_sensor(context)

    assert isinstance(tick(None), dg.SkipReason)  # nothing released yet
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, ["motor_001"])
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization("machine_release", partition="motor_001"))
    first = tick(None)
    assert len(first.run_requests) == 1
    assert isinstance(tick(first.cursor), dg.SkipReason), "the same release is not overviewed twice"
    dagster_instance.report_runless_asset_event(dg.AssetMaterialization("machine_release", partition="motor_001"))
    assert len(tick(first.cursor).run_requests) == 1


def test_files_dated_in_the_future_settle_by_two_scans_not_by_their_age(tiny_fleet_root, tmp_path):
    """Clock skew (an NFS server ahead, a tar with future dates): files a year ahead waited for the clock to catch
    up, silently. They now wait for one more scan that sees them unchanged, and the reason says why."""
    from pdm_pipeline.core.discovery import machine_files, scan_machines

    root = tmp_path / "data"
    shutil.copytree(tiny_fleet_root, root)
    machine = "motor_001"
    ahead = time.time() + 365 * 86400
    for part in machine_files(root, machine).values():
        for f in part:
            os.utime(f, (ahead, ahead))
    first = {s.machine_id: s for s in scan_machines(root)}[machine]
    assert not first.ready and "in the future (clock skew?)" in first.reason, first.reason
    second = {s.machine_id: s for s in scan_machines(root, previous={machine: first.signature})}[machine]
    assert second.ready, second.reason


# --- What the sensor daemon does with a tick's result, on a real instance: partition requests are applied; a run
# request whose run key this sensor already used is dropped ("already completed with run keys"), any other becomes
# a run. A run that trains "releases": a machine_release materialization with its data version.

def _launch(instance, result, status=dg.DagsterRunStatus.SUCCESS) -> list[str]:
    """The machines whose request became a run."""
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)
    launched = []
    for request in result.run_requests:
        sensor_tags = {"dagster/run_key": request.run_key, "dagster/sensor_name": "new_machine_data_sensor"}
        if instance.get_runs(dg.RunsFilter(tags=sensor_tags)):
            continue
        run = dg.DagsterRun(job_name="train_machine", run_id=str(uuid.uuid4()), status=status,
                            tags={**request.tags, **sensor_tags, "dagster/partition": request.partition_key})
        launched.append(instance.add_run(run).tags["dagster/partition"])
    return launched


def _release(instance, machine: str, data_version: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="machine_release", partition=machine, metadata={"data_version": data_version},
    ))


def _pump_versions(data_root: Path):
    """pump_002's metadata as written (version A) and with one changed value (version B)."""
    meta = data_root / "metadata" / "pump_002_metadata.json"
    original = meta.read_text()
    changed = json.loads(original)
    changed["note"] = "recalibrated"
    return meta, original, json.dumps(changed)


def _write(path: Path, text: str, root: Path) -> None:
    path.write_text(text)
    _age(root)


def _trained_by_the_sensor(instance, data_root: Path) -> dict[str, str]:
    """Both machines requested by the sensor, run and released; returns {machine: data version}, cursor."""
    first = _settled_tick(instance, data_root, None)
    _launch(instance, first)
    versions = {r.partition_key: r.tags["pdm/data_version"] for r in first.run_requests}
    for machine, version in versions.items():
        _release(instance, machine, version)
    return versions, first.cursor


def test_data_that_goes_back_to_an_earlier_version_is_trained_again(dagster_instance, data_root):
    """F3: A trained, B trained and released, A put back: the request for A reused A's first run key, the daemon
    dropped it and the sensor recorded A as requested; nothing was trained again, the live release stayed B's."""
    meta, version_a_text, version_b_text = _pump_versions(data_root)
    versions, cursor = _trained_by_the_sensor(dagster_instance, data_root)
    _write(meta, version_b_text, data_root)
    to_b = _settled_tick(dagster_instance, data_root, cursor)
    assert _launch(dagster_instance, to_b) == ["pump_002"]
    _release(dagster_instance, "pump_002", to_b.run_requests[0].tags["pdm/data_version"])

    _write(meta, version_a_text, data_root)
    seen = _tick(dagster_instance, data_root, to_b.cursor)
    back = _tick(dagster_instance, data_root, seen.cursor)
    assert [r.tags["pdm/data_version"] for r in back.run_requests] == [versions["pump_002"]]
    # The same tick evaluated twice (its cursor not saved) asks for the same key, which Dagster drops.
    replay = _tick(dagster_instance, data_root, seen.cursor)
    assert [r.run_key for r in replay.run_requests] == [r.run_key for r in back.run_requests]
    assert _launch(dagster_instance, back) == ["pump_002"], \
        "the request for version A was dropped as a duplicate run key"
    assert _launch(dagster_instance, replay) == []
    # While it is queued or just trained, the ticks request nothing more.
    pending = _tick(dagster_instance, data_root, back.cursor)
    assert pending.run_requests == []
    _release(dagster_instance, "pump_002", versions["pump_002"])
    assert _tick(dagster_instance, data_root, pending.cursor).run_requests == []
    assert _tick(dagster_instance, data_root, None).run_requests == []  # even with its cursor lost


def test_a_release_made_while_the_data_went_back_is_caught_up(dagster_instance, data_root):
    """B running, data back to A (A is live: nothing to do), then B's run releases B: the next tick trains A again.
    The cursor held 'A requested' and never looked again."""
    meta, version_a_text, version_b_text = _pump_versions(data_root)
    versions, cursor = _trained_by_the_sensor(dagster_instance, data_root)
    _write(meta, version_b_text, data_root)
    to_b = _settled_tick(dagster_instance, data_root, cursor)
    _launch(dagster_instance, to_b, status=dg.DagsterRunStatus.STARTED)
    _write(meta, version_a_text, data_root)
    back = _settled_tick(dagster_instance, data_root, to_b.cursor)
    assert back.run_requests == [], "A is what the live release was trained on"
    _release(dagster_instance, "pump_002", to_b.run_requests[0].tags["pdm/data_version"])  # B's run ends
    after = _tick(dagster_instance, data_root, back.cursor)
    assert [r.tags["pdm/data_version"] for r in after.run_requests] == [versions["pump_002"]]
    assert _launch(dagster_instance, after) == ["pump_002"]


def test_a_failed_version_is_not_retried_every_tick_but_files_written_again_are(dagster_instance, data_root):
    meta, version_a_text, version_b_text = _pump_versions(data_root)
    versions, cursor = _trained_by_the_sensor(dagster_instance, data_root)
    _write(meta, version_b_text, data_root)
    b_mtimes = {f: f.stat().st_mtime_ns for f in data_root.rglob("*") if f.is_file()}
    to_b = _settled_tick(dagster_instance, data_root, cursor)
    assert len(_launch(dagster_instance, to_b, status=dg.DagsterRunStatus.FAILURE)) == 1  # no release
    cursor = to_b.cursor
    for _ in range(3):
        tick = _tick(dagster_instance, data_root, cursor)
        assert tick.run_requests == []
        cursor = tick.cursor
    # A back (live: nothing), then B's very files back with their old mtime: the key is the failed run's, Dagster
    # would drop it: said once at WARNING, not requested.
    _write(meta, version_a_text, data_root)
    cursor = _settled_tick(dagster_instance, data_root, cursor).cursor
    meta.write_text(version_b_text)
    for f, mtime in b_mtimes.items():
        os.utime(f, ns=(mtime, mtime))
    log: list = []
    same = _settled_tick(dagster_instance, data_root, cursor)
    assert same.run_requests == []
    again = _tick(dagster_instance, data_root, same.cursor, log)
    assert again.run_requests == [] and log == [], "said once, not every tick"
    log.clear()
    same = _tick(dagster_instance, data_root, cursor, log)
    same = _tick(dagster_instance, data_root, same.cursor, log)
    assert [m for level, m in log if level == "WARNING" and "were already run since that release" in m]
    # B written again (a new delivery): trained.
    _write(meta, version_b_text, data_root)
    retry = _settled_tick(dagster_instance, data_root, same.cursor)
    assert _launch(dagster_instance, retry) == ["pump_002"]


def _move_machine_away(root: Path, machine: str, to: Path) -> None:
    to.mkdir(exist_ok=True)
    shutil.move(root / "synthetic" / machine, to / machine)
    for f in (root / "metadata").glob(f"{machine}_*.json"):
        shutil.move(f, to / f.name)


def _move_machine_back(root: Path, machine: str, frm: Path) -> None:
    shutil.move(frm / machine, root / "synthetic" / machine)
    for f in frm.glob(f"{machine}_*.json"):
        shutil.move(f, root / "metadata" / f.name)
    _age(root)


def test_a_machine_whose_data_and_metadata_are_gone_stops_being_a_partition_and_comes_back(
        dagster_instance, data_root, tmp_path):
    """F6: removed machines stayed partitions forever (and were requested every week). Only the partition key
    goes: its runs and release materializations stay, and its data coming back makes it a partition again."""
    versions, cursor = _trained_by_the_sensor(dagster_instance, data_root)
    # a machine trained from another data root (`--data-dir`) is a partition this root never held: left alone
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, ["elsewhere_009"])
    _move_machine_away(data_root, "pump_002", tmp_path / "away")
    log: list = []
    gone = _tick(dagster_instance, data_root, cursor, log)
    assert _partition_deletes(gone) == ["pump_002"] and gone.run_requests == []
    dagster_instance.delete_dynamic_partition(MACHINES_PARTITION_NAME, "elsewhere_009")
    _launch(dagster_instance, gone)
    assert dagster_instance.get_dynamic_partitions(MACHINES_PARTITION_NAME) == ["motor_001"]
    assert any(level == "WARNING" and "pump_002: synthetic/pump_002 and metadata/pump_002_metadata.json are gone"
               in m for level, m in log)
    from pdm_pipeline.defs.sensors import released_data_version

    assert released_data_version(dagster_instance, "pump_002") == versions["pump_002"]
    assert dagster_instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "pump_002"}))
    later = _tick(dagster_instance, data_root, gone.cursor)
    assert _partition_deletes(later) == [] and later.run_requests == []
    # The same data back: a partition again, nothing to train (that version is released).
    _move_machine_back(data_root, "pump_002", tmp_path / "away")
    back = _settled_tick(dagster_instance, data_root, later.cursor)
    assert _partition_adds(back) == ["pump_002"] and back.run_requests == []
    _launch(dagster_instance, back)
    assert sorted(dagster_instance.get_dynamic_partitions(MACHINES_PARTITION_NAME)) == ["motor_001", "pump_002"]


def test_incomplete_machines_are_reported_once_and_half_gone_ones_are_kept(dagster_instance, data_root, tmp_path):
    """A renamed directory (its metadata keeps the old name) was logged at DEBUG only. Now both names are reported
    at WARNING once they stayed so for a tick, once per change; the old partition stays (its metadata is there);
    a partition with a queued run, or under a data root without synthetic/, is never removed."""
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, ["motor_001", "pump_002"])
    (data_root / "synthetic" / "pump_002").rename(data_root / "synthetic" / "pump_002x")
    log: list = []
    first = _tick(dagster_instance, data_root, None, log)
    assert not [m for level, m in log if level == "WARNING"], "a generator may still be writing: not yet"
    second = _tick(dagster_instance, data_root, first.cursor, log)
    warnings = [m for level, m in log if level == "WARNING"]
    assert len(warnings) == 2, warnings
    assert "pump_002: not trained, incomplete: its directory synthetic/pump_002 is gone " \
           "(metadata/pump_002_metadata.json is still there)" in warnings[0]
    assert "pump_002x: not trained, incomplete: missing metadata/pump_002x_metadata.json" in warnings[1]
    log.clear()
    third = _tick(dagster_instance, data_root, second.cursor, log)
    assert not [m for level, m in log if level == "WARNING"], "once per change, not every tick"
    assert _partition_deletes(first) == _partition_deletes(second) == _partition_deletes(third) == []
    # The metadata goes too while a run of the machine is running: removed only once that run has ended.
    (data_root / "metadata" / "pump_002_metadata.json").unlink()
    queued = dagster_instance.add_run(dg.DagsterRun(
        job_name="train_machine", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": "pump_002"}))
    waiting = _tick(dagster_instance, data_root, third.cursor)
    assert _partition_deletes(waiting) == []
    dagster_instance.report_run_failed(queued)
    assert _partition_deletes(_tick(dagster_instance, data_root, waiting.cursor)) == ["pump_002"]
    # A data root without synthetic/ (unmounted, mistyped) removes nothing.
    shutil.move(data_root / "synthetic", tmp_path / "synthetic-elsewhere")
    assert _partition_deletes(_tick(dagster_instance, data_root, waiting.cursor)) == []


def test_a_full_disk_holds_requests_until_there_is_room(dagster_instance, data_root, monkeypatch):
    """The door refuses runs on a full disk; the sensor recorded the machine as requested anyway and never asked
    again, so new data was silently never trained (verification sweep). It now requests nothing and records
    nothing while the disk is full, warns once, and asks at the first tick with room."""
    from collections import namedtuple

    first = _tick(dagster_instance, data_root, None)
    real, usage = shutil.disk_usage, namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    log: list = []
    held = _tick(dagster_instance, data_root, first.cursor, log)
    assert held.run_requests == [] and json.loads(held.cursor)["requested"] == {}
    warnings = [m for level, m in log if level == "WARNING" and "not requested" in m]
    assert len(warnings) == 1 and "motor_001" in warnings[0] and "(1 MB free)" in warnings[0], log
    log.clear()
    again = _tick(dagster_instance, data_root, held.cursor, log)
    assert again.run_requests == [] and not [m for level, m in log if "not requested" in m]  # said once
    monkeypatch.setattr(shutil, "disk_usage", real)
    room = _tick(dagster_instance, data_root, again.cursor)
    assert sorted(r.partition_key for r in room.run_requests) == ["motor_001", "pump_002"]
    assert "disk" not in json.loads(room.cursor)
