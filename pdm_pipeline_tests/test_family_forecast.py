"""Sensor forecasts family: Prophet vs seasonal naive chosen on val, any time axis, backtest on test.

Real Prophet on small synthetic series made here: a 10-minute series with a daily cycle, a slow trend and
AR(1) noise (Prophet's kind of series), a random walk (where nothing beats the last value), per-cycle engines
that all start at cycle 1, and a 20-minute per-second test bench file (too short to forecast a day).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline import families
from pdm_pipeline.core.config import GateSettings, TrainingConfig
from pdm_pipeline.core.gates import WARN, quality_gates
from pdm_pipeline.core.schema import LABEL, RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.errors import SettingsError
from pdm_pipeline.families.base import ModelSkipped, read_card
from pdm_pipeline.families.forecast.runtime import ForecastRuntime
from pdm_pipeline.families.forecast.series import FORECAST_COLUMNS
from pdm_pipeline.families.forecast.settings import MAX_DEFAULT_FORECAST_SENSORS, ForecastSettings
from pdm_pipeline.families.forecast.train import choose_sensors, forecast_sensors, sensor_scores
from pdm_pipeline_tests.helpers import assert_picture, views

pytestmark = pytest.mark.slow

FORECAST = families.get("timeseries")
SENSORS = ["bearing_temp_C", "vibration_mm_s"]
START = pd.Timestamp("2024-03-04")


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    noise = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    out[0] = noise[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + noise[i]
    return out


def daily_cycle(days: float, seed: int = 0, step_minutes: float = 10) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(days * 24 * 60 / step_minutes)
    ts = pd.date_range(START, periods=n, freq=pd.Timedelta(minutes=step_minutes))
    cycle = np.sin(2 * np.pi * ((ts.hour + ts.minute / 60) / 24 - 8 / 24))
    elapsed = np.arange(n) * step_minutes / 1440
    return pd.DataFrame({
        TIMESTAMP: ts,
        "bearing_temp_C": 60 + 6 * cycle + 0.25 * elapsed + _ar1(rng, n, 0.9, 0.5),
        "vibration_mm_s": 3 + 0.8 * cycle + 0.03 * elapsed + _ar1(rng, n, 0.9, 0.08),
    })


def chronological(frame: pd.DataFrame, val_days: float, test_days: float) -> dict[str, pd.DataFrame]:
    end = frame[TIMESTAMP].max()
    test_start = end - pd.Timedelta(days=test_days)
    val_start = test_start - pd.Timedelta(days=val_days)
    return {
        "train": frame[frame[TIMESTAMP] < val_start].reset_index(drop=True),
        "val": frame[(frame[TIMESTAMP] >= val_start) & (frame[TIMESTAMP] < test_start)].reset_index(drop=True),
        "test": frame[frame[TIMESTAMP] >= test_start].reset_index(drop=True),
    }


def train_on(splits: dict[str, pd.DataFrame], tmp_path, config: TrainingConfig | None = None, unit: str = "hours",
             critical: tuple[str, ...] = (), name: str = "model"):
    train, test = views(splits, [], time_unit=unit, raw=splits, critical=critical)
    out = tmp_path / name
    FORECAST.train(train, out, config or TrainingConfig())
    return out, test


@pytest.fixture(scope="module")
def cycle_model(tmp_path_factory):
    splits = chronological(daily_cycle(25), val_days=5, test_days=4)
    out, test = train_on(splits, tmp_path_factory.mktemp("fc"))
    return out, test, splits


def test_selection_compares_prophet_candidates_and_the_seasonal_naive_on_val(cycle_model):
    out, _, splits = cycle_model
    card = read_card(out)
    selection = card["selection"]
    labels = [c["label"] for c in selection["candidates"]]
    assert labels[-1] == "seasonal naive" and len(labels) >= 3
    best = min((c for c in selection["candidates"] if c["score"] is not None), key=lambda c: c["score"])
    assert selection["chosen"] == best["label"] or (selection["chosen"] == "seasonal naive" and
                                                      selection["candidates"][-1]["score"] <= best["score"])
    val_start = splits["val"][TIMESTAMP].min().floor("h")
    assert all(pd.Timestamp(o) >= val_start for o in selection["origins"]), "validation origins lie in val"
    assert card["spec"]["step_seconds"] == 3600 and card["spec"]["horizon_points"] == 24


def test_prophet_wins_a_daily_cycle_and_beats_naive_on_test(cycle_model):
    out, test, _ = cycle_model
    card = read_card(out)
    assert card["method"] == "prophet" and len(card["files"]) == 2
    evaluation = FORECAST.evaluate(out, test)
    assert evaluation.metrics["mase"] < evaluation.baseline["mase"]
    assert evaluation.metrics["mase"] < 1
    assert evaluation.metrics["mae_vs_naive"] < 1
    assert [g.passed for g in quality_gates("timeseries", evaluation.metrics, GateSettings())] == [True]
    assert 0.6 <= evaluation.metrics["coverage_80"] <= evaluation.metrics["coverage_95"] <= 1.0
    assert evaluation.details["label"] == "prophet"
    assert_picture(evaluation.pictures["forecast bearing_temp_C"])


def test_forecast_after_recent_rows_continues_them(cycle_model):
    out, _, splits = cycle_model
    runtime = ForecastRuntime(out, read_card(out))
    recent = splits["test"].iloc[:300]
    fc = runtime.forecast(recent)
    assert list(fc.columns) == FORECAST_COLUMNS and len(fc) == 2 * 24
    first = pd.Timestamp(fc["ds"].min())
    assert first > recent[TIMESTAMP].max() and first - recent[TIMESTAMP].max() <= pd.Timedelta(hours=1)
    assert (fc["yhat_lower_95"] <= fc["yhat_lower_80"]).all() and (fc["yhat_upper_80"] <= fc["yhat_upper_95"]).all()
    again = runtime.forecast(recent)
    pd.testing.assert_frame_equal(fc, again)  # seeded: reproducible
    six = runtime.forecast(recent, horizon=6)
    assert len(six) == 2 * 6


def test_naive_ships_where_prophet_does_not_beat_it_and_needs_no_prophet(tmp_path):
    """A random walk: no model beats the last value; the naive forecast ships, honestly labelled, with
    empirical bands, and the edge loads and runs it without importing Prophet."""
    rng = np.random.default_rng(4)
    n = 24 * 30
    ts = pd.date_range(START, periods=n, freq="h")
    frame = pd.DataFrame({TIMESTAMP: ts, "level_m": np.cumsum(rng.normal(0, 1, n)),
                          "flow_l_s": np.cumsum(rng.normal(0, 0.3, n))})
    splits = chronological(frame, val_days=6, test_days=5)
    out, test = train_on(splits, tmp_path)
    card = read_card(out)
    assert card["method"] == "naive" and card["label"] == "seasonal naive"
    assert "naive" in card["selection"]["reason"]
    assert not (out / "prophet").exists()
    evaluation = FORECAST.evaluate(out, test)
    assert evaluation.details["label"] == "seasonal naive"
    assert evaluation.metrics["mase"] == pytest.approx(evaluation.baseline["mase"])
    assert evaluation.metrics["mae_vs_naive"] == pytest.approx(1.0)  # naive against itself: the gate passes
    (gate,) = quality_gates("timeseries", evaluation.metrics, GateSettings())
    assert gate.name == "forecast_beats_seasonal_naive" and gate.passed
    (lost,) = quality_gates("timeseries", {**evaluation.metrics, "mae_vs_naive": 1.3}, GateSettings())
    assert not lost.passed and lost.severity == WARN and "mae_vs_naive 1.3" in lost.description
    assert 0.5 <= evaluation.metrics["coverage_95"] <= 1.0
    # counts are whole numbers (the evaluation asset's metadata showed n_windows 10.0)
    assert type(evaluation.metrics["n_windows"]) is int and evaluation.metrics["n_windows"] > 0
    assert type(evaluation.flat_metrics()["n_windows"]) is int
    assert all(type(s["n_points"]) is int for s in evaluation.details["per_sensor"].values())
    code = (
        "import sys, json; from pathlib import Path; import pandas as pd\n"
        "from pdm_pipeline.families.forecast.runtime import ForecastRuntime\n"
        f"p = Path({str(out)!r}); r = ForecastRuntime(p, json.loads((p / 'model_card.json').read_text()))\n"
        f"fc = r.forecast(pd.read_json({splits['test'].to_json()!r}, convert_dates=['timestamp']))\n"
        "print(len(fc), 'prophet' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert result == ["48", "False"]


def engines(n_units: int, seed: int) -> pd.DataFrame:
    """Run-to-failure engines counted in cycles from 1 (they share the origin), one slowly degrading sensor."""
    rng = np.random.default_rng(seed)
    parts = []
    for u in range(n_units):
        life = int(rng.integers(150, 220))
        cycles = np.arange(1, life + 1)
        parts.append(pd.DataFrame({
            TIMESTAMP: cycles, UNIT_ID: f"e{seed}_{u}",
            "egt_C": 640 + 8 * (cycles / life) ** 2 + rng.normal(0, 0.4, life),
        }))
    return pd.concat(parts, ignore_index=True)


def test_units_sharing_an_origin_are_forecast_unit_by_unit_in_cycles(tmp_path):
    splits = {"train": engines(6, 1), "val": engines(2, 2), "test": engines(2, 3)}
    out, test = train_on(splits, tmp_path, unit="cycles")
    card = read_card(out)
    assert card["parallel_units"] is True
    assert card["spec"]["time_unit"] == "cycles" and card["spec"]["step_seconds"] == 1
    assert card["spec"]["seasonalities"] == {"daily": False, "weekly": False}
    runtime = ForecastRuntime(out, card)
    recent = splits["test"][splits["test"][UNIT_ID] == "e3_1"].iloc[:100]
    fc = runtime.forecast(recent)
    assert fc["ds"].tolist()[:3] == [101.0, 102.0, 103.0], "continues the unit's own cycle counter"
    assert set(fc[UNIT_ID]) == {"e3_1"}
    both = pd.concat([splits["test"][splits["test"][UNIT_ID] == "e3_0"].iloc[:80], recent])  # e3_1's row last
    assert set(runtime.forecast(both)[UNIT_ID]) == {"e3_1"}, "the unit continued is named"
    evaluation = FORECAST.evaluate(out, test)
    assert evaluation.metrics["n_windows"] >= 2
    assert evaluation.details["step_seconds"] == 1


def test_units_side_by_side_split_in_time_score_val_and_test_windows_inside_each_units_own_split(tmp_path):
    """Units counting cycles from 1, each split in time as `--split first_rows` does (its first cycles train, then
    val, then test; the cut differs per unit). Every unit's rows lie on one cycle axis from 1, so one start for
    all does not separate the splits: the validation windows (model choice) lay partly in train and 8 of 10 test
    windows wholly in train/val. Each window must lie inside its own unit's val (test) rows; the earlier rows are
    only history."""
    rng = np.random.default_rng(5)
    cuts = {"a": (120, 160, 200), "b": (150, 190, 240), "c": (130, 170, 215)}  # last train, last val, last cycle
    splits: dict[str, list[pd.DataFrame]] = {"train": [], "val": [], "test": []}
    for key, (train_end, val_end, end) in cuts.items():
        c = np.arange(1, end + 1)
        frame = pd.DataFrame({TIMESTAMP: c, UNIT_ID: key,
                              "egt_C": 640 + 3 * np.sin(2 * np.pi * c / 12) + 0.02 * c + rng.normal(0, 0.3, end)})
        splits["train"].append(frame[c <= train_end])
        splits["val"].append(frame[(c > train_end) & (c <= val_end)])
        splits["test"].append(frame[c > val_end])
    joined = {k: pd.concat(v, ignore_index=True) for k, v in splits.items()}
    config = TrainingConfig(extra={"forecast_validation_windows": 4, "forecast_history_points": 96,
                                   "forecast_growth": "flat", "forecast_uncertainty_samples": 100})
    out, test = train_on(joined, tmp_path, config, unit="cycles")
    card = read_card(out)
    assert card["parallel_units"] is True and card["spec"]["horizon_points"] == 24
    reach = card["spec"]["horizon_points"] - 1
    selection = card["selection"]
    val_origins = [pd.Timestamp(o) for o in selection["origins"]]
    cycles = [round((o - pd.Timestamp("2000-01-01")).total_seconds()) for o in val_origins]
    assert len(cycles) == 4
    assert min(cycles) > min(t for t, _, _ in cuts.values()), f"validation windows in train: {cycles}"
    assert selection["n_windows"] == 4
    for key, cycle in zip(selection["origin_units"], cycles):
        train_end, val_end, _ = cuts[key]
        assert train_end < cycle and cycle + reach <= val_end, f"unit {key}: window at {cycle} is not in its val"

    evaluation = FORECAST.evaluate(out, test)
    details = evaluation.details
    cycles = [round((pd.Timestamp(o) - pd.Timestamp("2000-01-01")).total_seconds()) for o in details["origins"]]
    assert len(cycles) == 10 == evaluation.metrics["n_windows"]
    assert min(cycles) > min(v for _, v, _ in cuts.values()), f"test windows in train/val: {cycles}"
    for key, cycle in zip(details["origin_units"], cycles):
        _, val_end, end = cuts[key]
        assert val_end < cycle and cycle + reach <= end, f"unit {key}: window at {cycle} is not in its test rows"
    assert set(details["origin_units"]) == set(cuts), "every unit's test rows are backtested"
    assert details["n_windows"] == {"validation": 4, "test": 10}
    assert details["test_start_per_unit"] == {k: str(pd.Timestamp("2000-01-01") + pd.Timedelta(seconds=v + 1))
                                              for k, (_, v, _) in cuts.items()}


def test_a_series_shorter_than_two_horizons_is_skipped_with_its_reason(tmp_path):
    """A 20-minute per-second file cannot train a 24 h forecast: skipped, saying how long it is."""
    n = 1200
    ts = pd.date_range(START, periods=n, freq="s")
    frame = pd.DataFrame({TIMESTAMP: ts, "pressure_bar": np.sin(np.arange(n) / 30)})
    splits = {"train": frame.iloc[:400], "val": frame.iloc[400:500], "test": frame.iloc[500:]}
    with pytest.raises(ModelSkipped, match="too short to forecast") as refused:
        train_on(splits, tmp_path, unit="seconds")
    # The reason names a horizon that fits; with it (here 60 s, below the bound) the same data trains, on a grid
    # finer than an hour.
    bound = float(re.search(r"forecast_horizon at most ([\d.]+) s \(in seconds\)", str(refused.value)).group(1))
    assert 60 <= bound < 24 * 3600
    out, _ = train_on(splits, tmp_path, TrainingConfig(forecast_horizon=60), unit="seconds")
    card = read_card(out)
    assert card["spec"]["step_seconds"] < 3600 and card["spec"]["horizon_points"] <= 60


def test_history_shorter_than_two_days_forecasts_from_the_last_value_with_honest_scores(tmp_path):
    """Three hours of minute data: a daily season would have nothing to copy (the naive scale and every
    validation score were infinite, and bands of width 0 shipped). The season is one step instead: every
    candidate has a finite validation score and the test MASE and coverages are measured."""
    n = 180
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({TIMESTAMP: pd.date_range(START, periods=n, freq="min"),
                          "pressure_bar": 5 + _ar1(rng, n, 0.5, 0.3)})
    splits = {"train": frame.iloc[:110], "val": frame.iloc[110:140], "test": frame.iloc[140:]}
    out, test = train_on(splits, tmp_path, TrainingConfig(forecast_horizon=10), unit="minutes")
    card = read_card(out)
    assert card["spec"]["season_seconds"] == card["spec"]["step_seconds"] == 60
    assert all(c["score"] is not None and np.isfinite(c["score"]) for c in card["selection"]["candidates"])
    evaluation = FORECAST.evaluate(out, test)
    assert np.isfinite(evaluation.metrics["mase"]) and np.isfinite(evaluation.baseline["mase"])
    assert 0.5 <= evaluation.metrics["coverage_80"] <= evaluation.metrics["coverage_95"] <= 1.0


def test_backtest_uses_only_data_before_each_origin(cycle_model):
    out, test, _ = cycle_model
    evaluation = FORECAST.evaluate(out, test)
    origins = [pd.Timestamp(o) for o in evaluation.details["origins"]]
    changed = test.raw_test.copy()
    late = changed[TIMESTAMP] > origins[-1] + pd.Timedelta(days=1)
    changed.loc[late, SENSORS] += 100.0  # after the last horizon: cannot change any backtest number
    from dataclasses import replace

    again = FORECAST.evaluate(out, replace(test, raw_test=changed))
    assert again.metrics["mase"] == pytest.approx(evaluation.metrics["mase"])


def test_forecast_sensors_prefers_critical_sensors():
    assert forecast_sensors(["b"], ["a", "b", "c"]) == ["b"]
    assert forecast_sensors([], ["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="not among the sensors"):
        forecast_sensors(["z"], ["a"])


LIFE = 96
TIED = ["s07", "s10"]  # the two sensors that follow rul on train in `degrading` (not first by name on purpose)


def degrading(days: int = 12, seed: int = 0) -> pd.DataFrame:
    """Hourly lifecycles of LIFE hours (rul counts down to 0, then a repair), 12 noisy sensors of different
    scales of which s07 rises and s10 falls with wear, and a constant sensor."""
    rng = np.random.default_rng(seed)
    n = days * 24
    rul = (LIFE - 1 - np.arange(n) % LIFE).astype(float)
    wear = 1 - rul / LIFE
    frame = pd.DataFrame({TIMESTAMP: pd.date_range(START, periods=n, freq="h"), RUL: rul})
    for j in range(12):
        frame[f"s{j:02d}"] = 20 + rng.normal(0, 1 + j / 4, n)
    frame["s07"] += 8 * wear
    frame["s10"] -= 10 * wear
    frame["a_flat"] = 5.0
    return frame


def capped(**extra) -> TrainingConfig:
    return TrainingConfig(extra={"forecast_max_sensors": 2, **extra})


def test_without_critical_sensors_the_cap_keeps_the_sensors_tied_to_rul_on_train(tmp_path):
    """12 varying sensors, none declared critical, cap 2: exactly the two that follow rul are fitted (real
    Prophet, one validation window), and the card and summary say which, why, and what was left out."""
    splits = chronological(degrading(), val_days=3, test_days=2)
    train, _ = views(splits, [], raw=splits)
    out = tmp_path / "model"
    summary = FORECAST.train(train, out, capped(forecast_validation_windows=1))
    card = read_card(out)
    assert sorted(card["sensors"]) == TIED and summary["sensors"] == card["sensors"]
    chosen = card["sensor_selection"]
    assert chosen == summary["sensor_selection"]
    assert "Spearman" in chosen["rule"] and "rul" in chosen["rule"] and "max_sensors 2" in chosen["rule"]
    assert sorted(chosen["scores"]) == TIED and min(chosen["scores"].values()) > max(chosen["next_best"].values())
    assert chosen["left_out"] == 10 and chosen["constant_on_train"] == ["a_flat"]
    assert "critical_sensors" in chosen["change"] and "forecast_max_sensors" in chosen["change"]
    assert "max_sensors" not in card["spec"]["settings"], "a training-only setting: not stored for refits"
    prophets = [c for c in card["selection"]["candidates"] if c["method"] == "prophet"]
    assert prophets and all(set(c["val_mae"]) == set(TIED) for c in prophets), "Prophet fitted on the chosen only"
    if card["method"] == "prophet":
        assert sorted(card["files"]) == TIED


def test_the_sensor_choice_is_fitted_on_train_only(tmp_path):
    """Val and test rewritten so that two other sensors follow rul there and the chosen ones run against it:
    the choice and its scores do not move (the forecast history is train + val; the choice must not be)."""
    splits = chronological(degrading(), val_days=3, test_days=2)
    changed = {k: v.copy() for k, v in splits.items()}
    for split in ("val", "test"):
        frame = changed[split]
        wear = 1 - frame[RUL] / LIFE
        frame["s00"], frame["s01"] = 20 + 50 * wear, 20 - 50 * wear
        frame["s07"], frame["s10"] = 20 - 8 * wear, 20 + 10 * wear
    config = capped(forecast_validation_windows=0)  # no Prophet needed: the choice comes first
    first, _ = train_on(splits, tmp_path, config, name="a")
    second, _ = train_on(changed, tmp_path, config, name="b")
    a, b = read_card(first)["sensor_selection"], read_card(second)["sensor_selection"]
    assert sorted(read_card(first)["sensors"]) == sorted(read_card(second)["sensors"]) == TIED
    assert a == b
    view, _ = views(splits, [], raw={**splits, "val": splits["train"].iloc[:0]})
    assert sensor_scores(view, ["s07"])[1]["s07"] == pytest.approx(a["scores"]["s07"], abs=0)


def test_declared_critical_sensors_are_all_forecast_past_the_cap(tmp_path):
    splits = chronological(degrading(), val_days=3, test_days=2)
    out, _ = train_on(splits, tmp_path, capped(forecast_validation_windows=0), critical=("s00", "s01", "s02"))
    card = read_card(out)
    assert card["sensors"] == ["s00", "s01", "s02"]
    assert "critical" in card["sensor_selection"]["rule"] and "left_out" not in card["sensor_selection"]


def test_without_rul_the_choice_follows_the_failure_label_then_the_drift_and_never_a_constant_sensor():
    frame = degrading(days=8)
    label = (frame[RUL] < 24).astype(int)
    with_label = frame.drop(columns=[RUL]).assign(**{LABEL: label})
    view, _ = views({"train": with_label, "val": with_label.iloc[:0], "test": with_label.iloc[:0]}, [])
    chosen, record = choose_sensors(view, 2)
    assert sorted(chosen) == TIED and LABEL in record["rule"]
    # No rul, no label: the level drift over each lifecycle relative to the noise; the constant sensor scores 0
    # and is never a candidate, even with room for every sensor.
    bare = frame.drop(columns=[RUL]).assign(**{UNIT_ID: (np.arange(len(frame)) // LIFE).astype(str)})
    view, _ = views({"train": bare, "val": bare.iloc[:0], "test": bare.iloc[:0]}, [])
    chosen, record = choose_sensors(view, 2)
    assert sorted(chosen) == TIED and "drift" in record["rule"]
    everything, record = choose_sensors(view, 0)
    assert len(everything) == 12 and "a_flat" not in everything and record["constant_on_train"] == ["a_flat"]
    assert MAX_DEFAULT_FORECAST_SENSORS == ForecastSettings().max_sensors == 8


@pytest.mark.parametrize(("extra", "message"), [
    ({"forecast_growth": "cubic"}, "growth='cubic'"),
    ({"forecast_max_sensors": -1}, "max_sensors=-1"),
    ({"forecast_bogus": 1}, "unknown forecast setting"),
    ({"window": 3}, "unknown expert setting"),
])
def test_bad_forecast_settings_are_named(extra, message):
    with pytest.raises(SettingsError, match=message):
        TrainingConfig(extra=extra).validate()
    assert ForecastSettings.overrides({"forecast_history_points": 168}) == {"history_points": 168}
    assert json.dumps(ForecastSettings().as_dict())


def test_the_fast_component_matrix_is_prophets_own_and_its_models_load_in_plain_prophet():
    """FastComponentsProphet only replaces how Prophet builds its component table (numpy instead of
    pd.crosstab): the table must be Prophet's own, value for value, and a model it fitted must serialize and
    predict with plain Prophet (which checks its own table against the stored one)."""
    import copy

    from prophet import Prophet
    from prophet.serialize import model_from_json, model_to_json

    from pdm_pipeline.families.forecast.series import fast_component_matrix, prophet_class

    ds = pd.date_range("2025-01-01", periods=24 * 21, freq="h")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"ds": ds, "y": np.sin(np.arange(len(ds)) * 2 * np.pi / 24) + rng.normal(0, 0.1, len(ds)),
                          "repair_0": (ds >= ds[300]).astype(float)})
    captured = []
    original = Prophet.regressor_column_matrix

    def spy(self, seasonal_features, modes):
        before = copy.deepcopy(modes)
        out, after = original(self, seasonal_features, modes)
        captured.append((self, seasonal_features, before, out, copy.deepcopy(after)))
        return out, after

    Prophet.regressor_column_matrix = spy
    try:
        plain = Prophet(daily_seasonality=True, weekly_seasonality=True, yearly_seasonality=False, uncertainty_samples=0)
        plain.add_regressor("repair_0", mode="additive")
        plain.fit(frame)
        future = frame[["ds"]].iloc[-48:].assign(repair_0=1.0)
        plain.predict(future)
    finally:
        Prophet.regressor_column_matrix = original
    assert len(captured) >= 2, "Prophet builds the table at fit and at predict"
    for model, features, modes, expected, expected_modes in captured:
        ours, ours_modes = fast_component_matrix(model, features, copy.deepcopy(modes))
        assert ours.equals(expected) and list(ours.columns) == list(expected.columns)
        assert ours.index.name == expected.index.name and ours.columns.name == expected.columns.name
        assert ours_modes == expected_modes

    fast = prophet_class()(daily_seasonality=True, weekly_seasonality=True, yearly_seasonality=False,
                           uncertainty_samples=0)
    fast.add_regressor("repair_0", mode="additive")
    fast.fit(frame)
    assert fast.train_component_cols.equals(plain.train_component_cols)
    reloaded = model_from_json(model_to_json(fast))
    assert type(reloaded) is Prophet
    np.testing.assert_allclose(reloaded.predict(future)["yhat"], plain.predict(future)["yhat"], rtol=1e-6, atol=1e-6)


def test_fits_side_by_side_are_the_fits_a_loop_makes_and_a_failure_is_the_first_in_order():
    from pdm_pipeline.families.forecast import series as fs

    frame = daily_cycle(days=6, seed=3, step_minutes=60).set_index(TIMESTAMP)
    step = pd.Timedelta(hours=1)
    segment = fs.Segment("m", frame[["bearing_temp_C", "vibration_mm_s"]].asfreq(step))
    spec = fs.Spec("hours", step, 24, fs.seasonalities(pd.Timedelta(days=6), "hours", step), "prophet",
                   ForecastSettings(), fs.season_for(step, "hours"))
    origins = [segment.values.index[k] for k in (72, 96, 120)]
    jobs = [(segment, sensor, origin, spec, "test") for sensor in ("bearing_temp_C", "vibration_mm_s") for origin in origins]
    together = fs.fit_prophet_all(jobs)
    for job, model in zip(jobs, together):
        alone = fs.fit_prophet(*job)
        for name in ("k", "m", "delta", "beta"):
            np.testing.assert_allclose(model.params[name], alone.params[name], rtol=1e-6, atol=1e-9)
        ds = spec.horizon(job[2])
        np.testing.assert_allclose(fs.prophet_point(model, ds), fs.prophet_point(alone, ds), rtol=1e-6)
    # The second job has too little history: its own message, as a loop would raise it.
    early = segment.values.index[1]
    with pytest.raises(fs.ForecastSkipped, match=f"only 1 value.*before {early}"):
        fs.fit_prophet_all([jobs[0], (segment, "bearing_temp_C", early, spec, "test"), jobs[1]])


def test_fits_not_started_when_a_job_fails_are_dropped(monkeypatch):
    from pdm_pipeline.families.forecast import series as fs

    frame = daily_cycle(days=6, seed=3, step_minutes=60).set_index(TIMESTAMP)
    step = pd.Timedelta(hours=1)
    segment = fs.Segment("m", frame[["bearing_temp_C"]].asfreq(step))
    spec = fs.Spec("hours", step, 24, fs.seasonalities(pd.Timedelta(days=6), "hours", step), "prophet",
                   ForecastSettings(), fs.season_for(step, "hours"))
    started = []
    fit = fs.fit_prophet
    monkeypatch.setattr(fs, "fit_prophet", lambda *job: started.append(job[2]) or fit(*job))
    good = [(segment, "bearing_temp_C", segment.values.index[k], spec, "test") for k in range(60, 120)]
    with pytest.raises(fs.ForecastSkipped):
        fs.fit_prophet_all([(segment, "bearing_temp_C", segment.values.index[1], spec, "test"), *good])
    assert len(started) < len(good) / 2  # a loop would have stopped at once; the pool stops soon after
