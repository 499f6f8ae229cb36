"""The sample-data generator: deterministic files in the data contract's layout, whole lifecycles split in
time order, and data with real structure (wear trends toward failure, a daily load cycle, glitches)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core.contract import validate_machine
from pdm_pipeline.core.paths import InvalidMachineIdError, is_valid_machine_id, metadata_path, profile_path, split_path
from pdm_pipeline.core.schema import RUL, SPLITS, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.simulate import (
    DEFAULT_ROWS,
    MACHINE_TYPES,
    MIN_LIFECYCLE_HOURS,
    machine_seed,
    simulate_fleet,
    simulate_machine,
)

SMALL = (3000, 800, 800)
SEED = 7


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("fleet")
    return root, simulate_fleet(root, machines=5, seed=SEED, rows=SMALL)


@pytest.fixture(scope="module")
def full_motor(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One machine at the default size: enough lifecycles and rows for the statistical checks."""
    root = tmp_path_factory.mktemp("full")
    return root, simulate_machine(root, "motor_001", "motor", seed=3)


def _splits(root: Path, machine_id: str) -> dict[str, pd.DataFrame]:
    return {split: pd.read_parquet(split_path(root, machine_id, split)) for split in SPLITS}


def _all_rows(root: Path, machine_id: str) -> pd.DataFrame:
    return pd.concat(_splits(root, machine_id).values(), ignore_index=True)


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _machine_files(root: Path, machine_id: str) -> list[Path]:
    return [split_path(root, machine_id, s) for s in SPLITS] + [metadata_path(root, machine_id), profile_path(root, machine_id)]


def _worse(values: float, direction: str) -> float:
    """A value signed so that larger means closer to failure."""
    return values if direction == "high" else -values


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_writes_identical_bytes_and_other_seed_differs(fleet, tmp_path):
    root, ids = fleet
    again = simulate_fleet(tmp_path / "again", machines=5, seed=SEED, rows=SMALL)
    assert again == ids
    for machine_id in ids:
        for first, second in zip(_machine_files(root, machine_id), _machine_files(tmp_path / "again", machine_id)):
            assert first.read_bytes() == second.read_bytes(), f"{first.name} of {machine_id} differs between runs"

    other = simulate_fleet(tmp_path / "other", machines=1, seed=SEED + 1, rows=SMALL)
    mine, theirs = _all_rows(root, ids[0]), _all_rows(tmp_path / "other", other[0])
    sensor = "bearing_temp_C"
    assert not np.allclose(mine[sensor].to_numpy(), theirs[sensor].to_numpy())


def test_fleet_machine_is_simulate_machine_with_the_derived_seed(fleet, tmp_path):
    root, ids = fleet
    summary = simulate_machine(tmp_path, ids[2], "compressor", machine_seed(SEED, 2), SMALL)
    assert summary["machine_id"] == ids[2]
    assert split_path(tmp_path, ids[2], "train").read_bytes() == split_path(root, ids[2], "train").read_bytes()
    assert machine_seed(SEED, 2) != machine_seed(SEED, 3) != machine_seed(SEED + 1, 3)


# ------------------------------------------------------------------------------------------ layout and schema


def test_fleet_names_cycle_through_the_types(fleet, tmp_path):
    _, ids = fleet
    assert ids == ["motor_001", "pump_002", "compressor_003", "cnc_004", "fan_005"]
    assert {i.rsplit("_", 1)[0] for i in ids} == set(MACHINE_TYPES) and len(MACHINE_TYPES) >= 5
    assert all(is_valid_machine_id(i) for i in ids)
    six = simulate_fleet(tmp_path, machines=6, seed=1, rows=SMALL)
    assert six[5] == "motor_006"


def test_files_rows_and_dtypes_follow_the_contract(fleet):
    root, ids = fleet
    sensor_counts, steps = set(), set()
    for machine_id in ids:
        assert validate_machine(root, machine_id) == []
        meta = _json(metadata_path(root, machine_id))
        assert meta["METADATA_SPEC_VERSION"] == "SINGLE_TABLE_V1" and meta["machine_id"] == machine_id
        columns = meta["columns"]
        assert columns[TIMESTAMP] == {"sdtype": "datetime", "datetime_format": "%Y-%m-%d %H:%M:%S"}
        assert columns[UNIT_ID] == {"sdtype": "id"}
        sensors = [c for c in columns if c not in (TIMESTAMP, UNIT_ID, RUL)]
        assert all(columns[c] == {"sdtype": "numerical", "computer_representation": "Float"} for c in [*sensors, RUL])
        assert all(re.fullmatch(r"[a-z0-9_]+_[A-Za-z0-9_]+", s) for s in sensors)
        sensor_counts.add(len(sensors))
        assert 4 <= len(sensors) <= 12

        for split, rows in zip(SPLITS, SMALL):
            df = pd.read_parquet(split_path(root, machine_id, split))
            assert len(df) == rows, f"{machine_id} {split}"
            assert list(df.columns) == list(columns), "metadata columns must match data columns, in order"
            assert df[TIMESTAMP].dtype == "datetime64[ns]"
            assert pd.api.types.is_string_dtype(df[UNIT_ID])
            assert all(df[c].dtype == np.float64 for c in [*sensors, RUL])
            assert not df[sensors].isna().any().any(), "no NaN by default"
            assert df[UNIT_ID].str.fullmatch(re.escape(machine_id) + r"-L\d{2}").all()

        params = meta["rul_parameters"]
        critical = params["critical_sensors"]
        assert 2 <= len(critical) <= 4 and set(critical) <= set(sensors)
        assert params["degradation_profile"] in ("linear", "exponential")
        step = params["sampling_interval_minutes"]
        steps.add(step)
        rows = _all_rows(root, machine_id)
        assert (rows[TIMESTAMP].diff().dropna() >= pd.Timedelta(minutes=step)).all()
        assert rows[RUL].max() <= params["max_operational"]
        assert meta["time_unit"] == "hours" and meta["machine_type"] == machine_id.rsplit("_", 1)[0]
    assert len(sensor_counts) >= 3, "sensor count should vary by machine type"
    assert len(steps) >= 2, "sampling step should vary by machine type"


def test_profile_limits_are_ordered_and_data_stays_within_min_max(fleet):
    root, ids = fleet
    for machine_id in ids:
        profile = _json(profile_path(root, machine_id))
        meta = _json(metadata_path(root, machine_id))
        assert profile["machine_id"] == machine_id and profile["machine_type"] == machine_id.rsplit("_", 1)[0]
        assert profile["critical_sensors"] == meta["rul_parameters"]["critical_sensors"]
        rows = _all_rows(root, machine_id)
        assert set(profile["sensors"]) == set(rows.columns) - {TIMESTAMP, UNIT_ID, RUL}
        for name, lim in profile["sensors"].items():
            assert lim["unit"]
            if lim["direction"] == "high":
                assert lim["min"] < lim["typical"] < lim["alarm"] < lim["trip"] <= lim["max"], name
            else:
                assert lim["direction"] == "low"
                assert lim["min"] <= lim["trip"] < lim["alarm"] < lim["typical"] < lim["max"], name
            assert rows[name].between(lim["min"], lim["max"]).all(), f"{machine_id} {name} out of min..max"
        directions = {profile["sensors"][c]["direction"] for c in profile["critical_sensors"]}
        assert directions <= {"high", "low"}


def test_default_rows_are_exact_with_8_to_12_train_lifecycles(full_motor):
    root, summary = full_motor
    assert summary["rows"] == dict(zip(SPLITS, DEFAULT_ROWS))
    assert 8 <= summary["lifecycles"]["train"] <= 12
    for split, rows in zip(SPLITS, DEFAULT_ROWS):
        df = pd.read_parquet(split_path(root, "motor_001", split))
        assert len(df) == rows
        assert df[UNIT_ID].nunique() == summary["lifecycles"][split] >= 2


# ------------------------------------------------------------------------------------------ splits


def test_splits_hold_whole_lifecycles_in_time_order(fleet):
    root, ids = fleet
    for machine_id in ids:
        splits = _splits(root, machine_id)
        units = {split: set(df[UNIT_ID]) for split, df in splits.items()}
        assert all(len(u) >= 2 for u in units.values()), f"{machine_id}: at least 2 lifecycles per split"
        assert not (units["train"] & units["val"]) and not (units["val"] & units["test"]) and not (units["train"] & units["test"])
        assert splits["train"][TIMESTAMP].max() < splits["val"][TIMESTAMP].min()
        assert splits["val"][TIMESTAMP].max() < splits["test"][TIMESTAMP].min()
        rows = _all_rows(root, machine_id)
        assert rows[TIMESTAMP].is_monotonic_increasing and rows[TIMESTAMP].is_unique
        durations = rows.groupby(UNIT_ID)[TIMESTAMP].agg(lambda t: t.max() - t.min())
        assert (durations >= pd.Timedelta(hours=MIN_LIFECYCLE_HOURS) - pd.Timedelta(minutes=15)).all()


# ------------------------------------------------------------------------------------------ realism


def test_rul_counts_down_to_zero_in_hours(fleet):
    root, ids = fleet
    for machine_id in ids:
        for unit, g in _all_rows(root, machine_id).groupby(UNIT_ID):
            rul = g[RUL].to_numpy()
            assert (np.diff(rul) < 0).all() and rul[-1] == 0.0, unit
            hours_left = (g[TIMESTAMP].iloc[-1] - g[TIMESTAMP]) / pd.Timedelta(hours=1)
            np.testing.assert_allclose(rul, hours_left.to_numpy())


def test_critical_sensors_degrade_toward_failure_and_distractors_do_not(fleet):
    root, ids = fleet
    for machine_id in ids:
        profile = _json(profile_path(root, machine_id))
        rows = _all_rows(root, machine_id)
        for sensor in profile["critical_sensors"]:
            direction = profile["sensors"][sensor]["direction"]
            worse = 0
            lifecycles = rows.groupby(UNIT_ID)
            for _, g in lifecycles:
                values = g[sensor].to_numpy()
                n = len(values)
                shift = values[-n // 10 :].mean() - values[: int(0.3 * n)].mean()
                worse += _worse(shift, direction) > 0
            assert worse >= 0.8 * lifecycles.ngroups, f"{machine_id} {sensor}: worse at the end in {worse} lifecycles"
    # Effect size (end minus start, in standard deviations of the lifecycle): large for a critical sensor,
    # small for the ambient temperature, which wear does not touch.
    motor = _all_rows(root, "motor_001")
    effect = {
        sensor: np.mean([
            (g[sensor].iloc[-len(g) // 10 :].mean() - g[sensor].iloc[: int(0.3 * len(g))].mean()) / g[sensor].std()
            for _, g in motor.groupby(UNIT_ID)
        ])
        for sensor in ("vibration_mm_s", "ambient_temp_C")
    }
    assert effect["vibration_mm_s"] > 1.0 and abs(effect["ambient_temp_C"]) < 0.5, effect


def test_efficiency_falls_with_wear(fleet):
    root, _ = fleet
    profile = _json(profile_path(root, "compressor_003"))
    assert profile["sensors"]["efficiency_pct"]["direction"] == "low"
    falls = [
        g["efficiency_pct"].iloc[-len(g) // 10 :].mean() < g["efficiency_pct"].iloc[: int(0.3 * len(g))].mean()
        for _, g in _all_rows(root, "compressor_003").groupby(UNIT_ID)
    ]
    assert np.mean(falls) >= 0.8


def test_critical_sensors_reach_alarm_near_failure(full_motor):
    root, _ = full_motor
    profile = _json(profile_path(root, "motor_001"))
    rows = _all_rows(root, "motor_001")
    reached, early = [], []
    for _, g in rows.groupby(UNIT_ID):
        crossed = np.zeros(len(g), dtype=bool)
        for sensor in profile["critical_sensors"]:
            lim = profile["sensors"][sensor]
            smooth = g[sensor].rolling(6, min_periods=1).median().to_numpy()  # ignore single-row spikes
            crossed |= _worse(smooth, lim["direction"]) >= _worse(lim["alarm"], lim["direction"])
        reached.append(crossed.any())
        early.append(crossed[: len(g) // 2].any())
    assert np.mean(reached) >= 0.8, "the alarm level should be crossed in most lifecycles before failure"
    assert np.mean(early) <= 0.2, "a healthy machine should rarely be in alarm"


def test_daily_load_cycle_moves_load_following_sensors(fleet):
    root, _ = fleet
    rows = _all_rows(root, "motor_001")
    hour = rows[TIMESTAMP].dt.hour.to_numpy()
    current = rows["motor_current_A"].to_numpy()
    spread = pd.Series(current).groupby(hour).mean().std()
    # The same statistic with hours shuffled measures what noise alone gives.
    shuffled = pd.Series(current).groupby(np.random.default_rng(0).permutation(hour)).mean().std()
    assert spread > 5 * shuffled, (spread, shuffled)
    weekday = rows[TIMESTAMP].dt.dayofweek.to_numpy()
    assert current[weekday >= 5].mean() < current[weekday < 5].mean(), "lower load at weekends"


def test_glitches_spikes_and_stuck_readings_are_present(full_motor):
    root, _ = full_motor
    rows = _all_rows(root, "motor_001")
    stuck_runs = spikes = 0
    for sensor in ("winding_temp_C", "bearing_temp_C", "vibration_mm_s"):
        values = rows[sensor]
        run_length = values.groupby((values != values.shift()).cumsum()).transform("size")
        stuck_runs += int(((run_length >= 6) & (values != values.shift())).sum())
        residual = values - values.rolling(13, center=True, min_periods=1).median()
        spikes += int((residual.abs() > 6 * residual.std()).sum())
    assert stuck_runs >= 1 and spikes >= 3, (stuck_runs, spikes)
    assert spikes < 0.005 * len(rows), "glitches must stay rare"


def test_missing_share_blanks_short_runs(tmp_path):
    simulate_machine(tmp_path, "fan_001", "fan", seed=0, rows=SMALL, missing_share=0.05)
    rows = _all_rows(tmp_path, "fan_001")
    share = rows["bearing_temp_C"].isna().mean()
    assert 0.02 < share < 0.09
    assert rows[[TIMESTAMP, UNIT_ID, RUL]].notna().all().all()


# ------------------------------------------------------------------------------------------ errors and progress


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"machine_type": "turbine"}, ValueError, r"motor_009.*machine_type 'turbine'.*motor, pump"),
        ({"machine_id": "../evil"}, InvalidMachineIdError, r"invalid machine id '\.\./evil'"),
        ({"rows": (3000, 200, 800)}, ValueError, r"motor_009: val rows=200 is too small.*at least 576 rows"),
        ({"seed": -1}, ValueError, r"motor_009: seed=-1"),
        ({"rows": (3000, 800)}, ValueError, r"rows=\(3000, 800\) must be three integers"),
        ({"missing_share": 0.7}, ValueError, r"missing_share=0.7"),
    ],
)
def test_bad_arguments_name_the_machine_and_the_argument(tmp_path, kwargs, error, pattern):
    args = {"root": tmp_path, "machine_id": "motor_009", "machine_type": "motor", "seed": 0, "rows": SMALL} | kwargs
    with pytest.raises(error, match=pattern):
        simulate_machine(**args)
    assert not (tmp_path / "synthetic").exists(), "nothing is written for bad arguments"


def test_fleet_rejects_bad_sizes_and_shows_progress(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"machines=0 must be a positive integer"):
        simulate_fleet(tmp_path, machines=0, seed=0)
    assert simulate_fleet(tmp_path, machines=2, seed=0, rows=SMALL, progress=True) == ["motor_001", "pump_002"]
    assert "simulating machines" in capsys.readouterr().err
