"""Every broken variant of a machine's data ends in a clear failure, and published models are never replaced.

One good machine is trained and published once; then each variant of bad_inputs.py breaks a copy of its files
(or the machine id, or a gate limit) and runs the whole Dagster graph for it. The run must fail at the step or
blocking check the variant names, with a message containing the expected substrings and through a deliberate
error (a dagster Failure from the data contract, a failed ERROR check), never an unrelated traceback; and the
published models must be byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from pdm_pipeline.core.paths import InvalidMachineIdError
from pdm_pipeline.core.schema import MODEL_TYPES
from pdm_pipeline.core.simulate import simulate_machine
from pdm_pipeline.defs.assets.models import MODEL_ASSETS
from pdm_pipeline.defs.checks.data_quality import DATA_CHECKS
from pdm_pipeline.defs.launch import materialize_machine
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME
from pdm_pipeline_tests.bad_inputs import (
    CHECK,
    MACHINE_ID,
    STEP,
    VARIANTS,
    BadInput,
    MachineFiles,
    copy_machine,
)

pytestmark = pytest.mark.slow

MACHINE = "motor_001"
ROWS = (2500, 700, 700)
GOOD_TRAINING = {"time_limit_s": 10}
# The only ways a run may fail: a deliberate dagster Failure, or a blocking check that failed with ERROR.
CLEAR_FAILURES = {"Failure", "DagsterAssetCheckFailedError"}
# Variants failing here must stop before any model is trained.
BEFORE_TRAINING = {"machine_dataset", "label_balance", *DATA_CHECKS}


@dataclass
class PublishedMachine:
    """The good machine after its one successful run: where its files live and what was published."""

    root: Path
    instance: dg.DagsterInstance
    files: MachineFiles
    pristine: MachineFiles
    models_backup: Path
    hashes: dict[str, str]
    listing: list[str]


def published_hashes(root: Path, machine_id: str) -> dict[str, str]:
    """Per model type, sha256 over the relative path and bytes of every file in <root>/models/<type>/<id>/."""
    out = {}
    for model_dir in sorted((root / "models").glob(f"*/{machine_id}")):
        digest = hashlib.sha256()
        for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            digest.update(f.relative_to(model_dir).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(f.read_bytes()).digest())
        out[model_dir.parent.name] = digest.hexdigest()
    return out


def published_listing(root: Path) -> list[str]:
    """Every published entry under models/ (two levels: type, machine), leaving out hidden candidate dirs."""
    models = root / "models"
    entries = [*models.iterdir(), *models.glob("*/*")]
    return sorted(p.relative_to(models).as_posix() for p in entries if not p.name.startswith("."))


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[PublishedMachine]:
    """Simulate one machine, train and publish it once with the whole graph, remember what was published."""
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
        result = materialize_machine(instance, MACHINE, training=GOOD_TRAINING, log_level="WARNING")
        assert result.success, f"the good machine must train and publish: failed steps {result.get_failed_step_keys()}"
        hashes = published_hashes(root, MACHINE)
        assert sorted(hashes) == sorted(MODEL_TYPES), f"all four models must be published, got {sorted(hashes)}"
        models_backup = base / "models_backup"
        shutil.copytree(root / "models", models_backup)
        yield PublishedMachine(root, instance, files, pristine, models_backup, hashes, published_listing(root))


def _restore_models(machine: PublishedMachine) -> None:
    shutil.rmtree(machine.root / "models")
    shutil.copytree(machine.models_backup, machine.root / "models")


def _check_message(evaluation: dg.AssetCheckEvaluation) -> str:
    metadata = " ".join(f"{k}={getattr(v, 'value', v)}" for k, v in (evaluation.metadata or {}).items())
    return f"{evaluation.description}\n{metadata}"


def _step_failures(result: dg.ExecuteInProcessResult) -> dict[str, tuple[str, str, str | None]]:
    """Failed steps: step key -> (error class, full message, class of the cause)."""
    out = {}
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data
        message = data.error.message if user is None else f"{user.description}\n{user.metadata}"
        cause = data.error.cause.cls_name if data.error.cause is not None else None
        out[event.step_key] = (data.error.cls_name, message, cause)
    return out


def _assert_contains(message: str, expected: tuple[str, ...], name: str) -> None:
    missing = [s for s in expected if s not in message]
    assert not missing, f"{name}: failure message lacks {missing}:\n{message}"


def _assert_clear_run_failure(result: dg.ExecuteInProcessResult, variant: BadInput) -> None:
    assert not result.success, f"{variant.name}: the run succeeded on broken input"
    failures = _step_failures(result)
    unclear = {step: cls for step, (cls, _, _) in failures.items() if cls not in CLEAR_FAILURES}
    assert not unclear, f"{variant.name}: unrelated errors {unclear}: {failures}"
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "deployed_models" not in materialized, f"{variant.name}: deployed_models materialized"
    if variant.fails_at in BEFORE_TRAINING:
        trained = materialized & set(MODEL_ASSETS)
        assert not trained, f"{variant.name}: models trained although the data is broken: {trained}"

    if variant.where == STEP:
        assert set(failures) == {variant.fails_at}, f"{variant.name}: expected only {variant.fails_at} to fail: {failures}"
        cls, message, cause = failures[variant.fails_at]
        assert cls == "Failure", f"{variant.name}: {variant.fails_at} failed with {cls}, not a dagster Failure"
        if variant.fails_at == "machine_dataset":
            assert cause == "ContractError", f"{variant.name}: the Failure is not caused by a ContractError but {cause}"
        _assert_contains(message, variant.expected, variant.name)
    else:
        failed_checks = [
            c for c in result.get_asset_check_evaluations() if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
        ]
        assert [c.check_name for c in failed_checks] == [variant.fails_at], (
            f"{variant.name}: expected only {variant.fails_at} to fail with ERROR, "
            f"got {[(c.check_name, c.description) for c in failed_checks]}; step failures {failures}"
        )
        _assert_contains(_check_message(failed_checks[0]), variant.expected, variant.name)
        assert all(cls == "DagsterAssetCheckFailedError" for cls, _, _ in failures.values()), failures
        assert any(variant.fails_at in message for _, message, _ in failures.values()), failures


def _assert_refused_id(machine: PublishedMachine, variant: BadInput) -> None:
    runs_before = len(machine.instance.get_runs())
    with pytest.raises(InvalidMachineIdError) as raised:
        materialize_machine(machine.instance, variant.machine_id, training=GOOD_TRAINING)
    _assert_contains(str(raised.value), variant.expected, variant.name)
    assert len(machine.instance.get_runs()) == runs_before, f"{variant.name}: a run was started"
    assert variant.machine_id not in machine.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_bad_input_fails_clearly_and_keeps_published_models(published: PublishedMachine, variant: BadInput):
    copy_machine(published.pristine, published.files)
    variant.break_files(published.files)
    try:
        if variant.where == MACHINE_ID:
            _assert_refused_id(published, variant)
        else:
            result = materialize_machine(
                published.instance,
                MACHINE,
                training=dict(variant.training) or None,
                gates=dict(variant.gates) or None,
                log_level="WARNING",
            )
            _assert_clear_run_failure(result, variant)
        assert published_hashes(published.root, MACHINE) == published.hashes, f"{variant.name}: published models changed"
        assert published_listing(published.root) == published.listing, f"{variant.name}: something new was published"
    finally:
        copy_machine(published.pristine, published.files)
        if published_hashes(published.root, MACHINE) != published.hashes:
            _restore_models(published)  # a failing variant replaced them: later variants start from the good models


def test_the_corpus_has_at_least_25_named_variants_of_every_kind():
    names = [v.name for v in VARIANTS]
    print("\nbad-input variants:\n" + "\n".join(f"  {v.name}: {v.where} {v.fails_at}".rstrip() for v in VARIANTS))
    assert len(names) >= 25
    assert len(set(names)) == len(names), "variant names must be unique"
    assert all(n.isidentifier() for n in names)
    assert {v.where for v in VARIANTS} == {STEP, CHECK, MACHINE_ID}
    assert all(v.expected and all(v.expected) for v in VARIANTS), "every variant names what its message must contain"
    required = {
        "missing_train", "missing_val", "missing_test", "truncated_parquet", "random_bytes_parquet",
        "csv_renamed_parquet", "sensor_as_strings", "extra_column", "missing_column", "all_nan_sensor",
        "inf_values", "constant_sensor", "unsorted_timestamps", "duplicate_timestamps", "negative_rul",
        "label_single_class_in_val", "empty_split", "metadata_not_json", "metadata_other_machine_id",
        "metadata_other_table", "metadata_without_spec_version", "machine_id_parent_dir", "machine_id_with_slash",
        "profile_alarm_above_trip", "profile_not_json", "timestamps_as_strings", "split_columns_differ",
        "critical_sensor_nan", "pi_size_budget_tiny", "strict_quality_gate_fails",
    }
    assert required <= set(names), f"missing variants: {sorted(required - set(names))}"
    # Gate variants train only the model they need; data variants train nothing (they fail before).
    for v in VARIANTS:
        if v.gates:
            assert set(v.training["excluded_models"]) == set(MODEL_TYPES) - {"anomaly"}, v.name


def test_the_pristine_copy_is_valid_so_every_failure_comes_from_the_breaker(published: PublishedMachine):
    from pdm_pipeline.core.contract import validate_machine

    copy_machine(published.pristine, published.files)
    assert validate_machine(published.root, MACHINE, max_nan_share=0.0) == []
    before = {f: f.read_bytes() for f in published.files.files() if f.exists()}
    broken = [v for v in VARIANTS if v.breaker is not None]
    for v in broken:
        copy_machine(published.pristine, published.files)
        v.break_files(published.files)
        after = {f: f.read_bytes() if f.is_file() else None for f in published.files.files() if f.exists()}
        assert after != before, f"{v.name}: the breaker changed nothing"
    copy_machine(published.pristine, published.files)
    assert {f: f.read_bytes() for f in published.files.files() if f.exists()} == before


def test_the_fingerprint_of_published_models_sees_any_change(tmp_path):
    model = tmp_path / "models" / "anomaly" / MACHINE
    model.mkdir(parents=True)
    (model / "model.pkl").write_bytes(b"weights")
    hashes, listing = published_hashes(tmp_path, MACHINE), published_listing(tmp_path)
    assert listing == ["anomaly", f"anomaly/{MACHINE}"]

    (model / "model.pkl").write_bytes(b"weightz")
    assert published_hashes(tmp_path, MACHINE) != hashes
    (model / "model.pkl").write_bytes(b"weights")
    (model / "extra.json").write_text("{}")
    assert published_hashes(tmp_path, MACHINE) != hashes
    (model / "extra.json").unlink()
    assert published_hashes(tmp_path, MACHINE) == hashes

    (model.parent / f".candidate-{MACHINE}-1234abcd").mkdir()  # an abandoned candidate is not published
    assert published_listing(tmp_path) == listing
    (tmp_path / "models" / "anomaly" / "evil").mkdir()
    assert published_listing(tmp_path) != listing
