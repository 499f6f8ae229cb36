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


@pytest.fixture(autouse=True)
def _no_stale_dagster_defs_state_storage():
    """Dagster keeps the defs-state storage of the instance last entered (`with instance:`) in a ContextVar, and
    every definitions load (`dg.materialize`) reads it. Left there by an instance that is gone, it makes the next
    load in this worker fail with "Attempted to resolve undefined DagsterInstance weakref": a flake that depended
    on which test files shared a worker. Such a leftover is cleared before each test."""
    from dagster._core.storage.defs_state.base import _current_storage

    storage = _current_storage.get()
    ref = getattr(storage, "_instance_weakref", None)
    if storage is not None and (ref is None or ref() is None):
        _current_storage.set(None)
    yield


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


POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"
RABBITMQ_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/0"


def require_service(name: str, host: str, port: int) -> None:
    """Fail (not skip) naming the service when the machine's service is unreachable: CI has them all."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as exc:
        pytest.fail(f"{name} at {host}:{port} is unreachable ({exc}); these tests need the machine's {name} "
                    f"service running", pytrace=False)


@pytest.fixture
def postgres_url(request):
    """A fresh database (and its `_mlflow` sibling) on the machine's PostgreSQL, dropped afterwards."""
    import uuid

    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg2

    name = f"pdm_test_{uuid.uuid4().hex[:10]}"
    yield f"{POSTGRES_SERVER}/{name}"
    connection = psycopg2.connect(f"{POSTGRES_SERVER}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for db in (name, f"{name}_mlflow"):
            cursor.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    connection.close()
