"""The Dagster definitions load and come from the family registry; the layers stay apart (the core and the edge
import no Dagster and no heavy library); a toy family added by one registry call gets its assets and checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pdm_pipeline import families

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "pdm_pipeline" / "core"


def test_definitions_load_and_follow_the_registry():
    from pdm_pipeline.defs.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    expected = {"machine_splits", "machine_metadata", "machine_dataset", "failure_labels", "machine_features",
                "machine_release", "fleet_overview", "fleet_models"}
    for family in families.all_families():
        expected |= {family.asset_name, family.evaluation_asset}
    assert keys == expected
    job = defs.resolve_job_def("train_machine")
    assert job.executor_def.name == "in_process"
    # every job runs in its run's own process, the pid the run is tagged with and the recovery sweep watches (a
    # multiprocess job tagged a step's pid, and a sweep between that step's end and the run's could fail the run);
    # __ASSET_JOB (the UI's Materialize button, asset backfills) too: it ran on Dagster's default multiprocess one
    for name in ("fleet_overview_job", "train_fleet_models", "__ASSET_JOB"):
        assert defs.resolve_job_def(name).executor_def.name == "in_process", name
    steps = {node.name for node in job.graph.node_defs}
    assert len(steps) == 3 + len(families.all_families()) + 1, steps


def test_dagster_cli_validates_the_workspace():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_machine_assets_and_checks_are_partitioned_and_blocking_only_where_they_block():
    from pdm_pipeline.defs.definitions import defs
    from pdm_pipeline.defs.partitions import machines_partitions

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        expected = None if key.to_user_string() in ("fleet_overview", "fleet_models") else machines_partitions
        assert graph.get(key).partitions_def == expected, key
    blocking = {k.to_user_string() for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {
        "machine_dataset:critical_sensors_complete", "machine_dataset:no_constant_sensor",
        "machine_dataset:timestamps_regular", "machine_dataset:rul_in_range", "machine_dataset:distribution_shift",
        "machine_dataset:no_rul_proxy_sensor",
    }, "model and release gates are enforced by the release itself (a failed model keeps its previous version)"
    names = {k.name for k in graph.asset_check_keys}
    assert {"pi_size_gate", "classifier_roc_auc", "anomaly_false_alarm_rate", "label_balance"} <= names


@pytest.mark.parametrize("module", sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__"))
def test_core_module_imports_no_dagster_and_no_heavy_library(module):
    code = (
        "import sys, importlib; importlib.import_module('pdm_pipeline.core.%s'); "
        "bad = [m for m in ('dagster', 'autogluon', 'prophet', 'mlflow', 'matplotlib', 'torch', 'sklearn') "
        "if m in sys.modules]; print(','.join(bad))" % module
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"pdm_pipeline.core.{module} imports {out.stdout.strip()} at import time"


def test_the_edge_runtime_imports_nothing_heavy():
    code = (
        "import sys; import pdm_pipeline.edge.predictor, pdm_pipeline.families, "
        "pdm_pipeline.families.classifier.runtime, pdm_pipeline.families.regressor.runtime, "
        "pdm_pipeline.families.anomaly.runtime, pdm_pipeline.families.forecast.runtime; "
        "print(','.join(m for m in ('dagster', 'autogluon', 'prophet', 'mlflow', 'sklearn', 'scipy', 'matplotlib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
