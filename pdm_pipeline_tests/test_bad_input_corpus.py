"""Every broken variant of a machine's data ends clearly, and released models are never replaced by a failure.

One good machine is trained and released once; then each variant of bad_inputs.py breaks a copy of its files
(or the machine id, or a gate limit) and goes through the real entry point:

- broken data or a bad id is refused BEFORE anything is queued (no run, no partition), with the messages of
  `validate`; and if the data breaks after a run was queued (the check skipped here on purpose), that run fails
  at `machine_dataset` through a deliberate error before any model trains;
- an unusable label keeps the previous classifier (byte-identical) while the other families release;
- a blocking gate leaves the current release exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pdm_pipeline import families
from pdm_pipeline.core import paths
from pdm_pipeline.core.gates import DATA_CHECKS
from pdm_pipeline.core.paths import InvalidMachineIdError
from pdm_pipeline.core.simulate import simulate_machine
from pdm_pipeline.defs.launch import PreQueueError, machine_summary, materialize_machine
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME
from pdm_pipeline_tests.bad_inputs import (
    CONTRACT,
    DATA_CHECK,
    GATE,
    LABEL_DEFECT,
    MACHINE_ID,
    VARIANTS,
    BadInput,
    MachineFiles,
    copy_machine,
)

pytestmark = pytest.mark.slow

MACHINE = "motor_001"
ROWS = (2500, 700, 700)
FAST = {"time_limit_s": 10, "extra": {"forecast_validation_windows": 0}}
CLEAR_FAILURES = {"Failure", "DagsterAssetCheckFailedError"}


@dataclass
class ReleasedMachine:
    root: Path
    instance: dg.DagsterInstance
    files: MachineFiles
    pristine: MachineFiles


def tree_hash(directory: Path) -> str:
    """sha256 over the relative paths and bytes of every file under `directory`."""
    digest = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(f.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def current(root: Path) -> tuple[str, str]:
    """(release id, content hash) of the machine's current release."""
    link = paths.current_release(root, MACHINE)
    return os.readlink(link), tree_hash(link.resolve())


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Iterator[ReleasedMachine]:
    base = tmp_path_factory.mktemp("bad_inputs")
    root = base / "data"
    simulate_machine(root, MACHINE, "motor", seed=3, rows=ROWS)
    files = MachineFiles(root, MACHINE)
    pristine = MachineFiles(base / "pristine", MACHINE)
    copy_machine(files, pristine)
    home = base / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp, dg.instance_for_test(temp_dir=str(home)) as instance:
        mp.setenv("PDM_DATA_DIR", str(root))
        result = materialize_machine(instance, MACHINE, training=FAST, log_level="WARNING")
        assert result.success, f"the good machine must train and release: {result.get_failed_step_keys()}"
        summary = machine_summary(instance, MACHINE)
        assert {m["action"] for m in summary["models"].values()} == {"released"}
        yield ReleasedMachine(root, instance, files, pristine)


def _assert_contains(message: str, expected: tuple[str, ...], name: str) -> None:
    missing = [s for s in expected if s not in message]
    assert not missing, f"{name}: message lacks {missing}:\n{message}"


def _refused_before_queueing(machine: ReleasedMachine, variant: BadInput) -> None:
    runs_before = len(machine.instance.get_runs())
    error = InvalidMachineIdError if variant.where == MACHINE_ID else PreQueueError
    machine_id = variant.machine_id if variant.where == MACHINE_ID else MACHINE
    with pytest.raises(error) as raised:
        materialize_machine(machine.instance, machine_id, training=FAST)
    _assert_contains(str(raised.value), variant.expected, variant.name)
    assert len(machine.instance.get_runs()) == runs_before, f"{variant.name}: a run was started"
    if variant.where == MACHINE_ID:
        assert variant.machine_id not in machine.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME)


def _queued_run_fails_before_training(machine: ReleasedMachine, variant: BadInput) -> None:
    """The files broke after the run was queued: the run itself stops at machine_dataset, nothing trains."""
    result = materialize_machine(machine.instance, MACHINE, training=FAST, log_level="WARNING", check=False)
    assert not result.success, f"{variant.name}: the run succeeded on broken input"
    failures = {e.step_key: e.step_failure_data for e in result.get_step_failure_events()}
    assert set(failures) == {"machine_dataset"}, failures
    data = failures["machine_dataset"]
    assert data.error.cls_name in CLEAR_FAILURES, f"{variant.name}: unclear error {data.error.cls_name}"
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert not materialized & {f.asset_name for f in families.all_families()}, f"{variant.name}: models trained"
    if variant.where == CONTRACT:
        assert data.error.cause is not None and data.error.cause.cls_name == "ContractError"
        _assert_contains(f"{data.user_failure_data.description}", variant.expected, variant.name)
    else:
        failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
        assert [c.check_name for c in failed if c.severity == dg.AssetCheckSeverity.ERROR] == [variant.fails_at]
        _assert_contains(failed[0].description or "", variant.expected, variant.name)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_bad_input_is_refused_or_contained_and_releases_stay_whole(released: ReleasedMachine, variant: BadInput):
    copy_machine(released.pristine, released.files)
    variant.break_files(released.files)
    before = current(released.root)
    try:
        if variant.where in (MACHINE_ID, CONTRACT, DATA_CHECK):
            _refused_before_queueing(released, variant)
            if variant.where != MACHINE_ID:
                _queued_run_fails_before_training(released, variant)
            assert current(released.root) == before, f"{variant.name}: the release changed"
        elif variant.where == GATE:
            result = materialize_machine(released.instance, MACHINE, training=FAST, gates=dict(variant.gates),
                                         models=list(variant.models), log_level="WARNING")
            assert result.success, "a gate is a decision, not a crash"
            summary = machine_summary(released.instance, MACHINE)
            assert summary["outcome"] == "blocked"
            failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
            assert variant.fails_at in [c.check_name for c in failed]
            check = next(c for c in failed if c.check_name == variant.fails_at)
            assert check.severity == dg.AssetCheckSeverity.ERROR
            _assert_contains(check.description or "", variant.expected, variant.name)
            assert current(released.root) == before, f"{variant.name}: the release changed"
        else:
            assert variant.where == LABEL_DEFECT
            old_classifier = tree_hash(paths.current_release(released.root, MACHINE).resolve() / "classification")
            result = materialize_machine(released.instance, MACHINE, training=FAST, log_level="WARNING")
            assert result.success
            check = next(c for c in result.get_asset_check_evaluations() if c.check_name == "label_balance")
            assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
            _assert_contains(check.description or "", variant.expected, variant.name)
            summary = machine_summary(released.instance, MACHINE)
            assert summary["models"]["classification"]["action"] == "kept previous"
            assert summary["models"]["anomaly"]["action"] == "released", "the other families do not wait"
            now = paths.current_release(released.root, MACHINE).resolve() / "classification"
            assert tree_hash(now) == old_classifier, f"{variant.name}: the classifier changed"
    finally:
        copy_machine(released.pristine, released.files)


def test_the_corpus_has_named_variants_of_every_kind():
    names = [v.name for v in VARIANTS]
    assert len(names) >= 25 and len(set(names)) == len(names)
    assert all(n.isidentifier() for n in names)
    assert {v.where for v in VARIANTS} == {CONTRACT, DATA_CHECK, LABEL_DEFECT, GATE, MACHINE_ID}
    assert all(v.expected and all(v.expected) for v in VARIANTS)
    assert {v.fails_at for v in VARIANTS if v.where == DATA_CHECK} <= set(DATA_CHECKS)
    required = {
        "missing_train", "truncated_parquet", "random_bytes_parquet", "csv_renamed_parquet", "sensor_as_strings",
        "extra_column", "missing_column", "all_nan_sensor", "inf_values", "all_sensors_constant", "unsorted_timestamps",
        "duplicate_timestamps", "negative_rul", "label_single_class_in_val", "empty_split", "metadata_not_json",
        "metadata_other_machine_id", "machine_id_parent_dir", "profile_alarm_above_trip", "timestamps_as_strings",
        "critical_sensor_nan", "pi_size_budget_tiny", "strict_quality_gate_fails", "total_size_budget_tiny",
    }
    assert required <= set(names), f"missing variants: {sorted(required - set(names))}"


def test_the_pristine_copy_is_valid_so_every_failure_comes_from_the_breaker(released: ReleasedMachine):
    from pdm_pipeline.core.contract import validate_machine

    copy_machine(released.pristine, released.files)
    assert validate_machine(released.root, MACHINE, max_nan_share=0.0) == []
    before = {f: f.read_bytes() for f in released.files.files() if f.exists()}
    for v in (v for v in VARIANTS if v.breaker is not None):
        copy_machine(released.pristine, released.files)
        v.break_files(released.files)
        after = {f: f.read_bytes() if f.is_file() else None for f in released.files.files() if f.exists()}
        assert after != before, f"{v.name}: the breaker changed nothing"
    copy_machine(released.pristine, released.files)
    assert {f: f.read_bytes() for f in released.files.files() if f.exists()} == before


def test_the_release_hash_sees_any_change(tmp_path):
    model = tmp_path / "anomaly"
    model.mkdir()
    (model / "model.npz").write_bytes(b"weights")
    reference = tree_hash(tmp_path)
    (model / "model.npz").write_bytes(b"weightz")
    assert tree_hash(tmp_path) != reference
    (model / "model.npz").write_bytes(b"weights")
    (model / "extra.json").write_text("{}")
    assert tree_hash(tmp_path) != reference
    (model / "extra.json").unlink()
    assert tree_hash(tmp_path) == reference
    shutil.rmtree(model)
