"""The sensor that trains new generator output, and the weekly fleet retrain schedule."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
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


def _tick(instance, root: Path, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"data_root": DataRootResource(data_dir=str(root))}
    )
    return new_machine_data_sensor(context)


def _partition_adds(result) -> list[str]:
    return [k for req in result.dynamic_partitions_requests for k in req.partition_keys]


def _settled_tick(instance, root: Path, cursor: str | None):
    """Two ticks: the first records every file's size and mtime, the second sees them unchanged."""
    first = _tick(instance, root, cursor)
    assert first.run_requests == [], "a machine seen for the first time waits one tick (its files may still grow)"
    return _tick(instance, root, first.cursor)


def test_new_machines_become_partitions_and_runs_once_their_files_are_stable(dagster_instance, data_root):
    result = _settled_tick(dagster_instance, data_root, None)
    assert sorted(r.partition_key for r in result.run_requests) == ["motor_001", "pump_002"]
    assert sorted(_partition_adds(result)) == ["motor_001", "pump_002"]
    # Each run key names the machine and its data version; observations carry the same version.
    for request in result.run_requests:
        assert request.run_key.startswith(request.partition_key + ":")
        assert request.tags["pdm/data_version"] == request.run_key.split(":", 1)[1]
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


def test_weekly_schedule_requests_one_run_per_registered_machine(dagster_instance):
    sunday = datetime.datetime(2026, 11, 22, 2, 0, tzinfo=datetime.UTC)
    context = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=sunday)
    assert isinstance(weekly_fleet_retrain(context), dg.SkipReason)
    dagster_instance.add_dynamic_partitions(MACHINES_PARTITION_NAME, ["motor_001", "pump_002", "fan_005"])
    requests = weekly_fleet_retrain(context)
    assert sorted(r.partition_key for r in requests) == ["fan_005", "motor_001", "pump_002"]
    assert len({r.run_key for r in requests}) == 3
    # The next week's tick gets new run keys (a run key is only ever launched once).
    next_week = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=sunday + datetime.timedelta(days=7))
    assert not {r.run_key for r in weekly_fleet_retrain(next_week)} & {r.run_key for r in requests}
    assert weekly_fleet_retrain.cron_schedule == "0 2 * * 0"


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
        return fleet_overview_sensor(dg.build_sensor_context(instance=dagster_instance, cursor=cursor))

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
