"""MLflow tracking and the champion rule, on a real MLflow SQLite store under tmp_path.

One store serves the whole module (creating an MLflow database runs its migrations, ~10 s); tests stay
independent by using their own experiment names and machine ids.
"""

import json
import uuid
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from dagster_mlflow import mlflow_tracking
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pdm_pipeline.core import tracking
from pdm_pipeline.core.tracking import (
    champion_artifact_dir,
    current_champion,
    default_tracking_uri,
    flatten_params,
    log_metrics,
    log_model_run,
    register_and_promote,
    registered_model_name,
    ui_url,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(tracking_uri, data root) of a fresh SQLite store shared by the module."""
    root = tmp_path_factory.mktemp("pdm_data")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return default_tracking_uri(root), root


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _model_dir(base: Path, name: str, content: dict) -> Path:
    """A small stand-in for a trained model directory."""
    path = base / name
    (path / "sub").mkdir(parents=True)
    (path / "model.json").write_text(json.dumps(content))
    (path / "sub" / "weights.txt").write_text("0.1 0.2 0.3")
    return path


def _parent_run(uri: str, experiment: str, dagster_run_id: str) -> str:
    """What dagster-mlflow does: one run of the experiment tagged with the Dagster run id, left RUNNING."""
    experiment_id = tracking.ensure_experiment(tracking_uri=uri, experiment=experiment)
    return _client(uri).create_run(experiment_id, tags={"dagster_run_id": dagster_run_id}).info.run_id


def _log(uri: str, tmp_path: Path, machine: str, model_type: str, score: float, **kw) -> str:
    """A finished child run holding a model directory whose model.json records `score`."""
    record = log_model_run(
        tracking_uri=uri,
        experiment=kw.pop("experiment", "registry-tests"),
        parent_run_id=None,
        machine_id=machine,
        model_type=model_type,
        dagster_run_id="d-run",
        data_version=kw.pop("data_version", "data-v1"),
        params={"seed": 0},
        metrics={"score": score},
        artifact_dir=_model_dir(tmp_path, uuid.uuid4().hex, {"score": score}),
    )
    return record.run_id


def test_child_runs_per_model_do_not_collide_and_leave_parent_running(store, tmp_path):
    uri, root = store
    parent = _parent_run(uri, "children", "dagster-abc")
    common = dict(tracking_uri=uri, experiment="children", parent_run_id=parent, dagster_run_id="dagster-abc",
                  data_version="dv-1")
    clf = log_model_run(
        **common, machine_id="pump_01", model_type="classification",
        params={"time_limit_s": 60, "preset": {"name": "pi", "hyperparameters": {"GBM": {"rounds": 400}}}},
        metrics={"val_f1": 0.91, "val_roc_auc": float("nan"), "broken": float("inf"), "missing": None},
        artifact_dir=_model_dir(tmp_path, "clf", {"kind": "clf"}), extra_tags={"preset": "pi"},
    )
    reg = log_model_run(
        **common, machine_id="pump_01", model_type="regression",
        params={"time_limit_s": 5, "preset": {"name": "seed"}, "long": "x" * 7000},
        metrics={"val_rmse": 12.5}, artifact_dir=_model_dir(tmp_path, "reg", {"kind": "reg"}),
    )
    client = _client(uri)
    assert clf.run_id != reg.run_id
    for record, model_type in ((clf, "classification"), (reg, "regression")):
        run = client.get_run(record.run_id)
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"pump_01/{model_type}"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["machine_id"] == "pump_01"
        assert run.data.tags["model_type"] == model_type
        assert run.data.tags["data_version"] == "dv-1"
        assert run.data.tags[tracking.TAG_DAGSTER_RUN_ID] == "dagster-abc"
        assert record.url == f"http://127.0.0.1:5000/#/experiments/{record.experiment_id}/runs/{record.run_id}"
        listed = {a.path for a in client.list_artifacts(record.run_id, "model")}
        assert listed == {"model/model.json", "model/sub"}
        # Artifacts of a local store live beside the database, in <root>/mlruns, whatever the cwd.
        assert run.info.artifact_uri.startswith((root / "mlruns").as_uri())
    clf_run, reg_run = client.get_run(clf.run_id), client.get_run(reg.run_id)
    assert clf_run.data.params["time_limit_s"] == "60" and reg_run.data.params["time_limit_s"] == "5"
    assert clf_run.data.params["preset.hyperparameters.GBM.rounds"] == "400"
    assert reg_run.data.params["preset.name"] == "seed"
    assert len(reg_run.data.params["long"]) == 6000
    assert clf_run.data.metrics == {"val_f1": 0.91}
    assert clf_run.data.tags["preset"] == "pi"
    # The parent is referenced, never modified: still RUNNING, and still the ONLY run that dagster-mlflow's
    # lookup (tags.dagster_run_id = '<id>', newest first) can find for this Dagster run.
    assert client.get_run(parent).info.status == "RUNNING"
    found = client.search_runs([clf.experiment_id], "tags.dagster_run_id = 'dagster-abc'")
    assert [r.info.run_id for r in found] == [parent]
    # The same params logged to one shared run collide, which is why each model gets its own run.
    client.log_batch(parent, params=[mlflow.entities.Param("time_limit_s", "60")])
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        client.log_batch(parent, params=[mlflow.entities.Param("time_limit_s", "5")])


def test_log_metrics_adds_test_metrics_to_a_finished_run(store, tmp_path):
    uri, _ = store
    run_id = _log(uri, tmp_path, "fan_02", "anomaly", 0.5, experiment="metrics")
    log_metrics(tracking_uri=uri, run_id=run_id, metrics={"f1": 0.8, "far": 0.02, "auc": float("nan")})
    run = _client(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"score": 0.5, "test_f1": 0.8, "test_far": 0.02}


def test_failed_logging_marks_the_child_failed_and_reraises(store, tmp_path):
    uri, _ = store
    with pytest.raises(MlflowException):
        log_model_run(
            tracking_uri=uri, experiment="failing", parent_run_id=None, machine_id="mill_03",
            model_type="timeseries", dagster_run_id="d", data_version="v", params={"bad key!": 1},
            metrics={}, artifact_dir=None,
        )
    experiment_id = tracking.ensure_experiment(tracking_uri=uri, experiment="failing")
    runs = _client(uri).search_runs([experiment_id], "tags.machine_id = 'mill_03'")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_bad_inputs_name_what_is_wrong(store, tmp_path):
    uri, _ = store
    common = dict(tracking_uri=uri, experiment="bad", parent_run_id=None, machine_id="m1", model_type="regression",
                  dagster_run_id="d", data_version="v", params={}, metrics={})
    with pytest.raises(FileNotFoundError, match="machine 'm1', model 'regression'"):
        log_model_run(**common, artifact_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown model type 'forest'"):
        log_model_run(**{**common, "model_type": "forest"}, artifact_dir=None)
    with pytest.raises(ValueError, match="invalid machine id"):
        registered_model_name("../etc", "regression")
    parent = _parent_run(uri, "other-experiment", "d")
    with pytest.raises(ValueError, match="in experiment 'other-experiment', not 'bad'"):
        log_model_run(**{**common, "parent_run_id": parent}, artifact_dir=None)
    no_model = log_model_run(**common, artifact_dir=None).run_id
    with pytest.raises(ValueError, match="has no 'model' artifacts"):
        register_and_promote(
            tracking_uri=uri, run_id=no_model, machine_id="m1", model_type="regression", data_version="v",
            new_score=1.0, champion_score_on_same_data=None, higher_is_better=False, passed_gates=True,
            metric_name="rmse",
        )
    assert current_champion(tracking_uri=uri, machine_id="m1", model_type="regression") is None


def test_champion_rule_higher_is_better(store, tmp_path):
    uri, _ = store
    machine, kind = "press_04", "classification"
    assert current_champion(tracking_uri=uri, machine_id=machine, model_type=kind) is None
    assert champion_artifact_dir(tracking_uri=uri, machine_id=machine, model_type=kind, dst=tmp_path / "x") is None

    def promote(score: float, champion_on_same_data: float | None, passed: bool = True):
        return register_and_promote(
            tracking_uri=uri, run_id=_log(uri, tmp_path, machine, kind, score), machine_id=machine,
            model_type=kind, data_version="data-v1", new_score=score,
            champion_score_on_same_data=champion_on_same_data, higher_is_better=True, passed_gates=passed,
            metric_name="f1",
        )

    def champion_version() -> str:
        return current_champion(tracking_uri=uri, machine_id=machine, model_type=kind)["version"]

    first = promote(0.80, None)
    assert (first.promoted, first.version, champion_version()) == (True, "1", "1")
    assert "no champion yet" in first.reason
    weaker = promote(0.75, 0.81)
    assert (weaker.promoted, weaker.version, champion_version()) == (False, "2", "1")
    assert weaker.reason == "f1 0.75 does not beat champion v1 0.81 on the same test data (higher is better)"
    assert weaker.champion_score == 0.81
    tie = promote(0.81, 0.81)
    assert not tie.promoted and champion_version() == "1"
    stronger = promote(0.90, 0.81)
    assert (stronger.promoted, champion_version()) == (True, "4")
    assert "beats champion v1 0.81 on the same test data" in stronger.reason
    failed_gates = promote(0.99, 0.90, passed=False)
    assert (failed_gates.promoted, champion_version()) == (False, "4")
    assert "failed its quality gates" in failed_gates.reason

    client = _client(uri)
    name = registered_model_name(machine, kind)
    assert name == "pdm.press_04.classification"
    assert len(client.search_model_versions(f"name = '{name}'")) == 5
    tags = client.get_model_version(name, "5").tags
    assert tags["passed_gates"] == "false" and tags["score"] == "0.99" and tags["metric"] == "f1"
    assert tags[tracking.TAG_DECISION] == failed_gates.reason

    champion = current_champion(tracking_uri=uri, machine_id=machine, model_type=kind)
    assert champion == {
        "version": "4", "run_id": champion["run_id"], "source": f"runs:/{champion['run_id']}/model",
        "data_version": "data-v1", "score": 0.90, "metric": "f1",
    }
    local = champion_artifact_dir(tracking_uri=uri, machine_id=machine, model_type=kind, dst=tmp_path / "dl")
    assert local == tmp_path / "dl" / "model"
    assert json.loads((local / "model.json").read_text()) == {"score": 0.90}
    assert (local / "sub" / "weights.txt").read_text() == "0.1 0.2 0.3"


def test_champion_rule_lower_is_better_and_stored_score_fallback(store, tmp_path):
    uri, _ = store
    machine, kind = "lathe_05", "regression"

    def promote(rmse: float, champion_on_same_data: float | None, data_version: str = "data-v1"):
        return register_and_promote(
            tracking_uri=uri, run_id=_log(uri, tmp_path, machine, kind, rmse, data_version=data_version),
            machine_id=machine, model_type=kind, data_version=data_version, new_score=rmse,
            champion_score_on_same_data=champion_on_same_data, higher_is_better=False, passed_gates=True,
            metric_name="rmse",
        )

    assert promote(10.0, None).promoted
    worse = promote(12.0, 10.0)
    assert not worse.promoted and "(lower is better)" in worse.reason
    better = promote(8.0, 10.0)
    assert better.promoted and better.champion_score == 10.0
    # Champion could not be re-scored, same data version: its stored score (8.0) decides.
    not_better = promote(9.0, None)
    assert not not_better.promoted and not_better.champion_score == 8.0
    assert "stored score" in not_better.reason
    assert promote(7.5, None).promoted
    # Champion could not be re-scored and was evaluated on other data: not comparable, promote.
    other_data = promote(9.0, None, data_version="data-v2")
    assert other_data.promoted and other_data.champion_score is None
    assert "evaluated on other data" in other_data.reason
    assert current_champion(tracking_uri=uri, machine_id=machine, model_type=kind)["version"] == other_data.version
    with pytest.raises(ValueError, match="must be a finite number"):
        promote(float("nan"), None)


def test_default_tracking_uri_and_ui_url(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri(tmp_path) == "http://mlflow.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri(Path("data")) == f"sqlite:///{(tmp_path / 'data' / 'mlflow.db').as_posix()}"
    assert ui_url("sqlite:///x.db", "3", "abc") == "http://127.0.0.1:5000/#/experiments/3/runs/abc"
    assert ui_url("https://mlflow.example/", "3", "abc") == "https://mlflow.example/#/experiments/3/runs/abc"
    assert flatten_params({"a": {"b": {"c": 1}}, "d": [1, 2], "e": {}, "f": None}) == {
        "a.b.c": "1", "d": "[1, 2]", "e": "{}", "f": "None"
    }


def test_dagster_mlflow_resource_nests_each_model_under_the_dagster_run(store, tmp_path, monkeypatch):
    uri, _ = store
    experiment = "dagster-assets"
    # An MLflow run left active in this worker by an earlier test (another store) would be taken as this run's
    # parent by dagster-mlflow's own resource (ours ends such runs first): end it, as ours does.
    import logging

    from pdm_pipeline.defs.tracking import _end_stale_runs

    _end_stale_runs(logging.getLogger(__name__))
    # The resource sets MLflow's global tracking URI and experiment and leaves its run active: undo after.
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    # ... and exports it as $MLFLOW_TRACKING_URI: recorded here so that it is removed after the test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.ensure_experiment(tracking_uri=uri, experiment=experiment)

    def model_asset(model_type: str, time_limit_s: int) -> dg.AssetsDefinition:
        @dg.asset(name=f"model_{model_type}", required_resource_keys={"mlflow"})
        def _asset(context: dg.AssetExecutionContext) -> str:
            record = log_model_run(
                tracking_uri=uri, experiment=experiment, parent_run_id=mlflow.active_run().info.run_id,
                machine_id="pump_09", model_type=model_type, dagster_run_id=context.run_id, data_version="dv",
                params={"time_limit_s": time_limit_s}, metrics={"val_score": 1.0},
                artifact_dir=_model_dir(tmp_path, model_type, {}),
            )
            return record.run_id

        return _asset

    resource = mlflow_tracking.configured({"experiment_name": experiment, "mlflow_tracking_uri": uri})
    try:
        result = dg.materialize(
            [model_asset("classification", 60), model_asset("regression", 5)], resources={"mlflow": resource}
        )
        assert result.success
        client = _client(uri)
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        parents = client.search_runs([experiment_id], f"tags.dagster_run_id = '{result.run_id}'")
        assert len(parents) == 1
        parent = parents[0]
        assert parent.info.status == "RUNNING"  # our functions did not end the shared run
        for model_type, limit in (("classification", "60"), ("regression", "5")):
            child = client.get_run(result.output_for_node(f"model_{model_type}"))
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert child.data.tags[tracking.TAG_DAGSTER_RUN_ID] == result.run_id
            assert child.data.params == {"time_limit_s": limit}
            assert child.info.status == "FINISHED"
    finally:
        mlflow.end_run()


def test_a_failed_run_does_not_capture_the_next_runs_mlflow_run(tmp_path, monkeypatch):
    """Two in-process Dagster runs with different data roots: the first fails while its MLflow run is active
    (its last step, which ends that run, never runs). The second must get its own MLflow run in its own
    store, and the stale one is marked FAILED in the first store."""
    from pdm_pipeline.defs.tracking import EXPERIMENT, mlflow_resource

    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "placeholder")  # restored (removed) after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    @dg.asset(required_resource_keys={"mlflow"})
    def step(context: dg.AssetExecutionContext) -> str:
        if context.run.tags.get("fail") == "yes":
            raise RuntimeError("boom")
        return mlflow.active_run().info.run_id

    roots = [tmp_path / "first", tmp_path / "second"]
    try:
        monkeypatch.setenv("PDM_DATA_DIR", str(roots[0]))
        failed = dg.materialize([step], resources={"mlflow": mlflow_resource()}, tags={"fail": "yes"},
                                raise_on_error=False)
        assert not failed.success
        monkeypatch.setenv("PDM_DATA_DIR", str(roots[1]))
        second = dg.materialize([step], resources={"mlflow": mlflow_resource()})
        assert second.success
        stores = [default_tracking_uri(r) for r in roots]
        assert str(roots[1]) in stores[1]
        runs = [_client(u).search_runs([_client(u).get_experiment_by_name(EXPERIMENT).experiment_id]) for u in stores]
        assert [r.data.tags["dagster_run_id"] for r in runs[0]] == [failed.run_id]
        assert runs[0][0].info.status == "FAILED"
        assert [r.info.run_id for r in runs[1]] == [second.output_for_node("step")]
        assert runs[1][0].data.tags["dagster_run_id"] == second.run_id
    finally:
        mlflow.end_run()


def test_a_copied_data_root_keeps_its_mlflow_artifacts_under_itself(tmp_path):
    """A data root copied (a backup restored, a move to a bigger disk) with its SQLite store: the experiment,
    its runs and their artifacts follow the copy; they kept writing to and reading from the old root."""
    import shutil

    first = tmp_path / "old"
    uri = default_tracking_uri(first)
    run_id = _log(uri, tmp_path, "pump_01", "classification", 0.5, experiment="moved")
    copy = tmp_path / "new"
    shutil.copytree(first, copy)
    new_uri = default_tracking_uri(copy)
    tracking.ensure_experiment(tracking_uri=new_uri, experiment="moved")
    client = _client(new_uri)
    experiment = client.get_experiment_by_name("moved")
    assert experiment.artifact_location.startswith(copy.resolve().as_uri()), experiment.artifact_location
    moved = client.get_run(run_id).info.artifact_uri
    assert moved.startswith(copy.resolve().as_uri()) and any(Path(moved.removeprefix("file://")).rglob("*.json"))
    later = _log(new_uri, tmp_path, "pump_01", "classification", 0.6, experiment="moved")
    assert client.get_run(later).info.artifact_uri.startswith(copy.resolve().as_uri())
    assert _client(uri).get_experiment_by_name("moved").artifact_location.startswith(first.resolve().as_uri())
