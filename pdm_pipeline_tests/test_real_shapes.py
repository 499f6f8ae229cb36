"""Real-data shapes through the whole Dagster graph, from hand-made files written here in their native formats.

- per-second test-bench files (SKAB format: `;` separated, `anomaly` and `changepoint` label columns),
  first 400 rows of each file train;
- run-to-failure engines in the NASA C-MAPSS text format (whitespace separated, no header, cycles counted from 1
  in every engine: the units share their origin);
- an hourly single-unit CSV with a time column and computed RUL.

Each run must release every model that applies and name the reason for each one that does not; nothing may
crash because the time axis is not hours.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core import keys
from pdm_pipeline.core.importer import ImportOptions, import_cmapss, import_data, import_skab
from pdm_pipeline.core.release import current_release_dir, read_release
from pdm_pipeline.defs.launch import machine_summary, materialize_machine

pytestmark = pytest.mark.slow

FAST = {"time_limit_s": 8, "extra": {"forecast_validation_windows": 2}}


def write_skab_like(directory: Path, files: int = 1, rows: int = 700, seed: int = 0) -> None:
    """Per-second bench experiments: 4 sensors, a fault induced from row 520 to 620 (anomaly = 1)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    for f in range(1, files + 1):
        t = pd.date_range("2020-03-01 10:00:00", periods=rows, freq="s") + pd.Timedelta(hours=f)
        fault = (np.arange(rows) >= 520) & (np.arange(rows) < 620)
        frame = pd.DataFrame({
            "datetime": t.strftime("%Y-%m-%d %H:%M:%S"),
            "Accelerometer1RMS": 0.2 + 0.01 * rng.normal(size=rows) + 0.3 * fault,
            "Accelerometer2RMS": 0.25 + 0.01 * rng.normal(size=rows) + 0.2 * fault,
            "Current": 1.2 + 0.05 * rng.normal(size=rows),
            "Pressure": 0.05 + 0.02 * rng.normal(size=rows) - 0.1 * fault,
            "Temperature": 70 + np.arange(rows) / 200 + 0.1 * rng.normal(size=rows),
            "Thermocouple": 25 + np.arange(rows) / 300 + 0.1 * rng.normal(size=rows),
            "Voltage": 220 + rng.normal(size=rows),
            "Volume Flow RateRMS": 32 + 0.5 * rng.normal(size=rows) - 3 * fault,
            "anomaly": fault.astype(float),
            "changepoint": np.isin(np.arange(rows), (520, 620)).astype(float),
        })
        frame.to_csv(directory / f"{f}.csv", sep=";", index=False)


def write_cmapss_like(path: Path, engines: int = 10, seed: int = 0) -> None:
    """unit, cycle, 3 settings, 21 sensors; whitespace separated, no header, trailing blanks, run to failure."""
    rng = np.random.default_rng(seed)
    lines = []
    for unit in range(1, engines + 1):
        life = int(rng.integers(110, 170))
        for cycle in range(1, life + 1):
            wear = (cycle / life) ** 2
            settings = [rng.normal(0, 0.002), rng.normal(0, 0.0003), 100.0]
            sensors = [518.67, 642 + 2 * wear + rng.normal(0, 0.3), 1590 + 20 * wear + rng.normal(0, 4),
                       1400 + 25 * wear + rng.normal(0, 5), 14.62, 21.61, 554 - 3 * wear + rng.normal(0, 0.4),
                       2388 + rng.normal(0, 0.05), 9050 + rng.normal(0, 10), 1.3, 47.5 + 1.5 * wear + rng.normal(0, 0.2),
                       521 - 2 * wear + rng.normal(0, 0.3), 2388 + rng.normal(0, 0.05), 8140 + rng.normal(0, 8),
                       8.44 + 0.1 * wear + rng.normal(0, 0.02), 0.03, 392 + int(4 * wear + rng.normal(0, 1)), 2388,
                       100.0, 38.9 - 0.5 * wear + rng.normal(0, 0.1), 23.3 - 0.3 * wear + rng.normal(0, 0.06)]
            values = [unit, cycle, *settings, *sensors]
            lines.append(" ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values) + "  ")
    path.write_text("\n".join(lines) + "\n")


def write_hourly(path: Path, days: int = 40, seed: int = 0) -> None:
    """One unit, hourly, a daily cycle and wear, running to failure at its last row."""
    rng = np.random.default_rng(seed)
    n = days * 24
    t = pd.date_range("2024-01-01", periods=n, freq="h")
    wear = np.linspace(0, 1, n) ** 3
    pd.DataFrame({
        "time": t.strftime("%Y-%m-%dT%H:%M:%S"),
        "Bearing temp [C]": 50 + 5 * np.sin(2 * np.pi * t.hour / 24) + 15 * wear + rng.normal(0, 0.5, n),
        "Vibration [mm/s]": 2 + 3 * wear + rng.normal(0, 0.2, n),
        "Load [%]": 60 + 10 * np.sin(2 * np.pi * t.hour / 24) + rng.normal(0, 2, n),
    }).to_csv(path, index=False)


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def _run(instance, root: Path, machine_id: str) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDM_DATA_DIR", str(root))
        result = materialize_machine(instance, machine_id, training=FAST, log_level="WARNING")
    assert result.success, result.get_failed_step_keys()
    summary = machine_summary(instance, machine_id)
    release = read_release(current_release_dir(root, machine_id), keys.local_trust(root))
    return {"summary": summary, "release": release}


def test_per_second_bench_file_with_label_columns(instance, tmp_path):
    source = tmp_path / "skab"
    write_skab_like(source)
    root = tmp_path / "data"
    (machine_id,) = import_skab(source, root)
    out = _run(instance, root, machine_id)
    models = out["release"]["models"]
    assert models["anomaly"]["action"] == "released"
    assert models["anomaly"]["metrics"]["recall"] > 0.5
    # The labels are never sensors; nothing to classify or regress; a 24 h forecast of a 12-minute file: named.
    for model_type, words in (("classification", "RUL column 'rul' not found"), ("regression", "no 'rul' column"),
                              ("timeseries", "too short to forecast")):
        assert models[model_type]["action"] == "none" and words in models[model_type]["reason"], models[model_type]
    meta = (root / "metadata" / f"{machine_id}_metadata.json").read_text()
    assert '"time_unit": "seconds"' in meta and '"changepoint"' not in meta.split('"columns"')[1].split("}")[0]


def test_run_to_failure_engines_in_cycles_sharing_their_origin(instance, tmp_path):
    text = tmp_path / "train_FD001.txt"
    write_cmapss_like(text)
    root = tmp_path / "data"
    (machine_id,) = import_cmapss(text, root)
    out = _run(instance, root, machine_id)
    models = out["release"]["models"]
    assert {t: m["action"] for t, m in models.items()} == dict.fromkeys(
        ("classification", "regression", "anomaly", "timeseries"), "released"), models
    assert "nasa_score" in models["regression"]["metrics"]
    regressor = current_release_dir(root, machine_id) / "regression" / "model_card.json"
    card = pd.read_json(regressor, typ="series")
    assert card["time_unit"] == "cycles" and card["rul_cap_selection"]["rule"].startswith("auto")
    from pdm_pipeline.edge.predictor import EdgePredictor

    predictor = EdgePredictor.load(current_release_dir(root, machine_id) / "bundle", trust=keys.local_trust(root))
    engine = pd.read_parquet(root / "synthetic" / machine_id / "test.parquet").groupby("unit_id").head(80)
    predicted = predictor.predict(engine, latest_only=True)
    assert "rul_cycles" in predicted.columns and (predicted["rul_cycles"] >= 0).all()
    assert not predicted["warmup"].any(), "80 cycles of history cover the windows of per-cycle data"


def test_hourly_csv_with_computed_rul(instance, tmp_path):
    source = tmp_path / "pump.csv"
    write_hourly(source)
    root = tmp_path / "data"
    options = ImportOptions(machine_id="pump_h", time_column="time", compute_rul=True, split="chronological")
    (machine_id,) = import_data(source, root, options.validate())
    out = _run(instance, root, machine_id)
    models = out["release"]["models"]
    assert models["regression"]["action"] == "released" and models["timeseries"]["action"] == "released"
    assert models["anomaly"]["action"] == "released"
    # One unit running to failure at its last row: train, val and test are one life, so train sees no failure
    # horizon that val and test share... whatever the classifier does, it says why.
    assert models["classification"]["action"] in ("released", "none")
    if models["classification"]["action"] == "none":
        assert models["classification"]["reason"]
    shutil.rmtree(root)
