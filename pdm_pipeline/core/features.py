"""Causal rolling-window sensor features, computed per unit over the unit's whole history.

A row's features use that row and the rows before it in the same unit, nothing else: rolling windows (in
samples) restart at every unit, and at every gap in the timestamps longer than the window itself (a window of 6
hourly rows never reaches across a 7-day outage to rows from before it; shorter gaps are left alone), and
`timestamp`, `rul`, `failure_status`, `anomaly_window` and `unit_id` are never inputs (timestamps only order the
rows, give the sampling step and mark the gaps).

Window lengths are counted in samples, not hours, so per-second, per-minute, hourly and per-cycle data all get
real features: by default 6, 36 and 144 samples (at the generator's 10-minute step that is 1 h, 6 h, 24 h), each
capped at a quarter of the median train unit length (a window longer than the units it describes would leave
every row in warm-up). `window_samples` overrides them.

Per sensor: the raw value and, per window, mean, std, min, max, RMS, peak (largest |x - window mean|) and
least-squares slope per sample. Vibration sensors (name contains "vib") also get the energy of three frequency
bands (low, mid, high) over the longest window. Every window feature is defined from the start of a unit
(`min_periods=1`); a row with at least `min_history_rows(spec)` rows of history (itself included) gets the same
values whatever came before that history, so the prediction path (a buffer of recent rows) matches the
training path. `continuous_features` computes train, val and test in one pass over each unit's rows, so a val
or test row sees the rows of its unit that precede it in earlier splits, exactly as `predict` does on a unit's
history (no restart at split boundaries).

Without time order (e.g. AI4I 2020, independent rows) there is no history to summarise: the features are the raw
sensor values and, for up to MAX_INTERACTION_SENSORS sensors, every pair's product and difference (physical
quantities are often products or differences of what is measured: power = torque x speed, a temperature rise =
process - ambient; trees approximate them only with many splits). Features are float32: computed in float64, then
rounded, so two differences that are the same decimal number at the data's precision are one value (float64 keeps
the rounding error of the subtraction apart: 309.4 - 300.8 != 310.8 - 302.2, and AI4I's labels follow exactly
that error on its heat-dissipation limit, see core/bench_real.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer
from pandas.api.typing import Rolling

from pdm_pipeline.core.schema import EVAL_ANOMALY, LABEL, RESERVED_COLUMNS, RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import DEFAULT_TIME_UNIT, median_step, time_values, unit_codes

DEFAULT_WINDOW_SAMPLES: tuple[int, ...] = (6, 36, 144)
# The longest window is at most this share of the median train unit length (and at least MIN_WINDOW_CAP).
WINDOW_SHARE_OF_UNIT = 0.25
MIN_WINDOW_CAP = 12
WINDOW_STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max", "rms", "peak", "slope")
BANDS: tuple[str, ...] = ("low", "mid", "high")
PASS_THROUGH_COLUMNS: tuple[str, ...] = (TIMESTAMP, UNIT_ID, RUL, LABEL, EVAL_ANOMALY)
# Band energies use at most this many points per window: longer windows are first averaged in blocks of
# consecutive rows (anchored at the current row, so still causal and independent of older history).
MAX_BAND_POINTS = 128
# Fewer points leave fewer than one FFT bin per band.
MIN_BAND_POINTS = 6
_BAND_CHUNK_ROWS = 4096
SPLIT_COLUMN = "__split"
# Pairwise products and differences for data without time order, up to this many sensors (66 pairs at 12).
MAX_INTERACTION_SENSORS = 12


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to compute the same features at training and at prediction time (JSON-able)."""

    sensors: tuple[str, ...]
    vibration_sensors: tuple[str, ...]
    # The data's time unit (timeaxis.TIME_UNITS) and its median sampling step in that unit; step None = no
    # time order (raw values only).
    time_unit: str
    step: float | None
    # Window lengths in samples, shortest first.
    windows: tuple[int, ...]
    feature_names: tuple[str, ...]
    # Pairwise products and differences of the sensors (data without time order only).
    interactions: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the inverse of `from_dict`)."""
        return {
            "sensors": list(self.sensors),
            "vibration_sensors": list(self.vibration_sensors),
            "time_unit": self.time_unit,
            "step": self.step,
            "windows": list(self.windows),
            "interactions": self.interactions,
            "feature_names": list(self.feature_names),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a spec from `to_dict` output; raises ValueError when fields are missing or inconsistent."""
        names = ("sensors", "vibration_sensors", "time_unit", "step", "windows", "feature_names")
        missing = [k for k in names if k not in d]
        if missing:
            raise ValueError(f"feature spec is missing field(s) {missing} (written by another version?)")
        spec = cls(
            sensors=tuple(str(s) for s in d["sensors"]),
            vibration_sensors=tuple(str(s) for s in d["vibration_sensors"]),
            time_unit=str(d["time_unit"]),
            step=None if d["step"] is None else float(d["step"]),
            windows=tuple(int(w) for w in d["windows"]),
            feature_names=tuple(str(f) for f in d["feature_names"]),
            interactions=bool(d.get("interactions", False)),
        )
        if spec.feature_names != _feature_names(spec.sensors, spec.vibration_sensors, spec.windows, spec.interactions):
            raise ValueError(
                "feature spec is inconsistent: its feature_names do not match its sensors and windows "
                "(written by another version of the pipeline?)"
            )
        return spec

    def window_durations(self) -> list[float]:
        """Each window's length in the data's time unit (samples x step)."""
        return [w * (self.step or 0.0) for w in self.windows]


def default_windows(train: pd.DataFrame) -> tuple[int, ...]:
    """DEFAULT_WINDOW_SAMPLES, each capped at a quarter of the median train unit length (>= MIN_WINDOW_CAP)."""
    lengths = pd.Series(unit_codes(train)).value_counts()
    median_length = float(lengths.median()) if len(lengths) else 0.0
    cap = max(MIN_WINDOW_CAP, int(median_length * WINDOW_SHARE_OF_UNIT))
    return tuple(sorted({min(w, cap) for w in DEFAULT_WINDOW_SAMPLES}))


def fit_feature_spec(
    train: pd.DataFrame,
    sensors: Sequence[str],
    *,
    time_unit: str = DEFAULT_TIME_UNIT,
    window_samples: Sequence[int] = (),
    time_order: bool = True,
) -> FeatureSpec:
    """Fit the feature spec on the train split: the sampling step and the window lengths.

    With `time_order=False` the spec holds the raw sensor values only. Raises ValueError naming a missing,
    reserved or non-numeric sensor column, bad window lengths, or a train split without usable timestamps.
    """
    sensors = tuple(sensors)
    if not sensors:
        raise ValueError("fit_feature_spec needs at least one sensor column")
    reserved = [s for s in sensors if s in RESERVED_COLUMNS]
    if reserved:
        raise ValueError(f"sensor column(s) {reserved} are reserved columns and can never be features")
    if len(set(sensors)) != len(sensors):
        raise ValueError(f"sensor columns are listed twice: {sorted({s for s in sensors if sensors.count(s) > 1})}")
    _sensor_matrix(train, sensors, where="train split")  # validates the columns
    vibration = tuple(s for s in sensors if "vib" in s.lower())
    if not time_order:
        pairs = len(sensors) <= MAX_INTERACTION_SENSORS
        names = _feature_names(sensors, vibration, (), pairs)
        return FeatureSpec(sensors, vibration, time_unit, None, (), names, interactions=pairs)
    given = tuple(int(w) for w in window_samples)
    if given and any(w < 2 for w in given):
        raise ValueError(f"window_samples={given!r} must be whole numbers >= 2")
    windows = tuple(sorted(set(given))) if given else default_windows(train)
    step = median_step([train], time_unit, where="train split (needed for time-ordered features)")
    return FeatureSpec(sensors, vibration, time_unit, step, windows, _feature_names(sensors, vibration, windows))


def min_history_rows(spec: FeatureSpec) -> int:
    """Rows (the current one included) a prediction needs so that every window is full."""
    return max(spec.windows, default=1)


def compute_features(df: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Features of every row of `df` (columns == spec.feature_names, same index, float32).

    `df` needs the sensor columns; `unit_id` is optional (absent = one unit) and `timestamp`, when present,
    is only checked to be in order within each unit. Rows must be in time order within each unit.
    """
    values = _sensor_matrix(df, spec.sensors, where="feature input")
    if spec.step is None:
        columns = [values]
        if spec.interactions:
            for i, j in _pairs(len(spec.sensors)):
                columns.append((values[:, i] * values[:, j])[:, None])
                columns.append((values[:, i] - values[:, j])[:, None])
        matrix = np.hstack(columns).astype(np.float32)
        return pd.DataFrame(matrix, index=df.index, columns=list(spec.feature_names))

    order, codes, gaps = _unit_blocks(df, spec)
    values = values[order]
    unit_start = _unit_start(codes)
    position = (np.arange(len(codes)) - unit_start).astype(float)

    columns: dict[str, np.ndarray] = {}
    for j, sensor in enumerate(spec.sensors):
        columns[sensor] = values[:, j]
    for window in spec.windows:
        label = window_label(window)
        stats = _window_statistics(values, position, _window_start(codes, gaps, window * spec.step), window)
        for name, matrix in stats.items():
            for j, sensor in enumerate(spec.sensors):
                columns[f"{sensor}__{name}_{label}"] = matrix[:, j]
    if spec.vibration_sensors and spec.windows:
        label = window_label(spec.windows[-1])
        for sensor in spec.vibration_sensors:
            energies = _band_energies(values[:, spec.sensors.index(sensor)],
                                      _window_start(codes, gaps, spec.windows[-1] * spec.step), spec.windows[-1])
            if energies is not None:
                for b, band in enumerate(BANDS):
                    columns[f"{sensor}__band_{band}_{label}"] = energies[:, b]

    matrix = np.empty((len(order), len(spec.feature_names)), dtype=np.float32)
    matrix[order] = np.column_stack([columns[name] for name in spec.feature_names])
    return pd.DataFrame(matrix, index=df.index, columns=list(spec.feature_names))


def in_warmup(df: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Per row of `df` (its order): True when some window of the row is not full yet, after its unit's start or
    after a gap longer than the window (its values then rest on fewer rows than the model learnt from)."""
    if spec.step is None or not spec.windows:
        return np.zeros(len(df), dtype=bool)
    order, codes, gaps = _unit_blocks(df, spec)
    rows = np.arange(len(codes))
    short = np.zeros(len(codes), dtype=bool)
    for window in spec.windows:
        short |= rows - _window_start(codes, gaps, window * spec.step) + 1 < window
    out = np.empty(len(codes), dtype=bool)
    out[order] = short
    return out


def _unit_blocks(df: pd.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(order, unit codes, gaps): the row order that makes units contiguous blocks (order inside a unit kept), so
    windows can be bounded by the unit start; each row's unit code and time since the previous row in that order
    (None without timestamps; checked in order within each unit)."""
    codes = unit_codes(df)
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    gaps = None
    if TIMESTAMP in df.columns:
        times = time_values(df, spec.time_unit, where="feature input")[order]
        _check_time_order(times, codes, df[TIMESTAMP].to_numpy()[order])
        gaps = np.r_[0.0, np.diff(times)]
    return order, codes, gaps


def build_feature_frame(df: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Features followed by the pass-through columns present among timestamp, unit_id, rul, failure_status,
    anomaly_window (targets and evaluation columns, never features)."""
    features = compute_features(df, spec)
    passed = [c for c in PASS_THROUGH_COLUMNS if c in df.columns]
    return pd.concat([features, df[passed]], axis=1)


def window_label(samples: int) -> str:
    """Window label in feature names: 6 samples -> "w6" (its duration depends on the data's step)."""
    return f"w{int(samples)}"


def continuous_features(splits: Mapping[str, pd.DataFrame], spec: FeatureSpec) -> dict[str, pd.DataFrame]:
    """`build_feature_frame` of every split computed over each unit's whole history, split order kept.

    The splits are laid one after the other (train, val, test); within each unit the rows keep that order, so
    a val row's windows reach back into the train rows of its unit (and a test row's into val and train), as a
    prediction over the unit's recent history would. Each returned frame has its split's index and row order.
    """
    names = list(splits)
    parts = [df.assign(**{SPLIT_COLUMN: i}) for i, df in enumerate(splits.values())]
    full = pd.concat(parts, ignore_index=True)
    frame = build_feature_frame(full, spec)
    out = {}
    for i, name in enumerate(names):
        rows = full[SPLIT_COLUMN].to_numpy() == i
        part = frame.loc[rows]
        part.index = splits[name].index
        out[name] = part
    return out


class _UnitWindow(BaseIndexer):
    """Trailing window of `window_size` rows that never reaches before the row's unit start."""

    unit_start: np.ndarray

    def get_window_bounds(
        self,
        num_values: int = 0,
        min_periods: int | None = None,
        center: bool | None = None,
        closed: str | None = None,
        step: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        end = np.arange(1, num_values + 1, dtype=np.int64)
        start = np.maximum(end - self.window_size, self.unit_start).astype(np.int64)
        return start, end


def _rolling(matrix: np.ndarray, unit_start: np.ndarray, window: int) -> Rolling:
    return pd.DataFrame(matrix).rolling(_UnitWindow(window_size=window, unit_start=unit_start), min_periods=1)


def _window_statistics(
    values: np.ndarray, position: np.ndarray, unit_start: np.ndarray, window: int
) -> dict[str, np.ndarray]:
    """Per-window statistics of every sensor column (rows x sensors each), NaN readings skipped."""
    rolling = _rolling(values, unit_start, window)
    mean = rolling.mean().to_numpy()
    low = rolling.min().to_numpy()
    high = rolling.max().to_numpy()
    std = np.sqrt(np.clip(rolling.var(ddof=0).to_numpy(), 0.0, None))
    rms = np.sqrt(np.clip(_rolling(values**2, unit_start, window).mean().to_numpy(), 0.0, None))
    peak = np.maximum(high - mean, mean - low)

    # Least-squares slope against the row position, over the window's non-missing readings.
    present = ~np.isnan(values)
    x = np.where(present, values, 0.0)
    g = position[:, None] * present
    sums = _rolling(np.hstack([present.astype(float), g, g * position[:, None], x, x * position[:, None]]),
                    unit_start, window).sum().to_numpy()
    count, sum_g, sum_gg, sum_x, sum_gx = np.split(sums, 5, axis=1)
    denominator = count * sum_gg - sum_g**2
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(denominator > 0, (count * sum_gx - sum_g * sum_x) / denominator, 0.0)
    slope = np.where(count > 0, slope, np.nan)
    return {"mean": mean, "std": std, "min": low, "max": high, "rms": rms, "peak": peak, "slope": slope}


def _band_layout(window: int) -> tuple[int, int]:
    """(points, block): the window is seen as `points` averages of `block` consecutive rows (block*points <= window)."""
    block = math.ceil(window / MAX_BAND_POINTS)
    return window // block, block


def _band_energies(values: np.ndarray, unit_start: np.ndarray, window: int) -> np.ndarray | None:
    """Low/mid/high band energies (rows x 3) of the trailing window, or None when the window is too short.

    The window is de-meaned and its power spectrum split into three equal-width frequency bands; the three
    energies add up to the window's variance. Before the unit's first row the window repeats that first value.
    """
    points, block = _band_layout(window)
    if points < MIN_BAND_POINTS:
        return None
    series = values if block == 1 else _rolling(values[:, None], unit_start, block).mean().to_numpy()[:, 0]
    offsets = block * np.arange(points - 1, -1, -1)
    bins = np.arange(1, points // 2 + 1)
    weights = np.full(bins.size, 2.0 / points**2)
    if points % 2 == 0:
        weights[-1] = 1.0 / points**2  # the Nyquist bin has no mirror image
    bands = np.array_split(np.arange(bins.size), len(BANDS))
    out = np.empty((len(values), len(BANDS)))
    for first in range(0, len(values), _BAND_CHUNK_ROWS):
        rows = np.arange(first, min(first + _BAND_CHUNK_ROWS, len(values)))
        index = np.maximum(rows[:, None] - offsets[None, :], unit_start[rows][:, None])
        windows = series[index]
        windows = windows - windows.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(windows, axis=1)[:, bins]) ** 2 * weights
        for b, members in enumerate(bands):
            out[rows, b] = power[:, members].sum(axis=1)
    return out


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _feature_names(
    sensors: tuple[str, ...], vibration: tuple[str, ...], windows: tuple[int, ...], interactions: bool = False
) -> tuple[str, ...]:
    names: list[str] = list(sensors)
    if interactions:
        for i, j in _pairs(len(sensors)):
            names += [f"{sensors[i]}__times__{sensors[j]}", f"{sensors[i]}__minus__{sensors[j]}"]
    for window in windows:
        label = window_label(window)
        names += [f"{sensor}__{stat}_{label}" for stat in WINDOW_STATISTICS for sensor in sensors]
    if windows and _band_layout(windows[-1])[0] >= MIN_BAND_POINTS:
        label = window_label(windows[-1])
        names += [f"{sensor}__band_{band}_{label}" for sensor in vibration for band in BANDS]
    return tuple(names)


def _sensor_matrix(df: pd.DataFrame, sensors: Sequence[str], where: str) -> np.ndarray:
    """The sensor columns as a float64 matrix; raises ValueError naming missing, non-numeric or infinite columns."""
    missing = [s for s in sensors if s not in df.columns]
    if missing:
        raise ValueError(f"{where}: sensor column(s) {missing} are missing (columns present: {list(df.columns)})")
    non_numeric = [s for s in sensors if not pd.api.types.is_numeric_dtype(df[s])]
    if non_numeric:
        raise ValueError(f"{where}: sensor column(s) {non_numeric} are not numeric")
    matrix = df[list(sensors)].to_numpy(dtype=float)
    infinite = [s for s, bad in zip(sensors, np.isinf(matrix).any(axis=0)) if bad]
    if infinite:
        raise ValueError(f"{where}: sensor column(s) {infinite} contain infinite values")
    return matrix


def _check_time_order(times: np.ndarray, codes: np.ndarray, stamps: np.ndarray | None = None) -> None:
    """Raise ValueError when timestamps go backwards or repeat inside a unit (rows must be sorted by unit,
    timestamp, one row per time: the windows count rows)."""
    same_unit = codes[1:] == codes[:-1]
    backwards = (np.diff(times) < 0) & same_unit
    if backwards.any():
        raise ValueError(
            f"feature input: {int(backwards.sum())} row(s) have a {TIMESTAMP!r} earlier than the previous row "
            f"of the same unit; sort rows by ({UNIT_ID}, {TIMESTAMP}) first"
        )
    repeated = (np.diff(times) == 0) & same_unit
    if repeated.any():
        first = (times if stamps is None else stamps)[1:][repeated][0]
        first = pd.Timestamp(first) if isinstance(first, np.datetime64) else first
        raise ValueError(
            f"feature input: {int(repeated.sum())} row(s) repeat the {TIMESTAMP} of an earlier row of the same unit "
            f"(first at {first}); keep one row per time"
        )


def _unit_start(codes: np.ndarray, breaks: np.ndarray | None = None) -> np.ndarray:
    """For rows grouped in contiguous unit blocks: the index of each row's first unit row (or, with `breaks`, of
    the first row after the last break before it)."""
    first = np.r_[True, codes[1:] != codes[:-1]]
    starts = np.flatnonzero(first if breaks is None else first | breaks)
    return starts[np.searchsorted(starts, np.arange(len(codes)), side="right") - 1]


def _window_start(codes: np.ndarray, gaps: np.ndarray | None, duration: float) -> np.ndarray:
    """Where a row's window may start: its unit's first row, or the first row after a gap longer than the window's
    duration (the time from the previous row of `gaps`; None without timestamps)."""
    return _unit_start(codes, None if gaps is None else gaps > duration)
