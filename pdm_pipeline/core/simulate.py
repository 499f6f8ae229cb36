"""Deterministic, physics-inspired sample data: run-to-failure sensor histories for a fleet of machines.

Each machine runs through several lifecycles, one after the other in time, each ending in a failure and a
short repair gap; lifecycle lengths vary by about +-30 %. Within a lifecycle a latent wear state stays 0 while
the machine is healthy and grows to 1 at failure over a degradation interval of about half a mean lifecycle
(the P-F interval, varying from lifecycle to lifecycle), linearly or accelerating depending on the machine
type. Every sensor reading is

    typical + unit offset + load effect + ambient effect + wear effect + AR(1) drift + white noise

where the load (seen through a thermal lag by temperatures) follows a daily cycle (lower at weekends) around
operating set points that change every few days, the ambient temperature follows a daily and a seasonal
cycle, and the wear effect is largest for the critical sensors, weak for some and absent for the
distractors; its size differs from lifecycle to lifecycle.
Rare glitches (single-row spikes, short stretches where a sensor is stuck) are added, values are rounded to a
plausible reading resolution and kept within the profile's min..max.

Splits hold whole lifecycles in time order: train the earliest, then val, then test. The written layout (see
contract.py) is ``synthetic/<id>/{train,val,test}.parquet`` plus ``metadata/<id>_metadata.json`` (SDV
single-table metadata with ``rul_parameters``) and ``metadata/<id>_profile.json`` (per-sensor limits).
The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from pdm_pipeline.core.paths import metadata_path, profile_path, split_path, validate_machine_id
from pdm_pipeline.core.schema import RUL, SPLITS, TIMESTAMP, UNIT_ID
from pdm_pipeline.errors import PdmError


class SimulationSettingsError(PdmError, ValueError):
    """Simulation arguments that cannot make a machine (count, seed, rows, type); the message names the argument."""

DEFAULT_ROWS: tuple[int, int, int] = (35_000, 7_500, 7_500)

# Lifecycle layout: every lifecycle lasts at least this long, every split holds at least this many of them,
# train aims at this many (when its rows allow), and lengths vary by about this share around their mean.
MIN_LIFECYCLE_HOURS = 48.0
MIN_LIFECYCLES_PER_SPLIT = 2
TRAIN_LIFECYCLES = (8, 12)
LENGTH_SPREAD = 0.3
# Repair between two lifecycles, in hours.
REPAIR_HOURS = (4.0, 36.0)
START = pd.Timestamp("2024-01-01 00:00:00")

# Degradation (the P-F interval): wear starts about DEGRADATION_SHARE of a mean lifecycle before failure
# (varying by DEGRADATION_SPREAD, and never before MAX_DEGRADATION_SHARE of the lifecycle's own length), stays 0
# before, and grows to 1 at failure, linearly or exponentially with a rate drawn per lifecycle.
DEGRADATION_SHARE = 0.5
DEGRADATION_SPREAD = 0.15
MAX_DEGRADATION_SHARE = 0.85
EXPONENTIAL_RATE = (3.0, 4.0)
# Per lifecycle and sensor: wear response factor and a fixed offset (share of the typical-to-alarm distance).
SENSITIVITY = (0.8, 1.2)
UNIT_OFFSET_SHARE = 0.06
# Damage shows more under load: the wear effect is scaled by (1 + coupling * load deviation).
WEAR_LOAD_COUPLING = 0.5

# Load: relative to nominal (1.0). Daily amplitude, peak hour, weekend factor, set points and their duration.
DAILY_AMPLITUDE = (0.12, 0.22)
PEAK_HOUR = (11.0, 16.0)
WEEKEND_FACTOR = (0.7, 0.85)
SET_POINT = (0.85, 1.15)
SET_POINT_MEAN_DAYS = 4.0
LOAD_NOISE = 0.03
# Ambient temperature in C: mean, seasonal and daily amplitude, noise.
AMBIENT_MEAN_C = 20.0
AMBIENT_SEASONAL_C = 4.0
AMBIENT_DAILY_C = 3.0
AMBIENT_NOISE_C = 0.4

# Correlation time of the AR(1) drift noise (the same in hours whatever the sampling step).
AR_TIME_CONSTANT_HOURS = 3.0
# Glitches per sensor: expected spikes and stuck stretches per row, spike size in units of the sensor's total
# noise, stuck rows; runs of missing values when asked for.
SPIKE_RATE = 1 / 4000
SPIKE_SIZE = (5.0, 10.0)
STUCK_RATE = 1 / 10000
STUCK_ROWS = (6, 36)
MISSING_RUN_ROWS = (1, 12)


@dataclass(frozen=True)
class SensorSpec:
    """One sensor of a machine type: its limits and how it responds to load, ambient and wear.

    `typical` is the healthy value at nominal load and 20 C ambient. `wear` is the shift at failure as a
    multiple of the typical-to-alarm distance (> 1: the alarm is crossed before failure, critical; small: weak
    response; 0: distractor). `load` is the shift per unit of load above nominal, reached after a first-order
    lag of `lag_hours` (thermal inertia), `ambient` the shift per C above 20, `noise` the standard deviation
    of the slow AR(1) drift and `white` that of the reading noise, all in sensor units.
    """

    name: str
    unit: str
    typical: float
    alarm: float
    trip: float
    min: float
    max: float
    wear: float
    load: float
    noise: float
    white: float
    ambient: float = 0.0
    lag_hours: float = 0.0

    @property
    def direction(self) -> str:
        """"high" when wear raises the sensor (alarm above typical), "low" when it lowers it."""
        return "high" if self.alarm > self.typical else "low"

    @property
    def total_noise(self) -> float:
        """Standard deviation of drift and reading noise together."""
        return math.hypot(self.noise, self.white)

    @property
    def resolution(self) -> float:
        """Reading resolution: a power of ten about a tenth of the total noise."""
        return 10.0 ** math.floor(math.log10(self.total_noise / 10))


@dataclass(frozen=True)
class MachineTypeSpec:
    """A machine type: its sampling step, degradation profile and sensors."""

    name: str
    step_minutes: int
    degradation_profile: str
    sensors: tuple[SensorSpec, ...]

    @property
    def critical_sensors(self) -> tuple[str, ...]:
        """The sensors whose wear response crosses the alarm level: the ones that degrade most clearly."""
        return tuple(s.name for s in self.sensors if s.wear >= 1.0)


def _ambient_sensor() -> SensorSpec:
    """The room temperature: follows the ambient, untouched by wear (a distractor)."""
    return SensorSpec("ambient_temp_C", "C", 20.0, 40.0, 45.0, -10.0, 50.0, wear=0.0, load=0.0, noise=0.3, white=0.15, ambient=1.0)


def _vibration(name: str, typical: float, load: float, alarm: float = 7.1, trip: float = 11.2) -> SensorSpec:
    """A critical vibration velocity sensor (ISO 10816-style alarm and trip levels); noisy readings."""
    distance = alarm - typical
    return SensorSpec(name, "mm/s", typical, alarm, trip, 0.0, 25.0, wear=1.3, load=load, noise=0.07 * distance, white=0.15 * distance)


S = SensorSpec
SPECS: dict[str, MachineTypeSpec] = {
    spec.name: spec
    for spec in (
        MachineTypeSpec("motor", 10, "exponential", (
            S("winding_temp_C", "C", 75.0, 105.0, 120.0, 10.0, 160.0, wear=1.25, load=30.0, noise=2.0, white=0.3, ambient=0.8, lag_hours=1.5),
            S("bearing_temp_C", "C", 55.0, 80.0, 95.0, 5.0, 130.0, wear=1.25, load=18.0, noise=1.8, white=0.3, ambient=0.7, lag_hours=2.0),
            _vibration("vibration_mm_s", 2.0, load=0.6),
            S("motor_current_A", "A", 42.0, 55.0, 62.0, 0.0, 80.0, wear=0.4, load=30.0, noise=0.6, white=0.8),
            S("rotational_speed_rpm", "rpm", 1480.0, 1455.0, 1440.0, 1400.0, 1500.0, wear=0.3, load=-15.0, noise=1.5, white=1.5),
            _ambient_sensor(),
        )),
        MachineTypeSpec("pump", 15, "linear", (
            S("bearing_temp_C", "C", 50.0, 75.0, 90.0, 5.0, 120.0, wear=1.25, load=16.0, noise=1.8, white=0.3, ambient=0.7, lag_hours=2.0),
            _vibration("vibration_mm_s", 2.8, load=0.8),
            S("discharge_pressure_bar", "bar", 6.0, 4.8, 4.2, 0.0, 10.0, wear=1.25, load=0.6, noise=0.08, white=0.25),
            S("flow_rate_m3_h", "m3/h", 120.0, 95.0, 85.0, 0.0, 180.0, wear=0.5, load=40.0, noise=2.0, white=2.5),
            S("suction_pressure_bar", "bar", 1.2, 0.6, 0.4, 0.0, 3.0, wear=0.0, load=-0.2, noise=0.04, white=0.04),
            S("motor_current_A", "A", 30.0, 40.0, 45.0, 0.0, 60.0, wear=0.4, load=18.0, noise=0.5, white=0.6),
            S("fluid_temp_C", "C", 35.0, 60.0, 70.0, 0.0, 90.0, wear=0.0, load=4.0, noise=0.6, white=0.2, ambient=0.5, lag_hours=3.0),
            S("efficiency_pct", "%", 78.0, 68.0, 62.0, 30.0, 90.0, wear=0.8, load=-3.0, noise=0.6, white=1.5),
        )),
        MachineTypeSpec("compressor", 10, "exponential", (
            S("discharge_temp_C", "C", 85.0, 110.0, 120.0, 10.0, 150.0, wear=1.25, load=20.0, noise=1.8, white=0.3, ambient=0.8, lag_hours=1.0),
            S("discharge_pressure_bar", "bar", 7.5, 6.5, 6.0, 0.0, 12.0, wear=0.5, load=0.8, noise=0.07, white=0.08),
            S("suction_pressure_bar", "bar", 1.0, 0.7, 0.5, 0.0, 2.0, wear=0.0, load=-0.1, noise=0.02, white=0.03),
            S("oil_temp_C", "C", 60.0, 80.0, 90.0, 5.0, 110.0, wear=0.5, load=10.0, noise=1.2, white=0.2, ambient=0.6, lag_hours=2.0),
            S("oil_pressure_bar", "bar", 3.5, 2.5, 2.0, 0.0, 6.0, wear=1.25, load=0.2, noise=0.07, white=0.2),
            _vibration("vibration_mm_s", 3.0, load=0.7),
            S("motor_current_A", "A", 95.0, 120.0, 130.0, 0.0, 160.0, wear=0.4, load=40.0, noise=1.5, white=2.0),
            S("power_consumption_kW", "kW", 55.0, 70.0, 76.0, 0.0, 95.0, wear=0.4, load=25.0, noise=0.8, white=1.0),
            S("efficiency_pct", "%", 82.0, 72.0, 66.0, 30.0, 95.0, wear=1.2, load=-2.0, noise=0.6, white=1.5),
            _ambient_sensor(),
        )),
        MachineTypeSpec("cnc", 10, "linear", (
            S("spindle_temp_C", "C", 40.0, 60.0, 70.0, 10.0, 95.0, wear=1.25, load=12.0, noise=1.2, white=0.2, ambient=0.6, lag_hours=1.0),
            _vibration("spindle_vibration_mm_s", 1.5, load=0.5, alarm=4.5, trip=7.1),
            S("acoustic_emission_dB", "dB", 72.0, 85.0, 92.0, 40.0, 110.0, wear=1.2, load=4.0, noise=0.8, white=2.6),
            S("spindle_torque_Nm", "Nm", 45.0, 65.0, 75.0, 0.0, 100.0, wear=0.4, load=25.0, noise=1.0, white=1.5),
            S("power_consumption_kW", "kW", 11.0, 15.0, 17.0, 0.0, 22.0, wear=0.4, load=6.0, noise=0.2, white=0.3),
            S("motor_current_A", "A", 22.0, 30.0, 34.0, 0.0, 45.0, wear=0.3, load=12.0, noise=0.4, white=0.6),
            S("rotational_speed_rpm", "rpm", 8000.0, 11000.0, 11500.0, 0.0, 12000.0, wear=0.0, load=2500.0, noise=15.0, white=20.0),
            S("coolant_temp_C", "C", 25.0, 35.0, 40.0, 5.0, 50.0, wear=0.3, load=3.0, noise=0.4, white=0.1, ambient=0.5, lag_hours=2.0),
            S("coolant_flow_l_min", "l/min", 20.0, 12.0, 8.0, 0.0, 30.0, wear=0.0, load=0.0, noise=0.4, white=0.4),
            S("hydraulic_pressure_bar", "bar", 70.0, 55.0, 50.0, 0.0, 100.0, wear=0.0, load=0.0, noise=1.0, white=1.2),
            S("feed_motor_temp_C", "C", 45.0, 70.0, 80.0, 5.0, 100.0, wear=0.2, load=6.0, noise=1.0, white=0.2, ambient=0.6, lag_hours=1.0),
            _ambient_sensor(),
        )),
        MachineTypeSpec("fan", 15, "exponential", (
            S("bearing_temp_C", "C", 45.0, 70.0, 85.0, 0.0, 110.0, wear=1.25, load=14.0, noise=1.5, white=0.3, ambient=0.8, lag_hours=2.0),
            _vibration("vibration_mm_s", 2.2, load=0.8),
            S("motor_current_A", "A", 12.0, 16.0, 18.0, 0.0, 25.0, wear=0.4, load=7.0, noise=0.25, white=0.3),
            S("airflow_m3_h", "m3/h", 9000.0, 7500.0, 6800.0, 0.0, 12000.0, wear=0.5, load=2000.0, noise=100.0, white=150.0),
        )),
    )
}
del S
# In the order simulate_fleet cycles through them.
MACHINE_TYPES: tuple[str, ...] = tuple(SPECS)


# ------------------------------------------------------------------------------------------ lifecycle layout


@dataclass(frozen=True)
class _Timeline:
    """All rows of one machine, lifecycles back to back: train lifecycles first, then val, then test."""

    timestamps: pd.DatetimeIndex
    step_minutes: int
    lifecycle: np.ndarray  # lifecycle number (0-based) of each row
    rows_left: np.ndarray  # rows until the lifecycle's last row (0 there)
    lengths: list[list[int]]  # rows of each lifecycle, per split

    @property
    def flat_lengths(self) -> np.ndarray:
        return np.array([n for split in self.lengths for n in split])

    @property
    def rul_hours(self) -> np.ndarray:
        return self.rows_left * (self.step_minutes / 60.0)


def _lifecycle_lengths(
    rng: np.random.Generator, rows: tuple[int, ...], step_minutes: int, machine_id: str
) -> list[list[int]]:
    """Rows of each lifecycle per split: whole lifecycles, totals exactly `rows`, lengths varying around a mean.

    Every lifecycle gets the minimum length (MIN_LIFECYCLE_HOURS) plus a share of the split's remaining rows
    proportional to a random weight; the last lifecycle of a split takes the rounding remainder.
    """
    min_rows = math.ceil(MIN_LIFECYCLE_HOURS * 60 / step_minutes)
    for split, count in zip(SPLITS, rows):
        needed = MIN_LIFECYCLES_PER_SPLIT * min_rows
        if count < needed:
            raise SimulationSettingsError(
                f"machine {machine_id}: {split} rows={count} is too small: a split holds at least "
                f"{MIN_LIFECYCLES_PER_SPLIT} lifecycles of at least {min_rows} rows ({MIN_LIFECYCLE_HOURS:g} h at "
                f"{step_minutes}-minute steps), so at least {needed} rows"
            )
    mean_rows = max(rows[0] / rng.integers(TRAIN_LIFECYCLES[0], TRAIN_LIFECYCLES[1] + 1), 1.5 * min_rows)
    lengths = []
    for count in rows:
        n = int(np.clip(round(count / mean_rows), MIN_LIFECYCLES_PER_SPLIT, count // min_rows))
        weights = rng.uniform(1 - LENGTH_SPREAD, 1 + LENGTH_SPREAD, n)
        surplus = count - n * min_rows
        extra = np.floor(surplus * weights / weights.sum()).astype(np.int64)
        extra[-1] += surplus - extra.sum()
        lengths.append([int(min_rows + e) for e in extra])
    return lengths


def _timeline(rng: np.random.Generator, lengths: list[list[int]], step_minutes: int) -> _Timeline:
    """Lay the lifecycles out in time on a regular grid, with a repair gap between two lifecycles."""
    flat = [n for split in lengths for n in split]
    steps, lifecycle, rows_left = [], [], []
    offset_steps = 0
    for index, n in enumerate(flat):
        steps.append(offset_steps + np.arange(n))
        lifecycle.append(np.full(n, index))
        rows_left.append(np.arange(n - 1, -1, -1))
        offset_steps += n + math.ceil(rng.uniform(*REPAIR_HOURS) * 60 / step_minutes)
    return _Timeline(
        timestamps=pd.DatetimeIndex(START + np.concatenate(steps) * pd.Timedelta(minutes=step_minutes)),
        step_minutes=step_minutes,
        lifecycle=np.concatenate(lifecycle),
        rows_left=np.concatenate(rows_left),
        lengths=lengths,
    )


# ------------------------------------------------------------------------------------------ latent states


def _health(rng: np.random.Generator, timeline: _Timeline, profile: str) -> np.ndarray:
    """Wear per row: 0 while healthy, then growing over the degradation interval to exactly 1 at failure."""
    lengths = timeline.flat_lengths
    spread = rng.uniform(1 - DEGRADATION_SPREAD, 1 + DEGRADATION_SPREAD, len(lengths))
    interval = np.minimum(DEGRADATION_SHARE * lengths.mean() * spread, MAX_DEGRADATION_SHARE * (lengths - 1))
    progress = np.clip(1 - timeline.rows_left / interval[timeline.lifecycle], 0.0, 1.0)
    if profile == "linear":
        return progress
    rate = rng.uniform(*EXPONENTIAL_RATE, len(lengths))[timeline.lifecycle]
    return np.expm1(rate * progress) / np.expm1(rate)


def _ar1(rng: np.random.Generator, size: int, sd: float, step_minutes: int) -> np.ndarray:
    """Stationary AR(1) noise with standard deviation `sd` and correlation time AR_TIME_CONSTANT_HOURS."""
    phi = math.exp(-step_minutes / (60 * AR_TIME_CONSTANT_HOURS))
    innovations = rng.normal(0.0, sd * math.sqrt(1 - phi**2), size)
    innovations[0] = rng.normal(0.0, sd)
    return lfilter([1.0], [1.0, -phi], innovations)


def _lagged(values: np.ndarray, lag_hours: float, step_minutes: int) -> np.ndarray:
    """First-order low-pass (time constant `lag_hours`), starting settled at the first value."""
    if lag_hours <= 0:
        return values
    alpha = 1 - math.exp(-step_minutes / (60 * lag_hours))
    lagged, _ = lfilter([alpha], [1.0, alpha - 1], values, zi=[(1 - alpha) * values[0]])
    return lagged


def _load(rng: np.random.Generator, timeline: _Timeline) -> np.ndarray:
    """Load relative to nominal: set points changing every few days times a daily cycle, lower at weekends."""
    timestamps = timeline.timestamps
    hours = np.asarray((timestamps - START) / pd.Timedelta(hours=1), dtype=np.float64)
    total_days = hours[-1] / 24 + 1
    changes = np.sort(rng.uniform(0, total_days, rng.poisson(total_days / SET_POINT_MEAN_DAYS)))
    set_points = rng.uniform(*SET_POINT, len(changes) + 1)
    set_point = set_points[np.searchsorted(changes, hours / 24)]
    daily = 1 + rng.uniform(*DAILY_AMPLITUDE) * np.cos(2 * np.pi * (hours % 24 - rng.uniform(*PEAK_HOUR)) / 24)
    weekend = np.where(np.asarray(timestamps.dayofweek) >= 5, rng.uniform(*WEEKEND_FACTOR), 1.0)
    return set_point * daily * weekend + _ar1(rng, len(hours), LOAD_NOISE, timeline.step_minutes)


def _ambient(rng: np.random.Generator, timeline: _Timeline) -> np.ndarray:
    """Ambient temperature in C: seasonal and daily cycles plus slow noise."""
    timestamps = timeline.timestamps
    day_of_year = np.asarray(timestamps.dayofyear, dtype=np.float64)
    hour = np.asarray(timestamps.hour + timestamps.minute / 60, dtype=np.float64)
    seasonal = AMBIENT_SEASONAL_C * np.sin(2 * np.pi * (day_of_year - 110) / 365)
    daily = AMBIENT_DAILY_C * np.cos(2 * np.pi * (hour - 15) / 24)
    return AMBIENT_MEAN_C + seasonal + daily + _ar1(rng, len(hour), AMBIENT_NOISE_C, timeline.step_minutes)


# ------------------------------------------------------------------------------------------ sensors


def _add_glitches(rng: np.random.Generator, values: np.ndarray, spec: SensorSpec) -> None:
    """In place: rare single-row spikes and short stretches where the reading is stuck at one value."""
    size = len(values)
    spikes = rng.integers(0, size, rng.poisson(size * SPIKE_RATE))
    sizes = rng.uniform(*SPIKE_SIZE, len(spikes)) * rng.choice([-1.0, 1.0], len(spikes))
    values[spikes] += sizes * spec.total_noise
    for start in rng.integers(0, size, rng.poisson(size * STUCK_RATE)):
        values[start : start + rng.integers(STUCK_ROWS[0], STUCK_ROWS[1] + 1)] = values[start]


def _add_missing(rng: np.random.Generator, values: np.ndarray, share: float) -> None:
    """In place: short runs of NaN covering about `share` of the rows."""
    mean_run = (MISSING_RUN_ROWS[0] + MISSING_RUN_ROWS[1]) / 2
    for start in rng.integers(0, len(values), rng.poisson(len(values) * share / mean_run)):
        values[start : start + rng.integers(MISSING_RUN_ROWS[0], MISSING_RUN_ROWS[1] + 1)] = np.nan


def _sensor_values(
    rng: np.random.Generator,
    spec: SensorSpec,
    timeline: _Timeline,
    health: np.ndarray,
    load: np.ndarray,
    ambient: np.ndarray,
    missing_share: float,
) -> np.ndarray:
    """The readings of one sensor over the whole timeline."""
    count, size = len(timeline.flat_lengths), len(health)
    distance = spec.alarm - spec.typical
    sensitivity = rng.uniform(*SENSITIVITY, count)[timeline.lifecycle]
    unit_offset = rng.normal(0.0, UNIT_OFFSET_SHARE * abs(distance), count)[timeline.lifecycle]
    load_deviation = load - 1.0
    wear = spec.wear * distance * sensitivity * health * (1 + WEAR_LOAD_COUPLING * load_deviation)
    values = (
        spec.typical
        + unit_offset
        + spec.load * _lagged(load_deviation, spec.lag_hours, timeline.step_minutes)
        + spec.ambient * (ambient - AMBIENT_MEAN_C)
        + wear
        + _ar1(rng, size, spec.noise, timeline.step_minutes)
        + rng.normal(0.0, spec.white, size)
    )
    _add_glitches(rng, values, spec)
    values = np.clip(np.round(values / spec.resolution) * spec.resolution, spec.min, spec.max)
    if missing_share > 0:
        _add_missing(rng, values, missing_share)
    return values


# ------------------------------------------------------------------------------------------ files


def _metadata(machine_id: str, spec: MachineTypeSpec, timeline: _Timeline) -> dict[str, Any]:
    """SDV single-table metadata with the columns in file order and the RUL parameters."""
    columns: dict[str, dict[str, str]] = {
        TIMESTAMP: {"sdtype": "datetime", "datetime_format": "%Y-%m-%d %H:%M:%S"},
        UNIT_ID: {"sdtype": "id"},
    }
    for sensor in (*(s.name for s in spec.sensors), RUL):
        columns[sensor] = {"sdtype": "numerical", "computer_representation": "Float"}
    return {
        "METADATA_SPEC_VERSION": "SINGLE_TABLE_V1",
        "machine_id": machine_id,
        "time_unit": "hours",
        "machine_type": spec.name,
        "columns": columns,
        "rul_parameters": {
            # The longest lifecycle: every rul value lies within 0..max_operational (hours).
            "max_operational": float(math.ceil(timeline.rul_hours.max())),
            "degradation_profile": spec.degradation_profile,
            "critical_sensors": list(spec.critical_sensors),
            "sampling_interval_minutes": spec.step_minutes,
        },
    }


def _profile(machine_id: str, spec: MachineTypeSpec) -> dict[str, Any]:
    """Machine type, per-sensor limits (with the direction wear moves the sensor) and critical sensors."""
    sensors = {
        s.name: {
            "unit": s.unit,
            "direction": s.direction,
            "min": s.min,
            "typical": s.typical,
            "max": s.max,
            "alarm": s.alarm,
            "trip": s.trip,
        }
        for s in spec.sensors
    }
    return {
        "machine_id": machine_id,
        "machine_type": spec.name,
        "sensors": sensors,
        "critical_sensors": list(spec.critical_sensors),
    }


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_seed(seed: object, where: str) -> None:
    if not _is_int(seed) or seed < 0:  # type: ignore[operator]
        raise SimulationSettingsError(f"{where}seed={seed!r} must be a non-negative integer")


def _check_arguments(machine_id: str, machine_type: str, seed: int, rows: tuple[int, int, int], missing_share: float) -> None:
    """Raise ValueError (InvalidMachineIdError for the id) naming the machine and the bad argument."""
    validate_machine_id(machine_id)
    where = f"machine {machine_id}: "
    if machine_type not in SPECS:
        raise SimulationSettingsError(f"{where}unknown machine_type {machine_type!r}; expected one of {', '.join(MACHINE_TYPES)}")
    _check_seed(seed, where)
    if not isinstance(rows, (tuple, list)) or len(rows) != len(SPLITS) or not all(_is_int(n) for n in rows):
        raise SimulationSettingsError(f"{where}rows={rows!r} must be three integers ({', '.join(SPLITS)})")
    if not (0.0 <= missing_share < 0.5):
        raise SimulationSettingsError(f"{where}missing_share={missing_share!r} must be in [0, 0.5)")


# ------------------------------------------------------------------------------------------ public


def simulate_machine(
    root: Path,
    machine_id: str,
    machine_type: str,
    seed: int,
    rows: tuple[int, int, int] = DEFAULT_ROWS,
    *,
    missing_share: float = 0.0,
) -> dict[str, Any]:
    """Write one machine's three splits, metadata and profile under `root`; return a small summary.

    `rows` are the exact row counts of train, val and test. `missing_share` > 0 blanks short runs of sensor
    readings (about that share of each sensor) to NaN; by default there are none. Raises ValueError naming
    the machine and the argument for a bad machine id, type, seed, rows (too few for two 48 h lifecycles per
    split) or missing share. Existing files of the machine are overwritten.
    """
    _check_arguments(machine_id, machine_type, seed, rows, missing_share)
    spec = SPECS[machine_type]
    rng = np.random.default_rng(seed)
    lengths = _lifecycle_lengths(rng, tuple(int(n) for n in rows), spec.step_minutes, machine_id)
    timeline = _timeline(rng, lengths, spec.step_minutes)
    health = _health(rng, timeline, spec.degradation_profile)
    load = _load(rng, timeline)
    ambient = _ambient(rng, timeline)

    unit_ids = np.array([f"{machine_id}-L{i + 1:02d}" for i in range(len(timeline.flat_lengths))], dtype=object)
    frame = pd.DataFrame({TIMESTAMP: timeline.timestamps.as_unit("ns"), UNIT_ID: unit_ids[timeline.lifecycle]})
    for sensor in spec.sensors:
        frame[sensor.name] = _sensor_values(rng, sensor, timeline, health, load, ambient, missing_share)
    frame[RUL] = timeline.rul_hours

    bounds = np.cumsum([0] + [sum(split) for split in lengths])
    for split, begin, end in zip(SPLITS, bounds[:-1], bounds[1:]):
        path = split_path(root, machine_id, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.iloc[begin:end].to_parquet(path, index=False, engine="pyarrow")
    _write_json(metadata_path(root, machine_id), _metadata(machine_id, spec, timeline))
    _write_json(profile_path(root, machine_id), _profile(machine_id, spec))
    return {
        "machine_id": machine_id,
        "machine_type": machine_type,
        "seed": int(seed),
        "sampling_interval_minutes": spec.step_minutes,
        "degradation_profile": spec.degradation_profile,
        "sensors": [s.name for s in spec.sensors],
        "critical_sensors": list(spec.critical_sensors),
        "rows": dict(zip(SPLITS, (int(n) for n in rows))),
        "lifecycles": {split: len(n) for split, n in zip(SPLITS, lengths)},
        "start": str(timeline.timestamps[0]),
        "end": str(timeline.timestamps[-1]),
    }


def machine_seed(seed: int, index: int) -> int:
    """The seed of the fleet's machine number `index` (0-based), derived from the fleet seed."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def simulate_fleet(
    root: Path, machines: int, seed: int, rows: tuple[int, int, int] = DEFAULT_ROWS, progress: bool = False,
    *, overwrite: bool = True,
) -> list[str]:
    """Write `machines` machines (types cycling through MACHINE_TYPES: motor_001, pump_002, ...); return their ids.

    Each machine's seed comes from (seed, index), so a given seed always writes the same bytes.
    `progress` shows a tqdm bar over the machines. With `overwrite=False`, a machine that already has data under
    `root` is an error (nothing is written).
    """
    if not _is_int(machines) or machines < 1:
        raise SimulationSettingsError(f"fleet: machines={machines!r} must be a positive integer")
    _check_seed(seed, "fleet: ")
    types = [MACHINE_TYPES[i % len(MACHINE_TYPES)] for i in range(machines)]
    ids = [validate_machine_id(f"{machine_type}_{i + 1:03d}") for i, machine_type in enumerate(types)]
    if not overwrite:
        existing = [m for m in ids if split_path(Path(root), m, "train").parent.exists() or
                    metadata_path(Path(root), m).exists()]
        if existing:
            raise PdmError(
                f"machine(s) {', '.join(existing)} already exist under {root}: pass --overwrite to replace their "
                "data (their trained releases are kept until the next run)"
            )
    indices: Any = range(machines)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="simulating machines", unit="machine")
    for index in indices:
        simulate_machine(Path(root), ids[index], types[index], machine_seed(seed, index), rows)
    return ids
