"""The Dagster definitions load, and the two layers stay apart: the core imports no Dagster or heavy library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

CORE = Path(__file__).resolve().parents[1] / "pdm_pipeline" / "core"


def test_definitions_load_and_validate():
    from pdm_pipeline.defs.definitions import defs

    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {
        "machine_splits", "machine_metadata", "machine_dataset", "failure_labels", "machine_features",
        "failure_classifier", "rul_regressor", "anomaly_detector", "sensor_forecasts",
        "failure_classifier_evaluation", "rul_regressor_evaluation", "anomaly_detector_evaluation",
        "sensor_forecasts_evaluation", "deployed_models", "edge_bundle",
    } <= keys


def test_dagster_cli_validates_the_workspace():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_asset_and_check_is_partitioned_by_machine():
    from pdm_pipeline.defs.definitions import defs
    from pdm_pipeline.defs.partitions import machines_partitions

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).partitions_def == machines_partitions, key
    check_keys = list(graph.asset_check_keys)
    assert len(check_keys) >= 17
    for check_key in check_keys:
        spec = graph.get_check_spec(check_key)
        assert spec.partitions_def == machines_partitions, check_key
        assert spec.blocking, f"{check_key} must be blocking so that ERROR results stop publication"


@pytest.mark.parametrize("module", sorted(p.stem for p in CORE.glob("*.py") if p.stem != "__init__"))
def test_core_module_imports_no_dagster_and_no_heavy_library(module):
    code = (
        "import sys, importlib; importlib.import_module('pdm_pipeline.core.%s'); "
        "bad = [m for m in ('dagster', 'autogluon', 'prophet', 'mlflow', 'matplotlib', 'torch') if m in sys.modules]; "
        "print(','.join(bad))" % module
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"pdm_pipeline.core.{module} imports {out.stdout.strip()} at import time"
