"""A run whose release failed, re-executed from failure (the UI's "Re-execute from failure", or
`ReexecutionOptions.from_failure`), with real Dagster on the tiny sample data.

The re-execution runs only the release step: the models it releases were trained by the parent run, in the parent's
run-scoped staging. It must publish exactly those (same files, same metrics), through the same gates and atomic
switch as any release, even after the crash-recovery sweep ran in between (it used to remove a failed run's staging
at once, and the release read only its own, empty, staging: it published nothing and the run succeeded).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.release import current_release_dir, read_release, verify_release

pytestmark = pytest.mark.slow

MACHINE = "motor_001"
FAST = {"time_limit_s": 5, "extra": {"forecast_validation_windows": 0}}


def train_job() -> dg.JobDefinition:
    from pdm_pipeline.defs.definitions import defs

    return defs.resolve_job_def("train_machine")  # type: ignore[return-value]


def reexecute_from_failure(instance: dg.DagsterInstance, parent_run_id: str,
                           steps: list[str] | None = None) -> tuple[str, bool]:
    """As the UI's "Re-execute from failure" does (or, given `steps`, its "Re-execute selected"): the parent's tags
    (its machine partition) and run config. Returns the re-execution's run id and whether it succeeded."""
    from pdm_pipeline.defs.launch import run_config

    parent = instance.get_run_by_id(parent_run_id)
    assert parent is not None
    tags = {k: v for k, v in parent.tags.items() if not k.startswith("dagster/") or k == "dagster/partition"}
    try:
        with dg.execute_job(dg.reconstructable(train_job), instance=instance, tags=tags, raise_on_error=False,
                            run_config=run_config(FAST, None, "WARNING"),
                            reexecution_options=dg.ReexecutionOptions(parent_run_id, step_selection=steps) if steps
                            else dg.ReexecutionOptions.from_failure(parent_run_id, instance)) as result:
            return result.run_id, result.success
    except dg.DagsterResourceFunctionError:  # refused when its resources start: the run is recorded FAILED
        run = next(r for r in instance.get_runs(limit=20) if r.parent_run_id == parent_run_id)  # (newest first)
        assert run.status == dg.DagsterRunStatus.FAILURE
        return run.run_id, False


def hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def site(tiny_fleet_root, tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(tiny_fleet_root, root)
    monkeypatch.setenv("PDM_DATA_DIR", str(root))
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield root, instance


def fail_at_the_switch(monkeypatch) -> None:
    from pdm_pipeline.core import release

    def broken(directory, release_id):
        raise OSError(28, "No space left on device (injected at the switch)")

    monkeypatch.setattr(release, "_switch", broken)


def test_a_release_that_failed_is_published_by_its_reexecution_from_failure(site, monkeypatch, capsys):
    from pdm_pipeline.defs.launch import materialize_machine, run_progress
    from pdm_pipeline.defs.recovery import sweep

    root, instance = site
    with monkeypatch.context() as patch:
        fail_at_the_switch(patch)
        parent = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
    assert not parent.success
    assert run_progress(instance, parent.run_id)["failed"] == ["machine_release"]
    assert current_release_dir(root, MACHINE) is None  # nothing switched
    staging = paths.staging_dir(root, MACHINE, parent.run_id)
    # the model's files (its signed manifest is written again by the release, over the metrics card)
    trained = {name: sha for name, sha in hashes(staging / "anomaly").items() if not name.startswith("manifest.")}
    evaluation = json.loads((staging / "anomaly.result.json").read_text())["evaluation"]
    assert trained

    sweep(instance, root)  # the CLI's start, or the recovery sensor every 30 s, between the failure and the retry
    run_id, success = reexecute_from_failure(instance, parent.run_id)
    assert success
    child = instance.get_run_by_id(run_id)
    assert child.parent_run_id == parent.run_id and set(child.step_keys_to_execute or []) == {"machine_release"}

    # exactly the parent's trained model and its metrics, switched whole and verified
    release = current_release_dir(root, MACHINE)
    assert release is not None, "the re-execution released nothing"
    description = verify_release(release, keys.local_trust(root))
    assert description["models"]["anomaly"]["action"] == "released"
    released = hashes(release / "anomaly")
    assert {name: released[name] for name in trained} == trained
    assert json.loads((release / "anomaly" / "metrics.json").read_text()) == evaluation
    assert read_release(release)["run_id"] == run_id
    assert not list(paths.releases_dir(root, MACHINE).glob(".building-*"))

    # its status tells what happened: a release of the parent's models
    progress = run_progress(instance, run_id)
    assert progress["status"] == "SUCCESS" and progress["release"]["release_id"] == release.name
    assert progress["release"]["outcome"] in ("published", "published with warnings")
    assert progress["release"]["models"]["anomaly"]["action"] == "released"
    assert progress["reexecution_of"] == parent.run_id and progress["steps_done"] == progress["steps_total"] == 1
    from pdm_pipeline import cli

    monkeypatch.setattr(cli, "_instance", lambda: instance)
    assert cli.main(["status", run_id[:8]]) in (0, 3)
    out = capsys.readouterr().out
    assert f"re-execution of run {parent.run_id[:8]}" in out and f"release {release.name}: published" in out, out
    assert "anomaly         released" in out, out

    # what it used is removed once released: a second re-execution of the parent is refused, naming the run of
    # the same re-execution group whose release is live (not "no longer on disk", which sent one hunting for files)
    assert not staging.exists()
    again, success = reexecute_from_failure(instance, parent.run_id)
    assert not success
    failure = run_failure(instance, again)
    assert f"run {run_id[:8]} (release {release.name}) of the same re-execution group already released" in failure
    assert "no longer on disk" not in failure
    assert current_release_dir(root, MACHINE) == release


def run_failing_regression_training(instance: dg.DagsterInstance, monkeypatch) -> Any:
    """A run of anomaly + regression whose regression step fails (its tracking store is down); the anomaly model
    is trained, the release never runs."""
    from pdm_pipeline.defs.assets import models
    from pdm_pipeline.defs.launch import materialize_machine

    real = models.log_trained_model

    def store_down(context, mlflow, trained, *args, **kwargs):
        if trained.model_type == "regression":
            raise ConnectionError("MLflow tracking store unreachable (injected)")
        return real(context, mlflow, trained, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(models, "log_trained_model", store_down)
        return materialize_machine(instance, MACHINE, training=FAST, models=["anomaly", "regression"],
                                   log_level="CRITICAL")


def test_a_reexecution_that_retrains_one_family_releases_it_with_the_parents_other_models(site, monkeypatch):
    """A family's step failed (its tracking store was down): the release never ran. The re-execution from failure
    trains that family again and releases it together with the models the parent trained (each from the run that
    trained it), in one release; a retry after a lost worker re-executes the same way."""
    from pdm_pipeline.defs.launch import run_progress
    from pdm_pipeline.defs.recovery import sweep

    root, instance = site
    parent = run_failing_regression_training(instance, monkeypatch)
    assert not parent.success and run_progress(instance, parent.run_id)["failed"] == ["train_regression"]
    staging = paths.staging_dir(root, MACHINE, parent.run_id)
    trained = {n: h for n, h in hashes(staging / "anomaly").items() if not n.startswith("manifest.")}
    sweep(instance, root)

    run_id, success = reexecute_from_failure(instance, parent.run_id)
    assert success
    assert set(instance.get_run_by_id(run_id).step_keys_to_execute or []) == {"train_regression", "machine_release"}
    release = current_release_dir(root, MACHINE)
    assert release is not None
    description = verify_release(release, keys.local_trust(root))
    assert {t: description["models"][t]["action"] for t in ("anomaly", "regression")} == {
        "anomaly": "released", "regression": "released"}, description["models"]
    released = hashes(release / "anomaly")
    assert {n: released[n] for n in trained} == trained  # the parent's anomaly model, not one trained again
    summary = run_progress(instance, run_id)["release"]
    assert summary["models"]["anomaly"]["action"] == summary["models"]["regression"]["action"] == "released"
    assert not staging.exists() and not paths.staging_dir(root, MACHINE, run_id).exists()


def test_a_reexecution_of_the_release_alone_names_the_family_whose_training_failed(site, monkeypatch):
    """"Re-execute selected" of only the release after a family's training step failed: the release publishes the
    parent's other models, and the failed family, which keeps its previous model, is named with its failed step
    and run (in the release's metadata, its log and `status`), not shown as a family nobody asked for."""
    from pdm_pipeline.defs.launch import run_progress

    root, instance = site
    parent = run_failing_regression_training(instance, monkeypatch)
    assert run_progress(instance, parent.run_id)["failed"] == ["train_regression"]
    run_id, success = reexecute_from_failure(instance, parent.run_id, steps=["machine_release"])
    assert success
    release = current_release_dir(root, MACHINE)
    assert release is not None
    assert verify_release(release, keys.local_trust(root))["models"]["anomaly"]["action"] == "released"
    models_row = run_progress(instance, run_id)["release"]["models"]
    assert models_row["anomaly"]["action"] == "released"
    assert models_row["regression"]["action"] == "none"  # (no earlier release to keep)
    failed_step = f"its step train_regression failed in run {parent.run_id[:8]}"
    assert failed_step in models_row["regression"]["reason"]
    warnings = [e.user_message for e in instance.all_logs(run_id) if e.level >= 30]
    assert any(w.startswith("regression: none (" + failed_step) for w in warnings), warnings
    assert not any(w.startswith("classification") and "failed" in w for w in warnings), warnings


def run_failure(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything the run's failure events say (resource init and step failures, with their errors)."""
    texts = []
    for event in instance.all_logs(run_id):
        dagster_event = event.dagster_event
        if dagster_event is not None and (dagster_event.is_failure
                                          or dagster_event.event_type_value == "RESOURCE_INIT_FAILURE"):
            error = getattr(dagster_event.event_specific_data, "error", None)
            texts.append(f"{dagster_event.message} {error.to_string() if error is not None else ''}")
    return "\n".join(texts)


def test_a_reexecution_that_cannot_release_its_parents_models_is_refused_naming_why(site, monkeypatch):
    """Refused, before it is queued (the run queue) or before any step's work (an in-process re-execution):
    - when the parent's work is gone: a failed run's staging and outputs are kept a set time only (the sweep);
    - when the machine has a newer release since the parent trained (it would replace newer models with older);
      the sweep then removes the parent's staging, of no use any more."""
    from dagster._core.run_coordinator.base import SubmitRunContext
    from dagster._record import copy

    from pdm_pipeline.core.config import GateSettings
    from pdm_pipeline.core.pipeline import new_run_id
    from pdm_pipeline.core.release import release_machine
    from pdm_pipeline.defs import recovery
    from pdm_pipeline.defs.assets.models import read_results
    from pdm_pipeline.defs.coordinator import ValidatingRunCoordinator
    from pdm_pipeline.defs.io_manager import run_outputs_dir
    from pdm_pipeline.defs.launch import materialize_machine, run_progress

    root, instance = site

    def failed_release() -> str:
        with monkeypatch.context() as patch:
            fail_at_the_switch(patch)
            parent = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
        assert not parent.success and paths.staging_dir(root, MACHINE, parent.run_id).is_dir()
        return parent.run_id

    def queued(run_id: str) -> dict:
        """The same re-execution as the UI submits it: a new run, NOT_STARTED, through the instance's run queue."""
        import uuid

        template = instance.get_run_by_id(run_id)
        assert template is not None
        run = instance.add_run(copy(template, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.NOT_STARTED))
        coordinator = ValidatingRunCoordinator()
        coordinator.register_instance(instance)
        refused = coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]
        assert refused.status == dg.DagsterRunStatus.FAILURE
        assert not instance.all_logs(refused.run_id, of_type=dg.DagsterEventType.STEP_START)
        return run_progress(instance, refused.run_id)

    def refused_in_process(parent_run_id: str, *words: str) -> str:
        run_id, success = reexecute_from_failure(instance, parent_run_id)
        assert not success
        message = run_failure(instance, run_id)
        assert all(w in message for w in words) and "launch a new run of motor_001" in message, message
        assert not instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)  # no step's work
        progress = run_progress(instance, run_id)  # `status` says why
        assert progress["status"] == "FAILURE" and all(w in progress["failure"] for w in words), progress
        return run_id

    # A day after the failed run's group last ended, the sweep removes its staging and outputs ...
    expired = failed_release()
    with monkeypatch.context() as patch:
        patch.setattr(recovery, "OUTPUT_RETENTION_S", -1)
        done = recovery.sweep(instance, root)
    assert f"removed staging of run {expired[:8]} ({MACHINE})" in done, done
    assert not paths.staging_dir(root, MACHINE, expired).exists() and not run_outputs_dir(instance, expired).exists()
    # ... and a re-execution of it is refused for that reason, with what to do instead
    child = refused_in_process(expired, "no longer on disk", f"the anomaly model trained by run {expired[:8]}")
    progress = queued(child)
    assert progress["refused"] and "no longer on disk" in progress["failure"], progress
    assert current_release_dir(root, MACHINE) is None

    # A newer release since the failed run trained (here a core caller's, with the same code as any release)
    superseded = failed_release()
    staging = paths.staging_dir(root, MACHINE, superseded)
    other = new_run_id()
    shutil.copytree(staging, paths.staging_dir(root, MACHINE, other))
    trained, evaluations = read_results(root, MACHINE, other)
    trained["anomaly"].path = paths.staging_dir(root, MACHINE, other) / "anomaly"
    newer = release_machine(root, MACHINE, trained, evaluations, GateSettings(), run_id=other)
    assert newer.published
    child = refused_in_process(superseded, "has a newer release since its models were trained", newer.release_id)
    progress = queued(child)
    assert progress["refused"] and "newer release" in progress["failure"], progress
    assert current_release_dir(root, MACHINE).name == newer.release_id
    # of no use any more: the sweep removes it (within the retention)
    assert f"removed staging of run {superseded[:8]} ({MACHINE})" in recovery.sweep(instance, root)


def reexecute_from_asset_failure(instance: dg.DagsterInstance, parent_run_id: str) -> tuple[str, bool]:
    """As GraphQL's launchPipelineReexecution with strategy FROM_ASSET_FAILURE creates it (a job subset to the
    assets that did not materialize, no steps to execute listed), executed in this process."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.execution.api import execute_run
    from dagster._core.execution.plan.resume_retry import ReexecutionStrategy
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    failed = instance.get_run_by_id(parent_run_id)
    assert failed is not None
    target = ModuleTarget(module_name="pdm_pipeline.defs.definitions", attribute=None, working_directory=None,
                          location_name="pdm_pipeline")
    with WorkspaceProcessContext(instance, target) as workspace:
        request = workspace.create_request_context()
        location = request.get_code_location("pdm_pipeline")
        repository = next(iter(location.get_repositories().values()))
        remote_job = location.get_job(JobSubsetSelector(
            location_name="pdm_pipeline", repository_name=repository.name, job_name=failed.job_name,
            op_selection=None, asset_selection=list(failed.asset_selection or []) or None))
        child = instance.create_reexecuted_run(parent_run=failed, request_context=request, code_location=location,
                                               remote_job=remote_job, strategy=ReexecutionStrategy.FROM_ASSET_FAILURE,
                                               use_parent_run_tags=True)
    assert child.step_keys_to_execute is None and dg.AssetKey("anomaly_detector") not in child.asset_selection
    result = execute_run(dg.reconstructable(train_job).get_subset(asset_selection=child.asset_selection), child,
                         instance, raise_on_error=False)
    return child.run_id, result.success


def test_a_reexecution_from_asset_failure_releases_the_parents_models(site, monkeypatch):
    """The other re-execution strategy (ReexecutionStrategy.FROM_ASSET_FAILURE: GraphQL's launchPipelineReexecution,
    the UI, a `dagster/retry_strategy` tag) runs a job subset to the assets that did not materialize, listing no
    steps to execute: the family steps are not in its plan at all. It used to release its own (empty) staging,
    succeed, and report "no model passed its blocking gates: nothing released"."""
    from pdm_pipeline.defs.launch import materialize_machine, run_progress

    root, instance = site
    with monkeypatch.context() as patch:
        fail_at_the_switch(patch)
        parent = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
    assert not parent.success and current_release_dir(root, MACHINE) is None
    staging = paths.staging_dir(root, MACHINE, parent.run_id)
    trained = {n: h for n, h in hashes(staging / "anomaly").items() if not n.startswith("manifest.")}

    run_id, success = reexecute_from_asset_failure(instance, parent.run_id)
    assert success
    release = current_release_dir(root, MACHINE)
    assert release is not None, run_progress(instance, run_id)["release"]
    assert verify_release(release, keys.local_trust(root))["models"]["anomaly"]["action"] == "released"
    released = hashes(release / "anomaly")
    assert {n: released[n] for n in trained} == trained  # the parent's model
    assert read_release(release)["run_id"] == run_id and not staging.exists()


def test_a_reexecution_from_asset_failure_does_not_release_models_of_other_data(site, monkeypatch):
    """That re-execution reads the machine's data again (its dataset step is selected when a data check warned):
    when the files changed since the parent read them, releasing the parent's models would record them as trained
    on the new data (and the new data would never be trained). It fails naming why, releasing nothing."""
    import pandas as pd

    from pdm_pipeline.defs.launch import materialize_machine

    root, instance = site
    with monkeypatch.context() as patch:
        fail_at_the_switch(patch)
        parent = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
    assert not parent.success
    test_file = root / "synthetic" / MACHINE / "test.parquet"
    frame = pd.read_parquet(test_file)
    column = next(c for c in frame.columns if frame[c].dtype.kind == "f")
    frame.loc[frame.index[5], column] *= 1.001
    frame.to_parquet(test_file)

    run_id, success = reexecute_from_asset_failure(instance, parent.run_id)
    assert not success
    assert "changed since run" in run_failure(instance, run_id), run_failure(instance, run_id)
    assert current_release_dir(root, MACHINE) is None


@pytest.mark.parametrize("data_changed", [True, False], ids=["newer_data", "same_data"])
def test_a_reexecution_that_retrains_on_its_parents_data_after_another_release(site, monkeypatch, data_changed):
    """The parent failed in its only family's step (nothing of it to release): a re-execution from failure trains
    that family again on the PARENT's stored dataset and features. When another run has since released the machine
    from newer data, that re-execution used to publish over it (models of older data replacing newer ones): it is
    refused like one that would release the parent's models. When that release is of the same data (the daemon's
    retry of a killed run after the machine's next queued run published), the re-execution finishes what was asked
    and publishes."""
    import pandas as pd

    from pdm_pipeline.defs.assets import models
    from pdm_pipeline.defs.launch import materialize_machine, run_progress

    root, instance = site

    def store_down(context, mlflow, trained, *args, **kwargs):
        raise ConnectionError("MLflow tracking store unreachable (injected)")

    with monkeypatch.context() as patch:
        patch.setattr(models, "log_trained_model", store_down)
        old = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
    assert not old.success and run_progress(instance, old.run_id)["failed"] == ["train_anomaly"]
    if data_changed:
        test_file = root / "synthetic" / MACHINE / "test.parquet"
        frame = pd.read_parquet(test_file)
        column = next(c for c in frame.columns if frame[c].dtype.kind == "f")
        frame.loc[frame.index[5], column] *= 1.001
        frame.to_parquet(test_file)
    newer = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
    assert newer.success
    release = current_release_dir(root, MACHINE)
    assert release is not None and read_release(release)["run_id"] == newer.run_id

    run_id, success = reexecute_from_failure(instance, old.run_id)
    if data_changed:
        assert not success
        assert "newer release" in run_failure(instance, run_id) and release.name in run_failure(instance, run_id)
        assert not instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)  # refused before any step
        assert current_release_dir(root, MACHINE) == release
    else:
        assert success, run_failure(instance, run_id)
        current = current_release_dir(root, MACHINE)
        assert current is not None and current != release
        assert read_release(current)["run_id"] == run_id
        assert read_release(current)["data_version"] == read_release(release)["data_version"]


def test_a_reexecution_of_a_run_whose_release_is_live_is_refused_naming_it(site, monkeypatch):
    """The run failed after its switch (killed, or an error reporting the step): its release is live and its staging
    gone. A re-execution of it (the daemon's retry, the UI) has nothing left to release: it is refused, naming the
    live release, not sent hunting for files "no longer on disk"."""
    from pdm_pipeline.defs.assets import release as release_asset
    from pdm_pipeline.defs.launch import materialize_machine

    root, instance = site

    def fail_after_the_switch(*args, **kwargs):
        raise OSError("lost the step's report (injected after the switch)")

    with monkeypatch.context() as patch:
        patch.setattr(release_asset, "release_table", fail_after_the_switch)
        parent = materialize_machine(instance, MACHINE, training=FAST, models=["anomaly"], log_level="CRITICAL")
    assert not parent.success
    live = current_release_dir(root, MACHINE)
    assert live is not None and read_release(live)["run_id"] == parent.run_id  # published before the failure

    run_id, success = reexecute_from_failure(instance, parent.run_id)
    assert not success
    failure = run_failure(instance, run_id)
    assert f"run {parent.run_id[:8]} (release {live.name}) of the same re-execution group already released" in failure
    assert "no longer on disk" not in failure
    assert not instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)  # refused before any step
    assert current_release_dir(root, MACHINE) == live
