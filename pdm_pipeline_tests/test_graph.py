"""The whole graph for one machine, for real (AutoGluon, Prophet, scikit-learn, Dagster), on tiny data."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from pdm_pipeline.defs.launch import machine_summary, materialize_machine

pytestmark = pytest.mark.slow

MACHINE = "motor_001"


@pytest.fixture(scope="module")
def trained(tiny_fleet_root, tmp_path_factory):
    """One run of the whole graph for motor_001 in a fresh instance and data root."""
    root = tmp_path_factory.mktemp("graph") / "data"
    shutil.copytree(tiny_fleet_root, root)
    home = tmp_path_factory.mktemp("dagster_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("PDM_DATA_DIR", str(root))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = materialize_machine(instance, MACHINE, training={"time_limit_s": 10}, log_level="WARNING")
        yield root, instance, result
    mp.undo()


def test_run_succeeds_and_publishes_all_four_models(trained):
    root, _, result = trained
    assert result.success
    for model_type in ("classification", "regression", "anomaly", "timeseries"):
        published = root / "models" / model_type / MACHINE
        assert published.is_dir(), model_type
        assert (published / "preprocessing.json").is_file()
        assert (published / "metrics.json").is_file()
    # Candidates were renamed into place: none is left beside the published models.
    assert not list((root / "models").glob("*/.candidate-*"))


def test_checks_are_recorded_per_machine_partition(trained):
    _, instance, _ = trained
    check = dg.AssetCheckKey(dg.AssetKey("failure_classifier"), "pi_size_gate")
    records = instance.event_log_storage.get_asset_check_execution_history(check, limit=5)
    assert [r.partition for r in records] == [MACHINE]
    evaluation = records[0].event.dagster_event.event_specific_data
    assert evaluation.passed
    assert evaluation.metadata["limit"].value == 250.0
    assert 0 < evaluation.metadata["value"].value < 250.0


def test_evaluations_carry_metrics_baselines_and_pictures(trained):
    _, instance, _ = trained
    summary = machine_summary(instance, MACHINE)
    clf = summary["failure_classifier"]
    assert clf["f1"] > clf["baseline_f1"]
    assert summary["rul_regressor"]["rmse"] < summary["rul_regressor"]["baseline_rmse"]
    for asset in ("failure_classifier_evaluation", "rul_regressor_evaluation", "anomaly_detector_evaluation", "sensor_forecasts_evaluation"):
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[MACHINE]), limit=1
        ).records[0]
        pictures = [v.value for v in record.asset_materialization.metadata.values() if isinstance(v, dg.MarkdownMetadataValue)]
        assert any("data:image/png;base64," in md for md in pictures), f"{asset} has no picture"


def test_run_progress_reports_every_step_done(trained):
    from pdm_pipeline.defs.launch import run_progress

    _, instance, result = trained
    progress = run_progress(instance, result.run_id)
    assert progress["status"] == "SUCCESS"
    assert progress["machine_id"] == MACHINE
    assert progress["steps_total"] >= 14
    assert progress["steps_done"] == progress["steps_total"]
    assert progress["failed"] == [] and progress["current"] == []


def test_each_model_gets_its_own_tagged_mlflow_run_under_the_dagster_run(trained):
    from mlflow import MlflowClient

    from pdm_pipeline.core.tracking import current_champion, default_tracking_uri

    root, _, result = trained
    # mlflow.set_tracking_uri exported the run's store as $MLFLOW_TRACKING_URI; a later run with another data
    # root must still use its own store, not this one.
    assert str(root.parent / "elsewhere") in default_tracking_uri(root.parent / "elsewhere")
    uri = default_tracking_uri(root.resolve())
    assert uri.startswith("sqlite:///") and str(root.resolve()) in uri
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("pdm-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("dagster_run_id") == result.run_id]
    assert len(parents) == 1, "dagster-mlflow opens one MLflow run per Dagster run"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["model_type"] for r in children) == ["anomaly", "classification", "regression", "timeseries"]
    for child in children:
        assert child.data.tags["machine_id"] == MACHINE
        assert len(child.data.tags["data_version"]) == 64
        assert any(k.startswith("test_") for k in child.data.metrics), "evaluation metrics logged on the model's run"
        assert client.list_artifacts(child.info.run_id, "model"), "model artifact logged"
    # First version of each tabular model becomes the champion.
    assert current_champion(tracking_uri=uri, machine_id=MACHINE, model_type="classification") is not None
    assert current_champion(tracking_uri=uri, machine_id=MACHINE, model_type="regression") is not None


def _bundle_check(instance: dg.DagsterInstance):
    key = dg.AssetCheckKey(dg.AssetKey("edge_bundle"), "bundle_size_gate")
    return [r.event.dagster_event.event_specific_data
            for r in instance.event_log_storage.get_asset_check_execution_history(key, limit=5) if r.event]


def test_edge_bundle_is_published_gated_and_predicts(trained):
    from pdm_pipeline.core.bundle import verify_bundle

    root, instance, _ = trained
    bundle = root / "bundles" / MACHINE
    manifest = verify_bundle(bundle)
    assert set(manifest["formats"]) == {"classification", "regression", "anomaly", "timeseries"}
    evaluation = _bundle_check(instance)[0]
    assert evaluation.passed
    assert evaluation.metadata["value"].value == pytest.approx(manifest["total_bytes"] / 1e6)
    assert evaluation.metadata["limit"].value == 500.0
    meta = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("edge_bundle"), asset_partitions=[MACHINE]), limit=1
    ).records[0].asset_materialization.metadata
    prediction = meta["last_val_row_prediction"].value
    assert 0.0 <= prediction["failure_probability"] <= 1.0 and prediction["rul_hours"] >= 0.0
    assert prediction["warmup"] is False


def test_export_and_predict_commands_round_trip(trained, tmp_path, capsys):
    """`pdm-pipeline export` then `predict` on raw test rows gives the bundle asset's own prediction."""
    import pandas as pd

    from pdm_pipeline.cli import main
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.predict import EdgePredictor

    root, _, _ = trained
    out = tmp_path / "bundle"
    assert main(["--data-dir", str(root), "export", "--machine-id", MACHINE, "--out", str(out)]) == 0
    raw = load_machine(root, MACHINE).splits["test"].iloc[-400:]
    raw.to_csv(tmp_path / "recent.csv", index=False)
    assert main(["predict", "--bundle", str(out), "--input", str(tmp_path / "recent.csv"),
                 "--output", str(tmp_path / "pred.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "pred.csv")
    assert len(predicted) == len(raw)
    reference = EdgePredictor.load(root / "bundles" / MACHINE).predict(raw)
    for column in ("failure_probability", "rul_hours", "anomaly_score"):
        assert predicted[column].to_numpy() == pytest.approx(reference[column].to_numpy(), abs=1e-6), column
    assert main(["predict", "--bundle", str(out), "--input", str(tmp_path / "recent.csv"), "--forecast"]) == 0
    assert "yhat_upper_95" in capsys.readouterr().out
    # A changed byte in the exported bundle: refused with the file named, exit code 2.
    model = next(p for p in (out / "classification").iterdir() if p.name.startswith("model."))
    model.write_bytes(model.read_bytes()[:-1] + b"#")
    assert main(["predict", "--bundle", str(out), "--input", str(tmp_path / "recent.csv")]) == 2
    assert f"classification/{model.name}" in capsys.readouterr().err


def test_oversized_bundle_is_not_published_and_the_previous_one_stays(trained):
    from pdm_pipeline.core.bundle import verify_bundle

    root, instance, _ = trained
    before = verify_bundle(root / "bundles" / MACHINE)
    result = materialize_machine(
        instance, MACHINE, log_level="WARNING",
        training={"excluded_models": ["classification", "regression", "timeseries"], "time_limit_s": 10},
        gates={"bundle_budget_mb": 0.001},
    )
    assert not result.success
    assert [e.step_key for e in result.get_step_failure_events()] == ["edge_bundle"]
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "bundle not published" in failure.description and "OVER 0.001 MB" in failure.description
    evaluation = _bundle_check(instance)[0]
    assert not evaluation.passed and evaluation.metadata["limit"].value == 0.001
    assert verify_bundle(root / "bundles" / MACHINE) == before
    assert not list((root / "bundles").glob(".*"))
