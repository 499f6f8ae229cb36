"""The whole graph for one machine through Dagster, for real (AutoGluon, Prophet, scikit-learn), on tiny data."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from pdm_pipeline import families
from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.release import current_release_dir, read_release
from pdm_pipeline.defs.launch import latest_metadata, machine_summary, materialize_machine, run_progress

pytestmark = pytest.mark.slow

MACHINE = "motor_001"
FAST = {"time_limit_s": 10, "extra": {"forecast_validation_windows": 0}}


@pytest.fixture(scope="module")
def trained(tiny_fleet_root, tmp_path_factory):
    """One run of the whole graph for motor_001 in a fresh instance and data root."""
    root = tmp_path_factory.mktemp("graph") / "data"
    shutil.copytree(tiny_fleet_root, root)
    home = tmp_path_factory.mktemp("dagster_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("PDM_DATA_DIR", str(root))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_machine(instance, MACHINE, training=FAST, log_level="WARNING")
        yield root, instance, result
    mp.undo()


def _check_history(instance, asset: str, check: str):
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    return [r for r in instance.event_log_storage.get_asset_check_execution_history(key, limit=10)]


def test_run_releases_every_model_in_one_switch(trained):
    root, instance, result = trained
    assert result.success
    progress = run_progress(instance, result.run_id[:8])
    assert progress["status"] == "SUCCESS" and progress["steps_done"] == progress["steps_total"] == 8
    summary = machine_summary(instance, MACHINE)
    assert summary["outcome"] in ("published", "published with warnings")
    assert {t: m["action"] for t, m in summary["models"].items()} == dict.fromkeys(families.model_types(), "released")
    release = current_release_dir(root, MACHINE)
    assert release.name == summary["release_id"] and (release / "bundle" / "manifest.sig").is_file()
    assert not (root / "staging" / MACHINE / result.run_id).exists()
    assert not (paths.releases_dir(root, MACHINE) / ".deploy-pending.json").exists()  # the registry followed
    assert read_release(release)["sequence"] == 1  # the first of its machine


def test_checks_are_recorded_per_partition_with_value_and_limit(trained):
    _, instance, _ = trained
    size = _check_history(instance, "failure_classifier", "pi_size_gate")
    assert [r.partition for r in size] == [MACHINE]
    evaluation = size[0].event.dagster_event.event_specific_data
    assert evaluation.passed and evaluation.metadata["limit"].value == 250.0
    assert 0 < evaluation.metadata["value"].value < 1.0
    bundle = _check_history(instance, "machine_release", "bundle_size_gate")[0].event.dagster_event.event_specific_data
    assert bundle.passed and bundle.metadata["limit"].value == 500.0
    data_checks = _check_history(instance, "machine_dataset", "no_constant_sensor")
    assert data_checks[0].event.dagster_event.event_specific_data.passed


def test_evaluations_carry_metrics_baselines_and_pictures(trained):
    _, instance, _ = trained
    for family in families.all_families():
        meta = latest_metadata(instance, family.evaluation_asset, MACHINE)
        assert meta["status"] == "evaluated", family.model_type
        pictures = [v for k, v in meta.items() if isinstance(v, str) and "data:image/png;base64," in v]
        assert pictures, f"{family.evaluation_asset} has no picture"
    clf = latest_metadata(instance, "failure_classifier_evaluation", MACHINE)
    assert clf["f1"] > clf["baseline_f1"]


def test_each_model_gets_its_own_tagged_mlflow_run_and_the_deployed_alias(trained):
    from mlflow import MlflowClient

    from pdm_pipeline.core.tracking import current_champion, default_tracking_uri, registered_model_name

    root, _, result = trained
    uri = default_tracking_uri(root.resolve())
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("pdm-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("dagster_run_id") == result.run_id]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    # Named and tagged after the machine and what started it.
    tags = parents[0].data.tags
    assert tags["machine_id"] == MACHINE and tags["trigger"] == "cli"
    assert tags["mlflow.runName"] == f"{MACHINE} · cli · {result.run_id[:8]}"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.data.tags["model_type"] for r in children) == sorted(families.model_types())
    for child in children:
        assert child.data.tags["machine_id"] == MACHINE
        assert any(k.startswith("test_") for k in child.data.metrics)
        assert client.list_artifacts(child.info.run_id, "model")
        signature = json.loads(Path(client.download_artifacts(child.info.run_id, "signature/signature.json")).read_text())
        inputs = json.loads(signature["inputs"])
        assert len(inputs) > 5 and all(c["type"] in ("float", "double") for c in inputs), inputs[:3]
        assert not any(c["name"] in ("timestamp", "rul", "failure_status") for c in inputs)
    assert current_champion(tracking_uri=uri, machine_id=MACHINE, model_type="classification") is not None
    release = read_release(current_release_dir(root, MACHINE))
    for model_type in families.model_types():  # every released model, champion metric or not (recovery does too)
        if release["models"][model_type]["action"] == "released":
            deployed = client.get_model_version_by_alias(registered_model_name(MACHINE, model_type), "deployed")
            assert deployed.tags["release_id"] == release["release_id"], model_type
    assert release["models"]["anomaly"]["action"] == "released"


def test_export_and_predict_commands_round_trip(trained, tmp_path, capsys):
    import pandas as pd

    from pdm_pipeline.cli import main
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.edge.predictor import EdgePredictor

    root, _, _ = trained
    out = tmp_path / "bundle"
    assert main(["--data-dir", str(root), "export", "--machine-id", MACHINE, "--out", str(out)]) == 0
    raw = load_machine(root, MACHINE).splits["test"].iloc[-400:]
    raw.to_csv(tmp_path / "recent.csv", index=False)
    key = str(keys.public_key_path(root))
    assert main(["predict", "--bundle", str(out), "--input", str(tmp_path / "recent.csv"), "--public-key", key,
                 "--output", str(tmp_path / "pred.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "pred.csv")
    reference = EdgePredictor.load(out, public_key=key).predict(raw)
    for column in ("failure_probability", "rul_hours", "anomaly_score", "anomaly_flag", "warmup", "status"):
        assert column in predicted.columns, column
    assert predicted["failure_probability"].to_numpy() == pytest.approx(reference["failure_probability"].to_numpy())
    # a parquet output of CSV rows keeps times as times, and a parquet input whose index repeats (units
    # concatenated without ignore_index) predicts like the same rows numbered (the CLI crashed on it)
    repeated = pd.concat([raw.iloc[:200], raw.iloc[200:]]).set_axis(list(range(200)) * 2)
    repeated.to_parquet(tmp_path / "repeated.parquet")
    for source in ("recent.csv", "repeated.parquet"):
        assert main(["predict", "--bundle", str(out), "--input", str(tmp_path / source), "--public-key", key,
                     "--output", str(tmp_path / "pred.parquet")]) == 0
        written = pd.read_parquet(tmp_path / "pred.parquet")
        assert pd.api.types.is_datetime64_any_dtype(written["timestamp"]), (source, written["timestamp"].dtype)
        assert written["failure_probability"].to_numpy() == pytest.approx(
            reference["failure_probability"].to_numpy(), nan_ok=True)
    capsys.readouterr()
    assert main(["predict", "--bundle", str(out), "--input", str(tmp_path / "recent.csv"), "--public-key", key,
                 "--forecast"]) == 0
    forecast = capsys.readouterr().out
    first = pd.read_csv(__import__("io").StringIO(forecast))["ds"].min()
    assert pd.Timestamp(first) > raw["timestamp"].max(), "forecasts start after the input's last row"
    # The same rows stamped a minute apart (trained on 10-minute rows: 36 rows = 6 h) are refused, not read as
    # 36 minutes; every other step within a factor 2 of the training step is accepted.
    from pdm_pipeline.edge.predictor import PredictionInputError

    predictor = EdgePredictor.load(out, public_key=key)
    step = raw["timestamp"].diff().median()
    for factor, refused in ((0.1, True), (0.6, False), (1.9, False), (5.0, True)):
        stamped = raw.assign(timestamp=raw["timestamp"].iloc[0] + (raw["timestamp"] - raw["timestamp"].iloc[0]) * factor)
        if refused:
            with pytest.raises(PredictionInputError, match=r"rows are [\d.]+ h apart \(median\), the models were "
                               r"trained on rows 0.1667 h apart"):
                predictor.predict(stamped)
        else:
            assert len(predictor.predict(stamped)) == len(raw)
    assert step == pd.Timedelta(minutes=10)
    # Without a public key and outside the data root: refused, exit code 2.
    assert main(["predict", "--bundle", str(out), "--input", str(tmp_path / "recent.csv")]) in (0, 2)


def test_a_model_left_out_keeps_its_version_and_is_not_shown_materialized(trained):
    """--models anomaly: only the anomaly family runs; the others are neither trained nor shown as materialized
    in this run, and the new release carries them from the previous one."""
    root, instance, first = trained
    before = read_release(current_release_dir(root, MACHINE))
    result = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="WARNING")
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "failure_classifier" not in materialized and "anomaly_detector" in materialized
    after = read_release(current_release_dir(root, MACHINE))
    assert after["sequence"] == before["sequence"] + 1
    assert after["models"]["classification"]["action"] == "kept previous"
    assert after["models"]["classification"]["source_release"] == before["models"]["classification"]["source_release"]
    assert after["models"]["anomaly"]["action"] == "released"


def test_an_oversized_bundle_blocks_the_release_and_the_previous_one_stays(trained):
    root, instance, first = trained
    before = os.readlink(paths.current_release(root, MACHINE))
    result = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"],
                                 gates={"bundle_budget_mb": 0.001}, log_level="WARNING")
    assert result.success, "a gate is not a crash: the run ends and says what it blocked"
    summary = machine_summary(instance, MACHINE)
    assert summary["outcome"] == "blocked" and "OVER 0.001 MB" in summary["reason"]
    assert os.readlink(paths.current_release(root, MACHINE)) == before
    check = _check_history(instance, "machine_release", "bundle_size_gate")[0].event.dagster_event.event_specific_data
    assert not check.passed and check.metadata["limit"].value == 0.001
    assert not list(paths.releases_dir(root, MACHINE).glob(".building-*"))
    # the status of an earlier run still tells that run's outcome, not the latest one's (nor nothing)
    earlier = run_progress(instance, first.run_id[:8])["release"]
    assert earlier["outcome"] in ("published", "published with warnings") and earlier["run_id"] == first.run_id
    assert earlier["release_id"] != current_release_dir(root, MACHINE).name  # a later run released since
    assert (paths.releases_dir(root, MACHINE) / earlier["release_id"]).is_dir()
    assert {t: m["action"] for t, m in earlier["models"].items()} == dict.fromkeys(families.model_types(), "released")
    assert earlier["models"]["classification"].get("f1") is not None


def test_a_new_family_is_one_registry_line_and_runs_through_the_whole_graph(trained):
    """The toy family (pdm_pipeline_tests/toy_family) registered: its step, checks, release entry and runtime."""
    from pdm_pipeline.defs.definitions import build_definitions
    from pdm_pipeline.edge.predictor import EdgePredictor
    from pdm_pipeline_tests import toy_family

    root, instance, _ = trained
    with families.registered(toy_family.FAMILY):
        defs = build_definitions()
        keys_ = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
        assert {"toy_level_model", "toy_level_model_evaluation"} <= keys_
        result = materialize_machine(instance, MACHINE, training=FAST, models=["toy_level"], definitions=defs,
                                     log_level="WARNING")
        assert result.success
        release = current_release_dir(root, MACHINE)
        assert read_release(release)["models"]["toy_level"]["action"] == "released"
        predictor = EdgePredictor.load(release / "bundle", trust=keys.local_trust(root))
        from pdm_pipeline.core.contract import load_machine

        out = predictor.predict(load_machine(root, MACHINE).splits["val"].iloc[-50:])
        assert "toy_distance" in out.columns and "failure_probability" in out.columns
        checks = _check_history(instance, "toy_level_model_evaluation", "toy_mae")
        assert checks and checks[0].event.dagster_event.event_specific_data.passed


def test_data_replaced_during_a_run_is_never_recorded_as_trained(trained, monkeypatch):
    """Files replaced while machine_dataset reads them: the run stops there (what it read may mix two versions).
    Replaced later in the run: the release records the version the run read, not the files' new one, so the new
    files still count as untrained (the sensor compares them with the release's version)."""
    from pdm_pipeline.core.contract import machine_fingerprint
    from pdm_pipeline.defs.assets import preparation, release

    root, instance, _ = trained
    metadata = paths.metadata_path(root, MACHINE)
    original = metadata.read_text()

    def replace_files() -> None:
        metadata.write_text(json.dumps({**json.loads(original), "note": "re-generated"}))

    real_load, real_read = preparation.load_machine, release.read_results
    try:
        monkeypatch.setattr(preparation, "load_machine", lambda *a, **k: (replace_files(), real_load(*a, **k))[1])
        result = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="WARNING",
                                     check=False)
        assert not result.success
        failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
        assert "changed while they were read" in failure.event_specific_data.error.message
        monkeypatch.setattr(preparation, "load_machine", real_load)

        metadata.write_text(original)
        read = machine_fingerprint(root, MACHINE)
        monkeypatch.setattr(release, "read_results", lambda *a, **k: (replace_files(), real_read(*a, **k))[1])
        result = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="WARNING",
                                     check=False)
        assert result.success
        assert machine_fingerprint(root, MACHINE) != read
        assert read_release(current_release_dir(root, MACHINE))["data_version"] == read
        assert latest_metadata(instance, "machine_release", MACHINE)["data_version"] == read
    finally:
        metadata.write_text(original)


def test_a_release_interrupted_before_the_registry_gets_its_deployed_alias_from_recovery(trained, monkeypatch):
    """The process dies after the switch and before the MLflow registry follows (here: the champion step raises):
    `deployed` would name the previous release's version for good. The release left a marker; once its process
    is gone, the recovery sweep points `deployed` at this release's versions and removes the marker."""
    import subprocess
    import sys

    from mlflow import MlflowClient

    from pdm_pipeline.core import champion, tracking
    from pdm_pipeline.core.release import DEPLOY_PENDING
    from pdm_pipeline.defs.recovery import sweep

    root, instance, _ = trained

    def killed(*args, **kwargs):
        raise RuntimeError("killed between the switch and the registry")

    monkeypatch.setattr(champion, "promote_champions", killed)
    result = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
    # the models are live: the run succeeds, published with a warning (the release step used to fail instead,
    # emitting the registry warning as a check result its asset does not declare)
    assert result.success
    summary = machine_summary(instance, MACHINE, result.run_id)
    assert summary["outcome"] == "published with warnings" and "registry_follows_release" in json.dumps(summary)
    release = current_release_dir(root, MACHINE)
    assert read_release(release)["run_id"] == result.run_id  # switched: the new models are live
    marker = paths.releases_dir(root, MACHINE) / DEPLOY_PENDING
    pending = json.loads(marker.read_text())
    assert pending["release_id"] == release.name and set(pending["mlflow_runs"]) == {"anomaly"}
    assert not any("deployed" in line for line in sweep(instance, root))  # its process (this one) still lives
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    marker.write_text(json.dumps({**pending, "pid": ended.pid}))
    done = sweep(instance, root)
    assert any("anomaly 'deployed' alias set to version" in line for line in done), done
    client = MlflowClient(pending["tracking_uri"])
    deployed = client.get_model_version_by_alias(tracking.registered_model_name(MACHINE, "anomaly"), "deployed")
    assert deployed.run_id == pending["mlflow_runs"]["anomaly"] and deployed.tags["release_id"] == release.name
    assert not marker.exists()


def test_data_that_failed_a_blocking_check_is_never_released_whatever_the_selection(trained):
    """A run stops at a failed blocking data check, but its dataset is stored: a later run of only the steps after
    it (the UI lets one pick them) loaded that dataset, trained on it and published a release. The release now
    re-checks the data it was given and refuses, naming the check; the previous release stays."""
    import numpy as np
    import pandas as pd

    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.defs.definitions import defs
    from pdm_pipeline.defs.launch import run_config

    root, instance, _ = trained
    before = os.readlink(paths.current_release(root, MACHINE))
    split = paths.split_path(root, MACHINE, "train")
    original = split.read_bytes()
    try:
        frame = pd.read_parquet(split)
        sensor = load_machine(root, MACHINE).metadata.critical_sensors[0]
        frame.loc[frame.index[::5], sensor] = np.nan  # 20 % missing in a critical sensor: a blocking check fails
        frame.to_parquet(split)
        blocked = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="WARNING",
                                      check=False)
        assert os.readlink(paths.current_release(root, MACHINE)) == before
        assert "machine_release" not in {e.asset_key.to_user_string() for e in blocked.get_asset_materialization_events()}
        # status names the check with its value (the step's error named only the check)
        (line,) = run_progress(instance, blocked.run_id[:8])["failed_data_checks"]
        assert line.startswith("critical_sensors_complete ERROR: 20.0% missing in train.") and sensor in line, line
        split.write_bytes(original)  # the operator fixes the files: the checks at the run's start pass, but the
        # steps after machine_dataset load the dataset the blocked run stored
        downstream = [dg.AssetKey(k) for k in ("failure_labels", "machine_features", "anomaly_detector",
                                               "anomaly_detector_evaluation", "machine_release")]
        job = defs.resolve_job_def("train_machine")
        refused = job.execute_in_process(instance=instance, partition_key=MACHINE, asset_selection=downstream,
                                         run_config=run_config(FAST, None, "CRITICAL"), raise_on_error=False)
        assert not refused.success  # every entry point refuses such a selection now, naming machine_dataset ...
        (failure,) = [e for e in refused.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
        assert "without machine_dataset" in failure.event_specific_data.error.to_string()
        # ... and should one get through anyway (defence in depth, as for core callers), the release refuses
        result = job.execute_in_process(instance=instance, partition_key=MACHINE, asset_selection=downstream,
                                        run_config=run_config(FAST, None, "WARNING"), raise_on_error=False,
                                        tags={"pdm/checked": "let through by the test"})
        assert result.success
        summary = machine_summary(instance, MACHINE, result.run_id)
        assert summary["outcome"] == "blocked", summary
        assert "critical_sensors_complete BLOCKED" in summary["reason"] and sensor in summary["reason"]
        assert os.readlink(paths.current_release(root, MACHINE)) == before
    finally:
        split.write_bytes(original)


def test_a_run_no_entry_point_checked_meets_the_same_checks_when_it_starts(trained):
    """`dagster job execute`, `dagster asset materialize` and direct calls never reach the run coordinator: a bad
    setting went through and failed later inside a step (or trained). Such a run (no pdm/checked tag) is checked
    when its resources start, with the coordinator's message, before any step's work."""
    from pdm_pipeline.defs.definitions import defs
    from pdm_pipeline.defs.launch import run_config

    root, instance, _ = trained
    before = os.readlink(paths.current_release(root, MACHINE))
    result = defs.resolve_job_def("train_machine").execute_in_process(
        instance=instance, partition_key=MACHINE, run_config=run_config({**FAST, "horizon": -5}, None, "CRITICAL"),
        raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    message = str(failure.event_specific_data.error.to_string())
    assert "not run: invalid training settings" in message and "horizon=-5" in message, message
    assert not result.get_asset_materialization_events()
    # steps that do not use the data root (labels, features) are checked too: by the IO manager they all start
    partial = defs.resolve_job_def("train_machine").execute_in_process(
        instance=instance, partition_key=MACHINE, run_config=run_config(FAST, None, "CRITICAL"), raise_on_error=False,
        asset_selection=[dg.AssetKey("failure_labels"), dg.AssetKey("machine_features")])
    assert not partial.success and not partial.get_asset_materialization_events()
    (failure,) = [e for e in partial.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert "without machine_dataset" in failure.event_specific_data.error.to_string()
    assert os.readlink(paths.current_release(root, MACHINE)) == before
