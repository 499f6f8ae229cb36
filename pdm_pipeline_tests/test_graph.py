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
