"""Labels (failure within H, fitted on train, in the data's time unit) and causal per-unit rolling features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pdm_pipeline.core.features import (
    FeatureSpec,
    build_feature_frame,
    compute_features,
    fit_feature_spec,
    in_warmup,
    min_history_rows,
)
from pdm_pipeline.core.labels import LabelDefinition, LabelUnavailable, apply_labels, fit_label_definition
from pdm_pipeline.core.schema import EVAL_ANOMALY, LABEL, RUL, TIMESTAMP, UNIT_ID

SENSORS = ("temperature", "pressure", "motor_vib")
STEP_MINUTES = 10
ROWS_PER_UNIT = 240  # 40 h at 10 min: longer than the 24 h window (144 rows)


def make_frame(n_units: int = 3, rows: int = ROWS_PER_UNIT, seed: int = 0) -> pd.DataFrame:
    """Run-to-failure units sampled every 10 min, sorted by (unit_id, timestamp), with every reserved column."""
    rng = np.random.default_rng(seed)
    parts = []
    for unit in range(n_units):
        t = np.arange(rows)
        parts.append(
            pd.DataFrame(
                {
                    TIMESTAMP: pd.Timestamp("2024-01-01") + pd.to_timedelta(t * STEP_MINUTES + 7 * unit, unit="min"),
                    UNIT_ID: f"unit_{unit}",
                    "temperature": 60 + 0.05 * t + rng.normal(0, 0.5, rows),
                    "pressure": 5 + np.sin(t / 7) + rng.normal(0, 0.1, rows),
                    "motor_vib": 2 + 0.5 * np.sin(2 * np.pi * t / 2.5) * (1 + t / rows) + rng.normal(0, 0.2, rows),
                    RUL: (rows - 1 - t) * STEP_MINUTES / 60.0,
                    LABEL: (t > rows - 30).astype(int),
                    EVAL_ANOMALY: (t % 50 == 0).astype(int),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def spec(frame: pd.DataFrame) -> FeatureSpec:
    return fit_feature_spec(frame, SENSORS)


@pytest.fixture(scope="module")
def features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    return compute_features(frame, spec)


# ---------------------------------------------------------------- features: spec


def test_spec_windows_in_samples_step_in_the_data_unit_and_readable_names(spec: FeatureSpec) -> None:
    assert spec.time_unit == "hours" and spec.step == pytest.approx(STEP_MINUTES / 60)
    assert spec.windows == (6, 36, 60)  # 144 capped at a quarter of the 240-row units
    assert spec.window_durations() == pytest.approx([1.0, 6.0, 10.0])
    assert spec.vibration_sensors == ("motor_vib",)
    assert min_history_rows(spec) == 60
    names = set(spec.feature_names)
    assert {"temperature", "temperature__mean_w36", "pressure__slope_w60", "motor_vib__rms_w6"} <= names
    assert {"motor_vib__band_low_w60", "motor_vib__band_mid_w60", "motor_vib__band_high_w60"} <= names
    assert not any("band" in n for n in names if not n.startswith("motor_vib"))
    assert len(names) == len(spec.feature_names) == 3 * (1 + 3 * 7) + 3


def test_no_feature_name_mentions_reserved_columns(spec: FeatureSpec) -> None:
    for name in spec.feature_names:
        for reserved in ("timestamp", "rul", "failure", "anomaly", "unit", "hour_of", "time"):
            assert reserved not in name.lower(), name


def test_window_samples_can_be_set_and_must_be_at_least_two(frame: pd.DataFrame) -> None:
    spec = fit_feature_spec(frame, ["temperature"], window_samples=(12, 3, 12))
    assert spec.windows == (3, 12)
    assert "temperature__mean_w3" in spec.feature_names and "temperature__std_w12" in spec.feature_names
    with pytest.raises(ValueError, match="window_samples"):
        fit_feature_spec(frame, ["temperature"], window_samples=(1, 6))


@pytest.mark.parametrize(
    ("unit", "step", "rows_per_unit", "expected"),
    [("seconds", 1, 1000, (6, 36, 144)), ("cycles", 1, 200, (6, 36, 50)), ("hours", 1, 40, (6, 12))],
)
def test_default_windows_follow_the_data_not_the_clock(unit: str, step: int, rows_per_unit: int, expected: tuple) -> None:
    """Per-second, per-cycle and hourly data all get real windows (in samples), capped by the unit length."""
    frames = []
    for u in range(3):
        t = np.arange(rows_per_unit) * step
        stamp = t if unit == "cycles" else pd.Timestamp("2024-01-01") + pd.to_timedelta(t, unit="s" if unit == "seconds" else "h")
        frames.append(pd.DataFrame({TIMESTAMP: stamp, UNIT_ID: f"u{u}", "temperature": np.sin(t / 5.0) + u}))
    data = pd.concat(frames, ignore_index=True)
    spec = fit_feature_spec(data, ["temperature"], time_unit=unit)
    assert spec.windows == expected
    assert spec.step == pytest.approx(step)
    features = compute_features(data, spec)
    assert features.notna().all().all()


def test_cycle_axis_rejects_datetimes_and_clock_axis_rejects_counters(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="needs a number"):
        fit_feature_spec(frame, SENSORS, time_unit="cycles")
    counters = frame.assign(**{TIMESTAMP: np.arange(len(frame))})
    with pytest.raises(ValueError, match="needs datetimes"):
        fit_feature_spec(counters, SENSORS, time_unit="hours")


def test_spec_json_round_trip_and_tamper_check(frame: pd.DataFrame, spec: FeatureSpec, features: pd.DataFrame) -> None:
    restored = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec
    pd.testing.assert_frame_equal(compute_features(frame, restored), features)
    tampered = spec.to_dict()
    tampered["windows"] = [6, 36, 100]
    with pytest.raises(ValueError, match="inconsistent"):
        FeatureSpec.from_dict(tampered)


# ---------------------------------------------------------------- features: leakage and causality


def test_features_ignore_rul_label_anomaly_and_timestamp_values(
    frame: pd.DataFrame, spec: FeatureSpec, features: pd.DataFrame
) -> None:
    rng = np.random.default_rng(1)
    changed = frame.copy()
    changed[RUL] = rng.uniform(0, 1000, len(frame))
    changed[LABEL] = 1 - changed[LABEL]
    changed[EVAL_ANOMALY] = 1
    # New timestamps, same order within each unit: irregular gaps and another start date.
    gaps = pd.to_timedelta(rng.integers(1, 500, len(frame)).cumsum(), unit="s")
    changed[TIMESTAMP] = pd.Timestamp("2031-06-15 13:00") + gaps
    pd.testing.assert_frame_equal(compute_features(changed, spec), features)
    # Without any of these columns (what a prediction buffer holds): the same values.
    sensors_only = frame[list(SENSORS) + [UNIT_ID]]
    pd.testing.assert_frame_equal(compute_features(sensors_only, spec), features)


def test_changing_future_rows_never_changes_earlier_features(
    frame: pd.DataFrame, spec: FeatureSpec, features: pd.DataFrame
) -> None:
    cut = 100  # inside unit_0
    changed = frame.copy()
    future = changed.index > cut
    rng = np.random.default_rng(2)
    for sensor in SENSORS:
        changed.loc[future, sensor] = rng.normal(500, 100, future.sum())
    after = compute_features(changed, spec)
    pd.testing.assert_frame_equal(after.loc[:cut], features.loc[:cut])
    assert not np.allclose(after.loc[cut + 1 :].to_numpy(), features.loc[cut + 1 :].to_numpy())


def test_units_do_not_leak_into_each_other(frame: pd.DataFrame, spec: FeatureSpec, features: pd.DataFrame) -> None:
    changed = frame.copy()
    unit_1 = changed[UNIT_ID] == "unit_1"
    for sensor in SENSORS:
        changed.loc[unit_1, sensor] *= -3.0
    after = compute_features(changed, spec)
    pd.testing.assert_frame_equal(after[~unit_1], features[~unit_1])
    # unit_2 alone gives the values it gets after unit_1's last row in the full frame.
    unit_2 = frame[UNIT_ID] == "unit_2"
    alone = compute_features(frame[unit_2], spec)
    np.testing.assert_allclose(alone.to_numpy(), features[unit_2].to_numpy(), rtol=1e-6, atol=1e-6)
    # The first row of a unit only sees itself: zero spread, zero slope.
    first = features.loc[frame.index[unit_2][0]]
    assert first["temperature__std_w60"] == 0 and first["temperature__slope_w6"] == 0
    assert first["temperature__mean_w60"] == pytest.approx(frame.loc[unit_2, "temperature"].iloc[0], rel=1e-6)


def test_a_window_never_reaches_across_a_gap_longer_than_itself(spec: FeatureSpec) -> None:
    """Rows after an outage longer than the longest window get the features of a unit starting there; after a gap
    of 10 rows (100 min) only the 6-row window restarts, the 36- and 60-row windows still reach back."""
    unit = make_frame(n_units=1)
    after = unit.index >= 120
    for gap_rows, restarted, reaching in ((121, ("w6", "w36", "w60"), ()), (10, ("w6",), ("w36", "w60"))):
        gapped = unit.copy()
        gapped.loc[after, TIMESTAMP] += pd.Timedelta(minutes=STEP_MINUTES * (gap_rows - 1))
        features = compute_features(gapped, spec)
        alone = compute_features(gapped[after], spec)
        for window in restarted:
            names = [n for n in spec.feature_names if n.endswith(f"_{window}")]
            np.testing.assert_allclose(features.loc[after, names].to_numpy(), alone[names].to_numpy(), atol=1e-5)
        for window in reaching:
            names = [n for n in spec.feature_names if n.endswith(f"_{window}")]
            assert not np.allclose(features.loc[after, names].to_numpy(), alone[names].to_numpy(), atol=1e-5)
        # the rows whose restarted windows are not full yet are in warm-up, as at a unit's start
        warm = np.flatnonzero(in_warmup(gapped, spec))
        longest = max(spec.windows) if len(restarted) == 3 else 6
        assert list(warm) == [*range(max(spec.windows) - 1), *range(120, 120 + longest - 1)]
    # without the gap, nothing restarts: the check above is not vacuous
    regular = compute_features(unit, spec)
    names = [n for n in spec.feature_names if n.endswith("_w6")]
    assert not np.allclose(regular.loc[after, names].to_numpy()[:3], compute_features(unit[after], spec)[names].to_numpy()[:3])


def test_interleaved_units_give_the_same_features_per_row(
    frame: pd.DataFrame, spec: FeatureSpec, features: pd.DataFrame
) -> None:
    interleaved = frame.sort_values([TIMESTAMP, UNIT_ID], kind="stable")
    assert not interleaved.index.equals(frame.index)
    pd.testing.assert_frame_equal(compute_features(interleaved, spec).loc[frame.index], features)


def test_prediction_tail_with_enough_history_matches_training_features(
    frame: pd.DataFrame, spec: FeatureSpec, features: pd.DataFrame
) -> None:
    history = min_history_rows(spec)
    tail = frame.groupby(UNIT_ID).tail(history + 20)[list(SENSORS) + [UNIT_ID, TIMESTAMP]]
    tail_features = compute_features(tail, spec)
    position = tail.groupby(UNIT_ID).cumcount()
    full_history = tail.index[position >= history - 1]
    assert len(full_history) == 3 * 21
    np.testing.assert_allclose(
        tail_features.loc[full_history].to_numpy(), features.loc[full_history].to_numpy(), rtol=1e-5, atol=1e-5
    )
    # With less history than needed the values differ: the check above is not vacuous.
    short = tail.index[position == history - 10]
    assert not np.allclose(tail_features.loc[short].to_numpy(), features.loc[short].to_numpy(), rtol=1e-5)


# ---------------------------------------------------------------- features: values


def test_window_statistics_match_numpy(frame: pd.DataFrame, features: pd.DataFrame) -> None:
    row = 200  # unit_0, full window of 36 rows
    window = frame["temperature"].to_numpy()[row - 35 : row + 1]
    got = features.loc[row]
    assert got["temperature"] == pytest.approx(frame.loc[row, "temperature"], rel=1e-6)
    assert got["temperature__mean_w36"] == pytest.approx(window.mean(), rel=1e-6)
    assert got["temperature__std_w36"] == pytest.approx(window.std(), rel=1e-5)
    assert got["temperature__min_w36"] == pytest.approx(window.min(), rel=1e-6)
    assert got["temperature__max_w36"] == pytest.approx(window.max(), rel=1e-6)
    assert got["temperature__rms_w36"] == pytest.approx(np.sqrt(np.mean(window**2)), rel=1e-6)
    assert got["temperature__peak_w36"] == pytest.approx(np.abs(window - window.mean()).max(), rel=1e-5)
    assert got["temperature__slope_w36"] == pytest.approx(np.polyfit(np.arange(36), window, 1)[0], rel=1e-4)
    # A unit's third row: windows hold only that unit's first three rows.
    start = frame.index[frame[UNIT_ID] == "unit_1"][0]
    first_three = frame["pressure"].to_numpy()[start : start + 3]
    assert features.loc[start + 2, "pressure__mean_w60"] == pytest.approx(first_three.mean(), rel=1e-6)
    assert features.loc[start + 2, "pressure__slope_w36"] == pytest.approx(
        np.polyfit(np.arange(3), first_three, 1)[0], rel=1e-4
    )


def test_missing_readings_are_skipped_by_window_statistics(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    gappy = frame.copy()
    gappy.loc[50, "temperature"] = np.nan
    got = compute_features(gappy, spec)
    window = gappy["temperature"].to_numpy()[51 - 5 : 52]  # the 1 h window (6 rows) ending at row 51
    assert np.isnan(got.loc[50, "temperature"])
    assert got.loc[51, "temperature__mean_w6"] == pytest.approx(np.nanmean(window), rel=1e-6)
    kept = ~np.isnan(window)
    assert got.loc[51, "temperature__slope_w6"] == pytest.approx(
        np.polyfit(np.arange(6)[kept], window[kept], 1)[0], rel=1e-4
    )


def _single_unit(vibration: np.ndarray) -> pd.DataFrame:
    t = np.arange(len(vibration))
    return pd.DataFrame(
        {TIMESTAMP: pd.Timestamp("2024-01-01") + pd.to_timedelta(t * STEP_MINUTES, unit="min"), "motor_vib": vibration}
    )


def test_band_energies_follow_frequency_and_add_up_to_variance() -> None:
    t = np.arange(300)
    slow = _single_unit(np.sin(2 * np.pi * t / 36))
    fast = _single_unit(np.sin(2 * np.pi * t / 2.5))
    spec = fit_feature_spec(slow, ["motor_vib"], window_samples=(6, 72))  # 72-row window: one point per row
    bands = ["motor_vib__band_low_w72", "motor_vib__band_mid_w72", "motor_vib__band_high_w72"]
    slow_bands = compute_features(slow, spec).loc[250, bands].to_numpy(dtype=float)
    fast_bands = compute_features(fast, spec).loc[250, bands].to_numpy(dtype=float)
    assert slow_bands[0] > 0.9 * slow_bands.sum()
    assert fast_bands[2] > 0.9 * fast_bands.sum()
    for frame_, energies in ((slow, slow_bands), (fast, fast_bands)):
        window = frame_["motor_vib"].to_numpy()[250 - 71 : 251]
        assert energies.sum() == pytest.approx(window.var(), rel=1e-5)


def test_band_energies_of_long_windows_use_block_means() -> None:
    rng = np.random.default_rng(3)
    frame = _single_unit(rng.normal(size=400))
    spec = fit_feature_spec(frame, ["motor_vib"], window_samples=(6, 144))  # 144 rows -> 72 means of 2 rows
    got = compute_features(frame, spec).loc[399, ["motor_vib__band_low_w144", "motor_vib__band_mid_w144",
                                                   "motor_vib__band_high_w144"]]
    blocks = frame["motor_vib"].to_numpy()[400 - 144 :].reshape(72, 2).mean(axis=1)
    assert float(got.sum()) == pytest.approx(blocks.var(), rel=1e-5)
    assert compute_features(frame, spec).loc[0, "motor_vib__band_high_w144"] == 0


# ---------------------------------------------------------------- features: other shapes and bad input


def test_without_time_order_raw_values_and_pairwise_interactions() -> None:
    rng = np.random.default_rng(4)
    tabular = pd.DataFrame({"torque": rng.normal(40, 5, 50), "tool_vib": rng.normal(size=50),
                            "speed": rng.normal(1500, 100, 50), LABEL: 0})
    sensors = ["torque", "tool_vib", "speed"]
    spec = fit_feature_spec(tabular, sensors, time_order=False)
    assert spec.step is None and spec.windows == () and spec.interactions
    assert spec.feature_names[:3] == tuple(sensors) and len(spec.feature_names) == 3 + 2 * 3
    got = compute_features(tabular, spec)
    assert (got.dtypes == np.float32).all()
    np.testing.assert_allclose(got[sensors].to_numpy(), tabular[sensors].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(got["torque__times__speed"], tabular["torque"] * tabular["speed"], rtol=1e-6)
    np.testing.assert_allclose(got["torque__minus__tool_vib"], tabular["torque"] - tabular["tool_vib"], rtol=1e-5)
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    many = [f"s{i}" for i in range(13)]  # past MAX_INTERACTION_SENSORS: raw values only
    wide = pd.DataFrame(rng.normal(size=(20, 13)), columns=many)
    assert fit_feature_spec(wide, many, time_order=False).feature_names == tuple(many)


def test_differences_equal_at_the_datas_precision_are_one_feature_value() -> None:
    """Readings given to 0.1 K whose difference is the same decimal number get the same feature value. In float64
    309.4 - 300.8 = 8.599999999999966 and 310.8 - 302.2 = 8.600000000000023: AI4I's generator decided its heat
    failures on exactly that rounding (12 failed, 15 did not at a published 8.6 K; core/bench_real.py), and a
    model fed float64 differences would learn the rounding error instead of the measurements."""
    rows = pd.DataFrame({"air": [300.8, 302.2, 302.3, 303.7], "process": [309.4, 310.8, 310.9, 312.3], LABEL: 0})
    assert len(set((rows["process"] - rows["air"]).tolist())) == 2  # the float64 rounding parts them
    spec = fit_feature_spec(rows, ["air", "process"], time_order=False)
    got = compute_features(rows, spec)["air__minus__process"]
    assert got.nunique() == 1 and got.iloc[0] == pytest.approx(-8.6, abs=1e-5)


def test_build_feature_frame_passes_through_reserved_columns(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    built = build_feature_frame(frame, spec)
    assert list(built.columns) == list(spec.feature_names) + [TIMESTAMP, UNIT_ID, RUL, LABEL, EVAL_ANOMALY]
    pd.testing.assert_series_equal(built[RUL], frame[RUL])
    assert built.index.equals(frame.index)
    assert (built[list(spec.feature_names)].dtypes == np.float32).all()


def test_bad_feature_input_is_named(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    with pytest.raises(ValueError, match="pressure"):
        compute_features(frame.drop(columns=["pressure"]), spec)
    with pytest.raises(ValueError, match="reserved"):
        fit_feature_spec(frame, ["temperature", RUL])
    with pytest.raises(ValueError, match="timestamp"):
        fit_feature_spec(frame.drop(columns=[TIMESTAMP]), SENSORS)
    with pytest.raises(ValueError, match="sort rows"):
        compute_features(frame.iloc[::-1], spec)
    text = frame.assign(temperature=frame["temperature"].astype(str))
    with pytest.raises(ValueError, match="temperature.*not numeric"):
        compute_features(text, spec)


# ---------------------------------------------------------------- labels


def test_rul_horizon_chosen_on_train_lands_in_band(frame: pd.DataFrame) -> None:
    definition = fit_label_definition(frame.drop(columns=[LABEL]), horizon=None)
    assert definition.method == "rul"
    assert definition.horizon_source == "chosen on train for target band [0.1, 0.2]"
    assert definition.horizon % 0.5 == 0
    assert 0.10 <= definition.train_positive_rate <= 0.20
    assert definition.train_positive_rate == pytest.approx(np.mean(frame[RUL] <= definition.horizon))
    # A skewed, continuous RUL distribution too.
    rng = np.random.default_rng(5)
    skewed = pd.DataFrame({RUL: rng.exponential(200.0, 5000), "temperature": 0.0})
    other = fit_label_definition(skewed, horizon=None, target_positive_rate=(0.05, 0.08))
    assert 0.05 <= other.train_positive_rate <= 0.08


def test_test_labels_use_the_train_horizon_only(frame: pd.DataFrame) -> None:
    train = frame.drop(columns=[LABEL])
    definition = fit_label_definition(train, horizon=None)
    for scale in (1.0, 0.1, 10.0):  # test splits with very different RUL distributions
        test = make_frame(n_units=2, seed=9).drop(columns=[LABEL])
        test[RUL] *= scale
        labels = apply_labels(test, definition)
        assert labels.name == LABEL and labels.dtype == np.int8 and labels.index.equals(test.index)
        np.testing.assert_array_equal(labels.to_numpy(), (test[RUL] <= definition.horizon).to_numpy())
    assert apply_labels(test, definition).mean() < 0.05  # scale 10: far outside the band, nothing refitted
    assert fit_label_definition(train, horizon=None) == definition


def test_configured_horizon_is_used_as_is(frame: pd.DataFrame) -> None:
    definition = fit_label_definition(frame.drop(columns=[LABEL]), horizon=3.25)
    assert (definition.method, definition.horizon, definition.horizon_source) == ("rul", 3.25, "config")
    assert definition.time_unit == "hours" and "3.25 h" in definition.describe()
    assert definition.train_positive_rate == pytest.approx(np.mean(frame[RUL] <= 3.25))


def test_unreachable_band_takes_the_closest_rate_and_says_so() -> None:
    train = pd.DataFrame({RUL: [0.0] * 50 + [100.0] * 40 + [200.0] * 10, "x": 1.0})
    definition = fit_label_definition(train, horizon=None)
    assert definition.horizon == 0.0
    assert definition.train_positive_rate == 0.5
    assert "not reachable" in definition.horizon_source


def test_given_label_is_kept_on_every_split(frame: pd.DataFrame) -> None:
    definition = fit_label_definition(frame, horizon=5.0)  # label present: rul and H are not used
    assert (definition.method, definition.horizon, definition.horizon_source) == ("given", None, "given label")
    assert definition.train_positive_rate == pytest.approx(frame[LABEL].mean())
    val = make_frame(n_units=1, seed=3)
    val[LABEL] = np.arange(len(val)) % 2
    np.testing.assert_array_equal(apply_labels(val, definition).to_numpy(), val[LABEL].to_numpy())
    with pytest.raises(ValueError, match="machine m1, val split: column 'failure_status' is missing"):
        apply_labels(val.drop(columns=[LABEL]), definition, where="machine m1, val split")
    with pytest.raises(ValueError, match="only 0 and 1"):
        fit_label_definition(frame.assign(**{LABEL: 2}), horizon=None)


def _alarm_frame(seed: int, rows: int = 300) -> pd.DataFrame:
    """Two units with irregular sampling, temperature spikes (high alarm) and pressure dips (low alarm)."""
    rng = np.random.default_rng(seed)
    parts = []
    for unit in range(2):
        minutes = np.cumsum(rng.integers(5, 20, rows))
        temperature = rng.normal(60, 3, rows)
        temperature[rng.random(rows) < 0.02] = 90
        pressure = rng.normal(5, 0.3, rows)
        pressure[rng.random(rows) < 0.01] = 0.5
        parts.append(
            pd.DataFrame(
                {
                    TIMESTAMP: pd.Timestamp("2024-03-01") + pd.to_timedelta(minutes, unit="min"),
                    UNIT_ID: unit,
                    "temperature": temperature,
                    "pressure": pressure,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    frame.loc[300, "temperature"] = 95  # first row of unit 1 crosses: must not label unit 0's last rows
    frame.loc[299, "temperature"] = 60
    return frame


ALARMS = {"temperature": {"level": 80.0, "direction": "high"}, "pressure": {"level": 1.0, "direction": "low"}}


def _brute_force_alarm_labels(frame: pd.DataFrame, hours: float) -> np.ndarray:
    crossing = (frame["temperature"] >= 80) | (frame["pressure"] <= 1.0)
    out = np.zeros(len(frame), dtype=int)
    for i in range(len(frame)):
        t, unit = frame[TIMESTAMP].iloc[i], frame[UNIT_ID].iloc[i]
        ahead = (frame[UNIT_ID] == unit) & (frame[TIMESTAMP] >= t) & (frame[TIMESTAMP] <= t + pd.Timedelta(hours=hours))
        out[i] = int((ahead & crossing).any())
    return out


def test_alarm_label_is_one_iff_a_crossing_follows_within_h_in_the_same_unit() -> None:
    train = _alarm_frame(seed=6)
    definition = fit_label_definition(train, horizon=2.0, alarm_levels=ALARMS)
    assert definition.method == "alarm" and definition.horizon == 2.0
    assert definition.alarm_levels == ALARMS
    labels = apply_labels(train, definition).to_numpy()
    np.testing.assert_array_equal(labels, _brute_force_alarm_labels(train, 2.0))
    assert labels[299] == 0 and labels[300] == 1
    test = _alarm_frame(seed=7)
    np.testing.assert_array_equal(apply_labels(test, definition).to_numpy(), _brute_force_alarm_labels(test, 2.0))


def test_alarm_horizon_chosen_on_train_lands_in_band() -> None:
    definition = fit_label_definition(_alarm_frame(seed=8), horizon=None, alarm_levels=ALARMS)
    assert definition.method == "alarm" and definition.horizon % 0.5 == 0
    assert 0.10 <= definition.train_positive_rate <= 0.20


def test_no_rul_and_no_alarm_levels_is_a_clear_skip_reason(frame: pd.DataFrame) -> None:
    no_label = frame.drop(columns=[RUL, LABEL])
    with pytest.raises(LabelUnavailable) as raised:
        fit_label_definition(no_label, horizon=None, where="machine pump_07")
    message = str(raised.value)
    assert message.startswith("machine pump_07: RUL column 'rul' not found in data")
    assert "alarm levels" in message and "cannot define failure_status" in message
    with pytest.raises(LabelUnavailable, match="timestamp"):
        fit_label_definition(no_label.drop(columns=[TIMESTAMP]), horizon=None, alarm_levels=ALARMS)
    with pytest.raises(LabelUnavailable, match="no critical sensor reaches its alarm level"):
        unreachable = {"temperature": {"level": 1e6, "direction": "high"}}
        fit_label_definition(no_label, horizon=None, alarm_levels=unreachable)


def test_a_constant_train_label_is_unavailable(frame: pd.DataFrame) -> None:
    far_from_failure = frame.drop(columns=[LABEL]).assign(**{RUL: frame[RUL] + 100})
    with pytest.raises(LabelUnavailable, match="failure_status would be 0 on every train row"):
        fit_label_definition(far_from_failure, horizon=2.0)


def test_label_definition_round_trip(frame: pd.DataFrame) -> None:
    for definition in (
        fit_label_definition(frame.drop(columns=[LABEL]), horizon=None),
        fit_label_definition(_alarm_frame(seed=6), horizon=1.5, alarm_levels=ALARMS),
        fit_label_definition(frame, horizon=None),
    ):
        assert LabelDefinition.from_dict(json.loads(json.dumps(definition.to_dict()))) == definition
    with pytest.raises(ValueError, match="unknown method"):
        LabelDefinition.from_dict({**definition.to_dict(), "method": "magic"})


# ---------------------------------------------------------------- one continuous history per unit


def test_val_and_test_features_continue_each_units_history() -> None:
    """Splits of one unit are one history: the first val rows see the last train rows, exactly as a prediction
    over the unit's recent rows would (no restart of the windows at a split boundary)."""
    from pdm_pipeline.core.features import continuous_features

    full = make_frame(n_units=2, rows=300)
    per_unit = full.groupby(UNIT_ID, sort=False).cumcount()
    splits = {
        "train": full[per_unit < 200],
        "val": full[(per_unit >= 200) & (per_unit < 250)],
        "test": full[per_unit >= 250],
    }
    spec = fit_feature_spec(splits["train"], SENSORS)
    frames = continuous_features(splits, spec)
    whole = compute_features(full, spec)
    for split, df in splits.items():
        assert frames[split].index.equals(df.index)
        np.testing.assert_allclose(frames[split][list(spec.feature_names)].to_numpy(),
                                   whole.loc[df.index].to_numpy(), rtol=1e-6)
    # The split-alone computation differs at the start of val: the check above is not vacuous.
    alone = compute_features(splits["val"], spec)
    first_val = splits["val"].index[0]
    assert alone.loc[first_val, "temperature__std_w36"] == 0
    assert frames["val"].loc[first_val, "temperature__std_w36"] > 0
    # Out of time order across splits (val earlier than train within a unit) is refused.
    with pytest.raises(ValueError, match="earlier than the previous row"):
        continuous_features({"train": splits["val"], "val": splits["train"], "test": splits["test"]}, spec)


def test_alarm_labels_and_horizons_on_a_cycle_axis() -> None:
    """Cycle data: H and rul are counted in cycles, every message names the unit."""
    frame = pd.DataFrame({
        TIMESTAMP: np.tile(np.arange(1, 101), 2),
        UNIT_ID: np.repeat(["e1", "e2"], 100),
        RUL: np.tile(np.arange(99, -1, -1), 2).astype(float),
        "temperature": 1.0,
    })
    definition = fit_label_definition(frame, horizon=None, time_unit="cycles")
    assert definition.time_unit == "cycles" and float(definition.horizon).is_integer()
    assert "cycles" in definition.describe()
    assert 0.10 <= definition.train_positive_rate <= 0.20
    alarms = {"temperature": {"level": 5.0, "direction": "high"}}
    spiky = frame.drop(columns=[RUL]).assign(temperature=np.where(frame[TIMESTAMP] % 40 == 0, 9.0, 1.0))
    alarm = fit_label_definition(spiky, horizon=3.0, alarm_levels=alarms, time_unit="cycles")
    labels = apply_labels(spiky, alarm).to_numpy()
    cycles = spiky[TIMESTAMP].to_numpy()
    expected = ((cycles % 40 >= 37) | (cycles % 40 == 0)) & (cycles <= 80)
    np.testing.assert_array_equal(labels, expected.astype(int))


@pytest.mark.slow
def test_alarm_labels_report_the_in_alarm_now_rule_and_the_skill_before_the_alarm(tiny_fleet_root, tmp_path):
    """Labels from alarm levels are 1 at every row already in alarm, which the classifier reads from its inputs:
    the audit found 28 % of test positives there, and nothing said the trivial rule "in alarm now" scored F1 0.44
    at precision 1. The evaluation now gives that rule's figures and the model's on the rows not in alarm yet."""
    import shutil

    from sklearn.metrics import f1_score

    from pdm_pipeline import families
    from pdm_pipeline.core import keys
    from pdm_pipeline.core.config import TrainingConfig
    from pdm_pipeline.core.contract import load_machine
    from pdm_pipeline.core.labels import in_alarm
    from pdm_pipeline.core.pipeline import evaluate_model, prepare_features, prepare_labels, train_model

    machine, root = "motor_001", tmp_path / "data"
    (root / "metadata").mkdir(parents=True)
    for name in (f"{machine}_metadata.json", f"{machine}_profile.json"):
        shutil.copy2(tiny_fleet_root / "metadata" / name, root / "metadata" / name)
    metadata = json.loads((root / "metadata" / f"{machine}_metadata.json").read_text())
    metadata["columns"].pop(RUL, None)
    (root / "metadata" / f"{machine}_metadata.json").write_text(json.dumps(metadata))
    (root / "synthetic" / machine).mkdir(parents=True)
    for split in ("train", "val", "test"):
        frame = pd.read_parquet(tiny_fleet_root / "synthetic" / machine / f"{split}.parquet").drop(columns=[RUL])
        frame.to_parquet(root / "synthetic" / machine / f"{split}.parquet", index=False)
    config = TrainingConfig(time_limit_s=5).validate()
    data = load_machine(root, machine)
    labels = prepare_labels(data, config)
    assert labels.definition is not None and labels.definition.method == "alarm"
    features = prepare_features(data, labels, config)
    trained = train_model(families.get("classification"), data, labels, features, root / "model", config,
                          keys.signing_key(root))
    evaluation = evaluate_model(trained, data, features, keys.local_trust(root))
    rule = evaluation.details["alarm_now_rule"]
    truth = labels.labels["test"].to_numpy()
    now = in_alarm(data.splits["test"], labels.definition.alarm_levels)
    assert rule["rows_in_alarm"] == int(now.sum()) > 0 and rule["failing_rows_in_alarm"] == int(now.sum())
    assert rule["precision"] == 1.0  # every row in alarm is labelled failing
    assert rule["f1"] == pytest.approx(f1_score(truth, now.astype(int)))
    assert 0.0 <= evaluation.metrics["recall_before_alarm"] <= 1.0 and "f1_before_alarm" in evaluation.metrics
