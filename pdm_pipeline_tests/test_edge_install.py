"""The Raspberry Pi install: `pip install 'pdm-pipeline[edge]'` in a fresh venv gives a working `pdm-edge`.

A real core run trains and releases motor_001 of the tiny fleet (with the signing key under its data root);
meanwhile a fresh virtual environment (no system site packages) gets the project with its `[edge]` extra only.
That venv must not be able to import any pipeline library (Dagster, AutoGluon, MLflow, scikit-learn, Prophet,
torch), and its `pdm-edge` must verify the signed bundle, predict the same values as the training host's
EdgePredictor, and refuse a bundle with one changed byte.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core import keys
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.contract import load_machine
from pdm_pipeline.core.pipeline import run_machine
from pdm_pipeline.core.release import current_release_dir
from pdm_pipeline.core.schema import TIMESTAMP, UNIT_ID
from pdm_pipeline.edge.predictor import EdgePredictor

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MACHINE = "motor_001"
FAST = TrainingConfig(time_limit_s=10, extra={"forecast_validation_windows": 0})
PIPELINE_ONLY = ("dagster", "autogluon", "mlflow", "sklearn", "prophet", "torch")
# Environment that would let the venv see the training host's packages or keys.
_LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PDM_PUBLIC_KEY", "PDM_SIGNING_KEY")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _install_edge_venv(work: Path) -> Path:
    """A fresh venv with `<project>[edge]` installed from a clean copy of the sources.

    The copy holds only what the build needs (pyproject.toml, README.md, pdm_pipeline/): building in the repo
    itself would write build/ and *.egg-info into the working tree, and .venv/ and data/ never get near pip.
    """
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "pdm_pipeline", src / "pdm_pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", venv], cwd=work)
    assert made.returncode == 0, made.stderr
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    installed = _run(
        [venv / "bin" / "pip", "install", "--disable-pip-version-check", "-q", f"{src}[edge]"], cwd=work, timeout=420
    )
    assert installed.returncode == 0, f"pip install '.[edge]' failed:\n{installed.stdout}\n{installed.stderr}"
    return venv


@pytest.fixture(scope="module")
def edge(tiny_fleet_root, tmp_path_factory):
    """(venv, data root, bundle dir, public key file): installed and trained at the same time."""
    work = tmp_path_factory.mktemp("edge_install")
    root = work / "data"
    shutil.copytree(tiny_fleet_root, root)
    with ThreadPoolExecutor(max_workers=1) as pool:
        installing = pool.submit(_install_edge_venv, work)
        result = run_machine(root, MACHINE, FAST)
        venv = installing.result()
    assert result.release.published, result.release.outcome
    bundle = current_release_dir(root, MACHINE) / "bundle"
    public_key = keys.public_key_path(root)
    assert bundle.is_dir() and public_key.is_file()
    return venv, root, bundle, public_key


@pytest.fixture(scope="module")
def recent(edge):
    """Raw sensor rows with their history (val + test of every unit), as the Pi would read them: no labels."""
    _, root, bundle, public_key = edge
    sensors = EdgePredictor.load(bundle, public_key=public_key).sensors
    data = load_machine(root, MACHINE)
    rows = pd.concat([data.splits["val"], data.splits["test"]], ignore_index=True)
    return rows[[TIMESTAMP, UNIT_ID, *sensors]]


def _edge(venv: Path, *args) -> subprocess.CompletedProcess:
    return _run([venv / "bin" / "pdm-edge", *args], cwd=venv.parent)


def test_edge_venv_cannot_import_pipeline_libraries(edge):
    venv, *_ = edge
    python = venv / "bin" / "python"
    for module in PIPELINE_ONLY:
        probe = _run([python, "-c", f"import {module}"], cwd=venv.parent)
        assert probe.returncode != 0, f"{module} is importable in the [edge] venv"
        assert f"ModuleNotFoundError: No module named '{module}'" in probe.stderr, probe.stderr
    # The edge code paths import cleanly from the venv's own copy, and pull in none of those libraries.
    loaded = _run(
        [
            python,
            "-c",
            "import sys, pdm_pipeline, pdm_pipeline.edge.cli, pdm_pipeline.edge.predictor, pdm_pipeline.families;"
            "print(pdm_pipeline.__file__);"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(PIPELINE_ONLY)!r}))",
        ],
        cwd=venv.parent,
    )
    assert loaded.returncode == 0, loaded.stderr
    location, heavy = loaded.stdout.splitlines()
    assert Path(location).is_relative_to(venv), location
    assert heavy == "[]"


def test_pdm_edge_verifies_the_signed_bundle(edge):
    venv, _, bundle, public_key = edge
    verified = _edge(venv, "verify", "--bundle", bundle, "--public-key", public_key)
    assert verified.returncode == 0, verified.stderr
    assert ", signed, release " in verified.stdout and f"of {MACHINE}" in verified.stdout, verified.stdout
    # No key at all: refused, saying how to give one.
    keyless = _edge(venv, "verify", "--bundle", bundle)
    assert keyless.returncode == 2 and "no public key" in keyless.stderr and "Traceback" not in keyless.stderr


def test_pdm_edge_predicts_what_the_training_host_predicts(edge, recent, tmp_path):
    venv, _, bundle, public_key = edge
    source = tmp_path / "recent.csv"
    recent.to_csv(source, index=False)
    done = _edge(venv, "predict", "--bundle", bundle, "--input", source, "--public-key", public_key)
    assert done.returncode == 0, done.stderr
    out = pd.read_csv(io.StringIO(done.stdout))

    host = EdgePredictor.load(bundle, public_key=public_key)
    unit = host.time_unit
    outputs = ["failure_probability", "failure_flag", f"rul_{unit}", "anomaly_score", "anomaly_flag"]
    assert list(out.columns) == [TIMESTAMP, UNIT_ID, *outputs, "warmup", "status"]
    assert len(out) == len(recent)
    assert out[UNIT_ID].tolist() == recent[UNIT_ID].tolist()
    assert (out["status"] == "ok").all(), out["status"].value_counts()

    probability = out["failure_probability"].to_numpy()
    assert np.isfinite(probability).all() and ((probability >= 0) & (probability <= 1)).all()
    assert 0 < probability.min() < probability.max() < 1, "a trained classifier does not answer a constant"
    for flag in ("failure_flag", "anomaly_flag"):
        assert set(out[flag].unique()) <= {0.0, 1.0}, flag
    assert out["failure_flag"].any() and not out["failure_flag"].all()
    assert np.isfinite(out["anomaly_score"]).all() and np.isfinite(out[f"rul_{unit}"]).all()
    position = out.groupby(UNIT_ID).cumcount().to_numpy()
    np.testing.assert_array_equal(out["warmup"].to_numpy(), position + 1 < host.min_history_rows)

    # The Pi's numbers are the training host's numbers (same bundle, same feature code).
    expected = host.predict(recent)
    for name in outputs:
        np.testing.assert_allclose(out[name].to_numpy(), expected[name].to_numpy(), rtol=1e-9, atol=1e-12, err_msg=name)

    # Parquet input, --latest-only, --output parquet: one row per unit, each unit's last.
    parquet, latest = tmp_path / "recent.parquet", tmp_path / "latest.parquet"
    recent.to_parquet(parquet, index=False)
    done = _edge(
        venv,
        "predict",
        "--bundle",
        bundle,
        "--input",
        parquet,
        "--public-key",
        public_key,
        "--latest-only",
        "--output",
        latest,
    )
    assert done.returncode == 0, done.stderr
    last = pd.read_parquet(latest)
    assert sorted(last[UNIT_ID]) == sorted(recent[UNIT_ID].unique())
    tail = expected.groupby(UNIT_ID).tail(1).set_index(UNIT_ID)
    np.testing.assert_allclose(
        last.set_index(UNIT_ID).loc[tail.index, "failure_probability"], tail["failure_probability"], rtol=1e-9
    )


def _flip_one_byte(path: Path) -> None:
    """Change one digit in the middle of the file (still a parseable model, but not the signed bytes)."""
    data = bytearray(path.read_bytes())
    i = next(i for i in range(len(data) // 2, len(data)) if chr(data[i]).isdigit())
    data[i] = ord("7") if data[i] != ord("7") else ord("3")
    path.write_bytes(bytes(data))


def test_pdm_edge_refuses_a_tampered_bundle(edge, recent, tmp_path):
    venv, _, bundle, public_key = edge
    source = tmp_path / "recent.csv"
    recent.iloc[-200:].to_csv(source, index=False)
    tampered = tmp_path / "bundle"
    shutil.copytree(bundle, tampered)  # real copies: the release's files (hard links) stay untouched
    _flip_one_byte(tampered / "classification" / "model.txt")
    for command in (["verify"], ["predict", "--input", source]):
        refused = _edge(venv, *command, "--bundle", tampered, "--public-key", public_key)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert "classification/model.txt does not match its sha256" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and refused.stdout == ""

    # The manifest re-hashed to the edited file: now its signature no longer verifies.
    manifest = tampered / "manifest.json"
    original = (bundle / "manifest.json").read_text()
    old_sha = _sha256(bundle / "classification" / "model.txt")
    assert original.count(old_sha) >= 1
    manifest.write_text(original.replace(old_sha, _sha256(tampered / "classification" / "model.txt")))
    for command in (["verify"], ["predict", "--input", source]):
        refused = _edge(venv, *command, "--bundle", tampered, "--public-key", public_key)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert "signature of manifest.json does not verify" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert _edge(venv, "verify", "--bundle", bundle, "--public-key", public_key).returncode == 0, "original intact"


def _sha256(path: Path) -> str:
    from pdm_pipeline.edge.integrity import file_sha256

    return file_sha256(path)
