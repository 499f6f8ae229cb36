"""Shared fixtures: a tiny simulated fleet and a temporary Dagster instance, never the user's home."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_ROWS = (2500, 700, 700)


@pytest.fixture(autouse=True, scope="session")
def _isolated_tracking_store():
    """Tests use the MLflow store under their own data root, never one from the developer's environment."""
    import os

    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def tiny_fleet_root(tmp_path_factory) -> Path:
    """Two small machines (motor_001, pump_002) written by the simulator, shared read-only by tests."""
    from pdm_pipeline.core.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("fleet")
    simulate_fleet(root, 2, seed=7, rows=TINY_ROWS)
    return root


@pytest.fixture
def dagster_instance(tmp_path):
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance
