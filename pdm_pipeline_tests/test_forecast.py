"""Per-sensor Prophet forecasts: training, stored and refitted forecasts, and the rolling-origin backtest.

Real Prophet on small synthetic data made here: a 10-minute series with a daily load cycle, a slow upward
trend (wear) and AR(1) noise; 21 days of history (train + val, val = the last 5 days) followed by 4 days of
test. Tests that are not about model selection switch it off (`validation_windows` 0) to stay fast.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core.config import ConfigError, TrainingConfig
from pdm_pipeline.core.forecast import (
    CANDIDATE_GRID,
    FORECAST_COLUMNS,
    MODEL_CARD,
    ForecastModelResult,
    ForecastSettings,
    ForecastSkipped,
    evaluate_sensor_forecasts,
    forecast_sensors,
    load_forecaster,
    train_sensor_forecasts,
)
from pdm_pipeline.core.schema import LABEL, RUL, TIMESTAMP, UNIT_ID

pytestmark = pytest.mark.slow

SENSORS = ["bearing_temp_C", "vibration_mm_s"]
HISTORY_DAYS, TEST_DAYS, VAL_DAYS = 21, 4, 5
START = pd.Timestamp("2024-03-04")
VAL_START = START + pd.Timedelta(days=HISTORY_DAYS - VAL_DAYS)
# No model selection and no interval calibration: one candidate, Prophet's own bands.
NO_SELECTION = TrainingConfig(extra={"forecast_validation_windows": 0})


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    noise = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    out[0] = noise[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + noise[i]
    return out


def make_sensors(days: float, *, step_minutes: float = 10, seed: int = 0) -> pd.DataFrame:
    """Raw rows: daily cycle (peak mid-afternoon) + slow wear trend + AR(1) noise, plus columns to ignore."""
    rng = np.random.default_rng(seed)
    n = int(days * 24 * 60 / step_minutes)
    ts = pd.date_range(START, periods=n, freq=pd.Timedelta(minutes=step_minutes))
    day_fraction = (ts.hour + ts.minute / 60) / 24
    cycle = np.sin(2 * np.pi * (day_fraction - 8 / 24))
    elapsed_days = np.arange(n) * step_minutes / 1440
    return pd.DataFrame(
        {
            TIMESTAMP: ts,
            "bearing_temp_C": 60 + 6 * cycle + 0.25 * elapsed_days + _ar1(rng, n, 0.9, 0.5),
            "vibration_mm_s": 3 + 0.8 * cycle + 0.03 * elapsed_days + _ar1(rng, n, 0.9, 0.08),
            RUL: np.linspace(days * 24, 0, n),
            LABEL: np.zeros(n, dtype=int),
        }
    )


def split_history_test(frame: pd.DataFrame, history_days: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    cut = START + pd.Timedelta(days=history_days)
    return (
        frame[frame[TIMESTAMP] < cut].reset_index(drop=True),
        frame[frame[TIMESTAMP] >= cut].reset_index(drop=True),
    )


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_history_test(make_sensors(HISTORY_DAYS + TEST_DAYS), HISTORY_DAYS)


@pytest.fixture(scope="module")
def training(data, tmp_path_factory) -> tuple[ForecastModelResult, list[str]]:
    """The trained models and the messages logged while training them."""
    history, _ = data
    messages: list[str] = []
    out = tmp_path_factory.mktemp("forecast") / "model"
    result = train_sensor_forecasts(history, SENSORS, out, TrainingConfig(), log=messages.append, val_start=VAL_START)
    return result, messages


@pytest.fixture(scope="module")
def trained(training) -> ForecastModelResult:
    return training[0]


@pytest.fixture(scope="module")
def evaluation(trained, data):
    history, test = data
    return evaluate_sensor_forecasts(trained, history, test)


def _metric_values(evaluation) -> dict[str, float]:
    return {**evaluation.metrics, **{f"baseline_{k}": v for k, v in evaluation.baseline.items()}}


# ---------------------------------------------------------------------------------------------- training


def test_training_writes_one_prophet_per_sensor_and_a_card(training):
    trained, messages = training
    assert trained.sensors == SENSORS
    assert trained.freq == "h" and trained.step_seconds == 600.0
    assert trained.horizon_hours == 24
    # The fit window is the chosen trailing window; weekly seasonality needs a window of >= 2 weeks.
    days = trained.settings["history_days"]
    assert trained.seasonalities == {"daily": True, "weekly": days >= 14}
    assert trained.history_hours == pytest.approx(days * 24)
    card = json.loads((trained.path / MODEL_CARD).read_text())
    assert card["settings"] == trained.settings
    assert card["selection"] == json.loads(json.dumps(trained.selection))
    assert set(card["files"]) == set(SENSORS)
    for name in card["files"].values():
        assert json.loads((trained.path / name).read_text())  # prophet.serialize JSON
    assert 0 < trained.size_mb < 5
    # Per-sensor progress is logged, and interval factors were calibrated on the end of the history.
    assert all(any(sensor in m and "fitted" in m for m in messages) for sensor in SENSORS)
    assert all(0 < f < 10 for scales in card["interval_scales"].values() for f in scales.values())


def test_stored_forecast_has_24_hourly_rows_per_sensor_with_nested_bands(trained, data):
    history, _ = data
    forecaster = load_forecaster(trained.path)
    fc = forecaster.forecast()
    assert list(fc.columns) == FORECAST_COLUMNS
    assert fc.groupby("sensor").size().to_dict() == {s: 24 for s in SENSORS}
    for _, part in fc.groupby("sensor"):
        assert (part["ds"].diff().dropna() == pd.Timedelta(hours=1)).all()
        assert part["ds"].iloc[0] == history[TIMESTAMP].max().floor("h") + pd.Timedelta(hours=1)
    assert (fc["yhat_lower_95"] <= fc["yhat_lower_80"]).all()
    assert (fc["yhat_lower_80"] <= fc["yhat"]).all()
    assert (fc["yhat"] <= fc["yhat_upper_80"]).all()
    assert (fc["yhat_upper_80"] <= fc["yhat_upper_95"]).all()
    assert (fc["yhat_upper_95"] - fc["yhat_lower_95"]).min() > 0
    # The forecast follows the daily cycle at the current level (true level ~65 C on day 21, amplitude 6).
    temp = fc[fc["sensor"] == "bearing_temp_C"]
    assert 60 < temp["yhat"].mean() < 70
    assert temp["yhat"].max() - temp["yhat"].min() > 6


def test_forecast_is_reproducible_and_leaves_numpy_global_rng_alone(trained):
    forecaster = load_forecaster(trained.path)
    np.random.seed(123)
    state = np.random.get_state()
    first = forecaster.forecast(hours=6)
    assert np.random.get_state()[1].tolist() == state[1].tolist()
    pd.testing.assert_frame_equal(first, forecaster.forecast(hours=6))
    assert len(first) == 6 * len(SENSORS)


def test_forecast_after_recent_rows_starts_after_their_last_timestamp_and_follows_them(trained, data):
    history, test = data
    forecaster = load_forecaster(trained.path)
    recent = pd.concat([history, test.iloc[:26]], ignore_index=True)  # ends at 04:10 on the first test day
    last = recent[TIMESTAMP].max()
    assert last.minute == 10
    fc = forecaster.forecast(recent)
    assert fc.groupby("sensor").size().to_dict() == {s: 24 for s in SENSORS}
    assert (fc["ds"] > last).all()
    assert fc["ds"].min() == last.ceil("h")
    # Refitted on `recent`, not the stored fit: shifting the recent values shifts the forecast with them.
    shifted = recent.assign(bearing_temp_C=recent["bearing_temp_C"] + 10)
    moved = forecaster.forecast(shifted, hours=24)
    delta = moved.loc[moved["sensor"] == "bearing_temp_C", "yhat"].to_numpy() - fc.loc[
        fc["sensor"] == "bearing_temp_C", "yhat"
    ].to_numpy()
    assert delta == pytest.approx(np.full(24, 10.0), abs=0.5)


def test_no_timestamp_column_is_skipped_with_its_reason(data, tmp_path):
    history, _ = data
    with pytest.raises(ForecastSkipped, match="no 'timestamp' column: nothing to forecast"):
        train_sensor_forecasts(history.drop(columns=[TIMESTAMP]), SENSORS, tmp_path, NO_SELECTION, log=lambda m: None)


def test_five_minute_data_is_inferred_and_resampled_to_hourly_means(tmp_path):
    raw = make_sensors(4, step_minutes=5, seed=3)
    result = train_sensor_forecasts(raw, ["bearing_temp_C"], tmp_path, NO_SELECTION, log=lambda m: None)
    assert result.step_seconds == 300.0 and result.freq == "h"
    assert result.seasonalities == {"daily": True, "weekly": False}
    fitted = load_forecaster(tmp_path).models["bearing_temp_C"].history.set_index("ds")["y"]
    hourly = raw.set_index(TIMESTAMP)["bearing_temp_C"].resample("h").mean()
    assert len(fitted) == 4 * 24
    # validation_windows 0: no selection, no calibration.
    assert result.selection["chosen"] is None and "validation_windows=0" in result.selection["reason"]
    assert load_forecaster(tmp_path).interval_scales == {"bearing_temp_C": {"80": 1.0, "95": 1.0}}
    pd.testing.assert_series_equal(fitted, hourly.loc[fitted.index], check_names=False, check_freq=False)


def test_coarse_data_keeps_its_own_step(tmp_path):
    raw = make_sensors(20, step_minutes=120, seed=4)
    result = train_sensor_forecasts(raw, ["vibration_mm_s"], tmp_path, NO_SELECTION, log=lambda m: None)
    assert result.step_seconds == 7200.0 and result.freq == "2h"
    fc = load_forecaster(tmp_path).forecast()
    assert len(fc) == 12
    assert (fc["ds"].diff().dropna() == pd.Timedelta(hours=2)).all()
    assert fc["ds"].iloc[0] == raw[TIMESTAMP].max() + pd.Timedelta(hours=2)


def test_a_recent_repair_resets_the_forecast_level(tmp_path):
    """unit_id marks a repair 1 day before the end: the forecast follows the new level, not the worn one."""
    raw = make_sensors(20, seed=5)
    repair = raw[TIMESTAMP].max() - pd.Timedelta(days=1)
    worn = raw[TIMESTAMP] < repair
    ramp = np.where(worn, 25 * np.clip((raw[TIMESTAMP] - START) / (repair - START), 0, 1) ** 2, 0.0)
    raw["bearing_temp_C"] = raw["bearing_temp_C"] + ramp
    raw[UNIT_ID] = np.where(worn, "L1", "L2")
    train_sensor_forecasts(raw, ["bearing_temp_C"], tmp_path, TrainingConfig(), log=lambda m: None)
    fc = load_forecaster(tmp_path).forecast()
    new_level = raw.loc[~worn, "bearing_temp_C"].mean()
    assert abs(fc["yhat"].mean() - new_level) < 3
    assert fc["yhat"].mean() < raw.loc[worn, "bearing_temp_C"].tail(144).mean() - 15


# ---------------------------------------------------------------------------------------------- selection


def _hourly(frame: pd.DataFrame, sensor: str) -> pd.Series:
    return frame.set_index(TIMESTAMP)[sensor].resample("h").mean()


def test_validation_origins_lie_in_val_and_every_candidate_is_scored(trained, data):
    history, _ = data
    selection = trained.selection
    origins = [pd.Timestamp(o) for o in selection["origins"]]
    assert len(origins) == ForecastSettings().validation_windows
    assert all(VAL_START <= o and o + pd.Timedelta(hours=23) <= history[TIMESTAMP].max() for o in origins)
    labels = [c["label"] for c in selection["candidates"]]
    assert len(labels) == len(CANDIDATE_GRID) == len(set(labels))
    assert all(set(c["val_mae"]) == set(SENSORS) and c["score"] > 0 for c in selection["candidates"])
    assert selection["chosen"] == ForecastSettings(**trained.settings).label()


def test_chosen_setting_is_the_best_on_validation_when_recomputed(trained, data, tmp_path):
    """Recompute every candidate's validation score through the public API: a model with that candidate's
    settings fixed, refitted on the rows before each validation origin (forecast(recent))."""
    history, _ = data
    selection = trained.selection
    origins = [pd.Timestamp(o) for o in selection["origins"]]
    train_part = history[history[TIMESTAMP] < VAL_START]
    scales = {s: (_hourly(train_part, s) - _hourly(train_part, s).shift(24)).abs().mean() for s in SENSORS}
    recomputed = {}
    for k, candidate in enumerate(selection["candidates"]):
        settings = {**asdict(ForecastSettings()), **candidate["changes"], "validation_windows": 0}
        config = TrainingConfig(extra={f"forecast_{name}": v for name, v in settings.items() if name != "seed"})
        train_sensor_forecasts(history, SENSORS, tmp_path / str(k), config, log=lambda m: None)
        forecaster = load_forecaster(tmp_path / str(k))
        errors = {s: [] for s in SENSORS}
        for origin in origins:
            fc = forecaster.forecast(history[history[TIMESTAMP] < origin])
            for sensor in SENSORS:
                part = fc[fc["sensor"] == sensor]
                actual = _hourly(history, sensor).reindex(part["ds"]).to_numpy()
                errors[sensor].append(np.abs(actual - part["yhat"].to_numpy()))
        mae = {s: np.concatenate(e).mean() for s, e in errors.items()}
        assert mae == pytest.approx(candidate["val_mae"], rel=1e-6)
        recomputed[candidate["label"]] = np.mean([mae[s] / scales[s] for s in SENSORS])
        assert recomputed[candidate["label"]] == pytest.approx(candidate["score"], rel=1e-6)
    assert selection["chosen"] == min(recomputed, key=recomputed.get)


def test_test_data_does_not_change_the_choice(trained, data, evaluation):
    history, test = data
    changed = test.assign(**{s: test[s] * 1.5 + 20 for s in SENSORS})
    other = evaluate_sensor_forecasts(trained, history, changed)
    assert other.metrics["mae"] != evaluation.metrics["mae"]  # the test rows were used ...
    for ev in (evaluation, other):  # ... but not to choose the settings
        assert ev.details["selection"] == json.loads(json.dumps(trained.selection))
        assert ev.details["settings"] == trained.settings


def test_settings_fixed_in_the_config_are_not_varied():
    base = ForecastSettings(history_days=10.0)
    candidates = base.candidates(fixed={"history_days"})
    assert candidates[0] == base
    assert {c.history_days for c in candidates} == {10.0}
    # Grid entries that differ only in the fixed field collapse into one candidate.
    assert [c.label() for c in candidates] == ["10d linear cr0.8", "10d flat cr0.8"]
    assert len(base.candidates()) == len(CANDIDATE_GRID)


def test_val_start_outside_the_history_is_named(data, tmp_path):
    history, _ = data
    with pytest.raises(ValueError, match="val_start 2030-01-01 00:00:00 is not inside the history"):
        train_sensor_forecasts(
            history, SENSORS, tmp_path, TrainingConfig(), log=lambda m: None, val_start=pd.Timestamp("2030-01-01")
        )


# ---------------------------------------------------------------------------------------------- evaluation


def test_backtest_beats_seasonal_naive_with_plausible_coverage(evaluation):
    m = evaluation.metrics
    assert m["n_windows"] == 10
    assert m["mase"] < 1
    assert m["mase"] < evaluation.baseline["mase"]
    assert m["mae"] < evaluation.baseline["mae"]
    assert 0.75 <= m["coverage_95"] <= 1.0
    assert 0.5 <= m["coverage_80"] <= m["coverage_95"]
    for sensor in SENSORS:
        per = evaluation.details["per_sensor"][sensor]
        assert per["n_points"] == 10 * 24
        assert per["mase"] == pytest.approx(per["mae"] / per["mase_scale"])
    assert evaluation.baseline_name.startswith("seasonal naive")
    assert evaluation.skipped_reason is None
    assert evaluation.details["selection"]["chosen"] == ForecastSettings(**evaluation.details["settings"]).label()
    for sensor in SENSORS:
        assert "data:image/png;base64," in evaluation.pictures[f"forecast {sensor}"]
    assert "| bearing_temp_C |" in evaluation.pictures["per-sensor backtest metrics"]


def test_backtest_only_uses_data_before_each_origin(trained, data):
    history, test = data
    base = evaluate_sensor_forecasts(trained.path, history, test, n_windows=1)
    origin = pd.Timestamp(base.details["origins"][0])
    window_end = origin + pd.Timedelta(hours=24)
    after = test[TIMESTAMP] >= window_end
    assert after.sum() > 0

    future_changed = test.copy()
    future_changed.loc[after, SENSORS] += 50.0
    same = evaluate_sensor_forecasts(trained.path, history, future_changed, n_windows=1)
    assert _metric_values(same) == _metric_values(base)

    inside = (test[TIMESTAMP] >= origin) & (test[TIMESTAMP] < window_end)
    window_changed = test.copy()
    window_changed.loc[inside, SENSORS] += 5.0
    changed = evaluate_sensor_forecasts(trained.path, history, window_changed, n_windows=1)
    assert changed.metrics["mae"] > base.metrics["mae"]
    assert changed.metrics["coverage_95"] < base.metrics["coverage_95"]


def test_backtest_skips_origins_whose_window_holds_a_repair(trained, data):
    history, test = data
    repair = test[TIMESTAMP].min() + pd.Timedelta(hours=36)
    test = test.assign(**{UNIT_ID: np.where(test[TIMESTAMP] < repair, "L1", "L2")})
    history = history.assign(**{UNIT_ID: "L1"})
    ev = evaluate_sensor_forecasts(trained.path, history, test, n_windows=5)
    origins = [pd.Timestamp(o) for o in ev.details["origins"]]
    assert ev.details["origins_excluded_for_lifecycle_start"] > 0
    assert len(origins) == 5  # the excluded origins are replaced by others: every asked-for window survives
    assert all(not (o - pd.Timedelta(hours=1) < repair < o + pd.Timedelta(hours=24)) for o in origins)


def test_backtest_on_a_test_split_shorter_than_the_horizon_is_skipped(trained, data):
    history, test = data
    ev = evaluate_sensor_forecasts(trained.path, history, test.head(50))
    assert ev.metrics == {}
    assert ev.skipped_reason is not None and "shorter than 24 h" in ev.skipped_reason


def test_backtest_rejects_test_rows_that_do_not_follow_the_history(trained, data):
    history, _ = data
    with pytest.raises(ValueError, match="test rows must come after the history"):
        evaluate_sensor_forecasts(trained.path, history, history.tail(50))


# ---------------------------------------------------------------------------------------------- inputs


def test_forecast_sensors_prefers_critical_sensors():
    assert forecast_sensors(["b", "a"], ["a", "b", "c"]) == ["b", "a"]
    assert forecast_sensors([], ["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="'z'"):
        forecast_sensors(["z"], ["a", "b"])


def test_missing_sensor_column_is_named(data, tmp_path):
    history, _ = data
    with pytest.raises(ValueError, match="pressure_bar"):
        train_sensor_forecasts(history, ["pressure_bar"], tmp_path, NO_SELECTION, log=lambda m: None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"forecast_history_days": 0}, "history_days=0"), ({"forecast_window": 3}, "forecast_window")],
)
def test_bad_forecast_settings_are_named(data, tmp_path: Path, extra, message):
    history, _ = data
    with pytest.raises(ConfigError, match=message):
        train_sensor_forecasts(history, SENSORS, tmp_path, TrainingConfig(extra=extra), log=lambda m: None)
