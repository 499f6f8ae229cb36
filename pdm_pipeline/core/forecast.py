"""Per-sensor 24 h forecasts with Prophet: one small model per sensor, refitted on a trailing window.

Inputs
    RAW sensor frames (not features): `timestamp`, optional `unit_id` (run-to-failure lifecycles that follow
    each other in time), float sensor columns; every other column (`rul`, `failure_status`, ...) is ignored.
    `history` is train + val (everything before test).

Series
    The sampling step is the median difference between consecutive distinct timestamps. Data with a step of
    one hour or less is resampled to hourly means (bins labelled by their start: the bin `10:00` holds
    10:00-10:59, so a forecast for `11:00` starts after every raw row up to 10:59); coarser data keeps its own
    step. Empty bins (gaps) stay missing and are not fitted.

Fit window
    A 24 h forecast of a degrading, periodically repaired machine is about the recent level plus the load
    cycle, so each Prophet sees only a TRAILING window (`history_days`, default 21 days) ending at the
    forecast origin, never the whole history. Lifecycles (`unit_id`) matter because a repair resets the level:
    when a lifecycle that began inside the window has run `min_lifecycle_days` (2), the window starts there;
    a younger lifecycle is too short to show the daily cycle, so the window keeps the older data and every
    lifecycle start inside it gets a 0/1 level-shift regressor (1 from that start on, and 1 in the forecast).
    Without `unit_id` a repair is just a trend change for Prophet. Daily seasonality is fitted when the window
    spans >= 2 days, weekly when >= 2 weeks (and only if the trained model used it); no yearly or holiday
    terms. Additive seasonality, changepoint_prior_scale 0.05 (other prior scales and multiplicative
    seasonality made no difference beyond noise on simulated validation data).

Model selection (on VALIDATION, per machine)
    The window length and trend type that suit a machine depend on how its wear evolves (4 windows choose
    as well as 8 and cost half: measured on the five sample types), so `CANDIDATE_GRID` (21/7-day window x
    linear/flat trend) is compared on
    `validation_windows` (4) 24 h windows spread evenly over the validation period (from `val_start`, the
    first val timestamp; by default the last 15 % of the history), skipping windows that contain a lifecycle
    start. Every candidate is fitted at each origin on the data before it only. Score: the mean over sensors
    of validation MAE / the sensor's in-sample seasonal-naive MAE on the data before the validation period
    (a validation MASE, so sensors in different units weigh alike). The lowest score wins; ties go to the
    earlier candidate. One choice per MACHINE, not per sensor: 4 windows x 24 h of autocorrelated errors per
    sensor is thin evidence, pooling the sensors makes it steadier, and the sensors of a machine share its
    wear and repair pattern. Settings fixed in `config.extra` are not varied. The grid, every candidate's
    score and per-sensor MAE, the origins and the choice are stored in the model card (`selection`).
    Prophet cannot update a fitted model with new data, so forecasting on new rows (`recent`) refits on their
    trailing window with the hyperparameters stored in the model card (a fraction of a second per sensor).

Intervals
    Prophet has one `interval_width` per model. Instead of fitting twice, the 80 % and 95 % bands come from
    one set of predictive samples (`uncertainty_samples` draws of trend change plus observation noise): their
    10/90 and 2.5/97.5 percentiles, drawn with a fixed seed so a forecast is reproducible. Prophet's bands
    assume independent noise around a smooth fit and are too narrow for autocorrelated sensor noise (about
    60 % / 80 % actual coverage on simulated validation data), so each sensor's band half-widths are
    multiplied by a factor calibrated at training time on the validation period: the chosen candidate's
    forecasts of the validation windows (each from its own past) give the 80 % (95 %) quantile of
    |error| / half-width (split-conformal scaling; the same windows chose the settings, which may make the
    bands slightly narrow). `validation_windows` 0 turns selection and calibration off. The point
    forecast `yhat` is Prophet's deterministic trend + seasonality; bands always contain it and nest.

Storage
    `model_card.json` (sensors, step, seasonalities, chosen settings, selection record, interval factors,
    end of history) and one `prophet/<nn>.json` per sensor written with `prophet.serialize.model_to_json`
    (file names are indices, not sensor names, so any column name is safe).

Evaluation (TEST only, rolling origin)
    `n_windows` (10) origins spread evenly over the test period; at each origin t every sensor is refitted on
    the trailing window of history + test rows strictly before t, then forecasts the next 24 h, compared with
    the actual hourly values. An origin whose forecast period contains a lifecycle start (a repair, known
    from `unit_id`) is not used: no forecaster can see a repair coming in the sensor values, and the
    seasonal-naive baseline is equally meaningless there. Every hourly grid point is a candidate origin and
    the picks are spread evenly over the valid ones, so excluded origins are replaced and all `n_windows`
    survive whenever the test period holds that many repair-free horizons. Metrics per sensor, then averaged
    over sensors: MAE, sMAPE (%), MASE and 80 %/95 % interval coverage. The MASE scale is the in-sample MAE
    of the seasonal-naive (24 h lag) forecast over the whole history (train + val), the standard definition.
    Baseline = the seasonal-naive forecast (the value 24 h earlier) on the same points.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.config import ConfigError, TrainingConfig
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.publish import size_mb
from pdm_pipeline.core.schema import TIMESERIES, TIMESTAMP, UNIT_ID

Log = Callable[[str], None]

MODEL_CARD = "model_card.json"
MODELS_SUBDIR = "prophet"
HOURLY = "h"
SECONDS_PER_HOUR = 3600.0
DAY = pd.Timedelta(days=1)
WEEK = pd.Timedelta(days=7)
# Interval level -> percentiles of the predictive samples that bound it (narrowest level first).
BAND_PERCENTILES: dict[str, tuple[float, float]] = {"80": (10.0, 90.0), "95": (2.5, 97.5)}
FORECAST_COLUMNS = ["sensor", "ds", "yhat", "yhat_lower_80", "yhat_upper_80", "yhat_lower_95", "yhat_upper_95"]
# `config.extra` keys that override ForecastSettings fields: "forecast_<field>".
EXTRA_PREFIX = "forecast_"
# Level-shift regressors for lifecycle starts (repairs) inside a fit window.
REPAIR_PREFIX = "repair_"
# Settings compared on the validation windows (changes to the base settings; the first entry is the base).
# Trailing window length, trend type and how late the trend may still bend: the choices that matter for a
# 24 h forecast of a degrading machine. Six candidates keep the selection within ~10 s for 3 sensors.
CANDIDATE_GRID: tuple[dict[str, Any], ...] = (
    {},
    {"history_days": 7.0},
    {"growth": "flat"},
    {"history_days": 7.0, "growth": "flat"},
)
# Share of the history taken as the validation period when `val_start` is not given: inside val for the
# default split, where val is ~18 % of the rows before test.
DEFAULT_VALIDATION_SHARE = 0.15
# Fewer calibration points than this keep Prophet's own bands (factor 1).
MIN_CALIBRATION_POINTS = 24
# Hours of history shown before the forecast in the evaluation pictures; at most this many sensors are drawn.
PLOT_HISTORY_HOURS = 72
MAX_PLOTTED_SENSORS = 4


class ForecastSkipped(Exception):
    """Forecasting cannot run for this machine; the message is the user-facing reason."""


@dataclass(frozen=True)
class ForecastSettings:
    """Prophet hyperparameters and window rules; stored in the model card and reused for every refit."""

    # Length of the trailing window each Prophet is fitted on.
    history_days: float = 21.0
    # A lifecycle (unit_id) that began inside the window replaces the window once it has run this long.
    min_lifecycle_days: float = 2.0
    # "linear": piecewise-linear trend; "flat": constant level (plus seasonality and repair shifts).
    growth: str = "linear"
    changepoint_prior_scale: float = 0.05
    # Share of the window where trend changepoints may sit (Prophet's default).
    changepoint_range: float = 0.8
    seasonality_mode: str = "additive"
    seasonality_prior_scale: float = 10.0
    # Predictive samples per forecast (both interval levels come from the same draws).
    uncertainty_samples: int = 300
    # 24 h windows in the validation period that choose among CANDIDATE_GRID and calibrate the interval
    # widths (0 = no selection: these settings as they are, with Prophet's own bands).
    validation_windows: int = 4
    seed: int = 0

    @staticmethod
    def overrides(config: TrainingConfig) -> dict[str, Any]:
        """The settings fixed by `config.extra["forecast_<field>"]` (field -> value); raises on unknown keys."""
        names = {f.name for f in fields(ForecastSettings)} - {"seed"}
        overrides: dict[str, Any] = {}
        for key, value in config.extra.items():
            if not key.startswith(EXTRA_PREFIX):
                continue
            name = key[len(EXTRA_PREFIX):]
            if name not in names:
                allowed = ", ".join(EXTRA_PREFIX + n for n in sorted(names))
                raise ConfigError(f"unknown forecast setting extra[{key!r}]; allowed: {allowed}")
            overrides[name] = value
        return overrides

    @classmethod
    def from_config(cls, config: TrainingConfig) -> ForecastSettings:
        """Defaults, overridden by `config.extra["forecast_<field>"]`, with `seed` from `config.seed`."""
        return replace(cls(seed=int(config.seed)), **cls.overrides(config)).validate()

    def candidates(self, fixed: Collection[str] = ()) -> list[ForecastSettings]:
        """These settings changed by each CANDIDATE_GRID entry, leaving the `fixed` fields alone (duplicates
        dropped, grid order kept: the first candidate is these settings as they are)."""
        out: list[ForecastSettings] = []
        for entry in CANDIDATE_GRID:
            candidate = replace(self, **{k: v for k, v in entry.items() if k not in fixed})
            if candidate not in out:
                out.append(candidate)
        return out

    def label(self) -> str:
        """Short name of the choices the grid varies, e.g. '21d linear cr0.8'."""
        return f"{self.history_days:g}d {self.growth} cr{self.changepoint_range:g}"

    def validate(self) -> ForecastSettings:
        """Return self, or raise ConfigError naming every bad setting."""
        problems = []
        if not (self.history_days >= 1):
            problems.append(f"history_days={self.history_days!r} must be >= 1")
        if not (self.min_lifecycle_days >= 0):
            problems.append(f"min_lifecycle_days={self.min_lifecycle_days!r} must be >= 0")
        if self.growth not in ("linear", "flat"):
            problems.append(f"growth={self.growth!r} must be 'linear' or 'flat'")
        if not (self.changepoint_prior_scale > 0):
            problems.append(f"changepoint_prior_scale={self.changepoint_prior_scale!r} must be > 0")
        if not (0 < self.changepoint_range <= 1):
            problems.append(f"changepoint_range={self.changepoint_range!r} must be in (0, 1]")
        if self.seasonality_mode not in ("additive", "multiplicative"):
            problems.append(f"seasonality_mode={self.seasonality_mode!r} must be 'additive' or 'multiplicative'")
        if not (self.seasonality_prior_scale > 0):
            problems.append(f"seasonality_prior_scale={self.seasonality_prior_scale!r} must be > 0")
        if not (int(self.uncertainty_samples) >= 100):
            problems.append(f"uncertainty_samples={self.uncertainty_samples!r} must be >= 100 (95 % bands need draws)")
        if not (int(self.validation_windows) >= 0):
            problems.append(f"validation_windows={self.validation_windows!r} must be >= 0")
        if problems:
            raise ConfigError("invalid forecast settings: " + "; ".join(problems))
        return self


@dataclass
class ForecastModelResult:
    """What `train_sensor_forecasts` wrote and how (the full detail is in the model card)."""

    path: Path
    size_mb: float
    train_seconds: float
    sensors: list[str]
    # "h" when resampled to hourly means, else the raw step as a pandas frequency string.
    freq: str
    # Longest trailing window (hours) the stored models were fitted on.
    history_hours: float
    horizon_hours: int
    # Seasonalities the trained models may use ({"daily": bool, "weekly": bool}).
    seasonalities: dict[str, bool]
    # Inferred raw sampling step.
    step_seconds: float
    # The settings the stored models use (the chosen candidate).
    settings: dict[str, Any] = field(default_factory=dict)
    # Model selection on validation: period, origins, every candidate's score and per-sensor MAE, the choice.
    selection: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- series


@dataclass(frozen=True)
class _Grid:
    """Sensor values on the model's time grid, plus the raw timestamps where a new lifecycle begins."""

    values: pd.DataFrame  # DatetimeIndex (bin start), one column per sensor, NaN where a bin is empty
    lifecycle_starts: pd.DatetimeIndex


def _timestamps(frame: pd.DataFrame, where: str) -> pd.Series:
    """The timestamp column as tz-naive datetimes (Prophet's requirement); raises naming the column."""
    if TIMESTAMP not in frame.columns:
        raise ForecastSkipped(f"{where}: no {TIMESTAMP!r} column: nothing to forecast")
    try:
        ts = pd.to_datetime(frame[TIMESTAMP])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: column {TIMESTAMP!r} cannot be read as datetimes: {exc}") from exc
    if ts.isna().any():
        raise ValueError(f"{where}: column {TIMESTAMP!r} has {int(ts.isna().sum())} missing value(s)")
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts


def infer_step_seconds(timestamps: pd.Series, where: str = "data") -> float:
    """Median difference between consecutive distinct timestamps, in seconds."""
    distinct = np.unique(pd.to_datetime(timestamps).to_numpy(dtype="datetime64[ns]"))
    if len(distinct) < 2:
        raise ForecastSkipped(f"{where}: fewer than 2 distinct timestamps: cannot infer a sampling step")
    return float(np.median(np.diff(distinct).astype(np.int64)) / 1e9)


def _model_step(step_seconds: float) -> tuple[str, pd.Timedelta]:
    """Frequency string and step of the model grid: hourly when the raw step is <= 1 h, else the raw step."""
    if step_seconds <= SECONDS_PER_HOUR:
        return HOURLY, pd.Timedelta(hours=1)
    step = pd.Timedelta(seconds=step_seconds)
    return pd.tseries.frequencies.to_offset(step).freqstr, step


def _grid(frame: pd.DataFrame, sensors: Sequence[str], freq: str, where: str) -> _Grid:
    """Raw rows -> model grid (hourly means when freq is 'h', else one row per distinct timestamp)."""
    missing = [s for s in sensors if s not in frame.columns]
    if missing:
        raise ValueError(f"{where}: sensor column(s) {missing} not found; columns are {list(frame.columns)}")
    non_numeric = [s for s in sensors if not pd.api.types.is_numeric_dtype(frame[s])]
    if non_numeric:
        raise ValueError(f"{where}: sensor column(s) {non_numeric} are not numeric")
    ts = _timestamps(frame, where)
    order = np.argsort(ts.to_numpy(), kind="stable")
    index = pd.DatetimeIndex(ts.to_numpy()[order])
    raw = pd.DataFrame({s: frame[s].to_numpy(dtype=float)[order] for s in sensors}, index=index)
    values = raw.resample(HOURLY).mean() if freq == HOURLY else raw.groupby(level=0).mean()
    values.index.name = "ds"
    starts = pd.DatetimeIndex([])
    if UNIT_ID in frame.columns:
        units = frame[UNIT_ID].to_numpy()[order]
        starts = index[1:][units[1:] != units[:-1]]
    return _Grid(values=values, lifecycle_starts=starts)


def _fit_window(grid: _Grid, sensor: str, origin: pd.Timestamp, settings: ForecastSettings) -> pd.DataFrame:
    """Prophet's training frame: the trailing window of `sensor` strictly before `origin` (ds, y), plus one
    0/1 level-shift column per lifecycle start inside the window (`repair_<k>`, 1 from that start on)."""
    start = origin - pd.Timedelta(days=settings.history_days)
    starts = grid.lifecycle_starts
    settled = starts[(starts > start) & (starts <= origin - pd.Timedelta(days=settings.min_lifecycle_days))]
    if len(settled):
        start = settled.max()
    series = grid.values[sensor]
    window = series[(series.index >= start) & (series.index < origin)].dropna()
    frame = pd.DataFrame({"ds": window.index, "y": window.to_numpy()})
    if len(frame):
        inside = starts[(starts > frame["ds"].iloc[0]) & (starts <= frame["ds"].iloc[-1])]
        for k, repair in enumerate(inside):
            frame[f"{REPAIR_PREFIX}{k}"] = (frame["ds"] >= repair).astype(float)
    return frame


def _seasonalities(span: pd.Timedelta, allowed: dict[str, bool] | None = None) -> dict[str, bool]:
    """Daily seasonality when the data spans >= 2 days, weekly when >= 2 weeks (and when `allowed` says so)."""
    found = {"daily": bool(span >= 2 * DAY), "weekly": bool(span >= 2 * WEEK)}
    if allowed is not None:
        found = {k: v and bool(allowed.get(k, False)) for k, v in found.items()}
    return found


def _has_lifecycle_start(grid: _Grid, origin: pd.Timestamp, last: pd.Timestamp, step: pd.Timedelta) -> bool:
    """Whether a lifecycle starts in the forecast period from `origin` to the bin `last` (or in the bin
    just before `origin`, whose values would then belong to two lifecycles)."""
    starts = grid.lifecycle_starts
    return bool(((starts > origin - step) & (starts < last + step)).any())


# ---------------------------------------------------------------------------------------------- prophet


def _prophet_class() -> type:
    """Import Prophet (heavy) and silence cmdstanpy's per-fit INFO lines."""
    from prophet import Prophet

    logger = logging.getLogger("cmdstanpy")
    if not logger.handlers:
        # cmdstanpy installs its own INFO handler (and level DEBUG) on first use unless a handler exists.
        logger.addHandler(logging.NullHandler())
    logger.setLevel(logging.WARNING)
    return Prophet


@contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Prophet samples from numpy's global RNG: seed it for reproducible bands, then restore its state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _future(model: Any, ds: pd.DatetimeIndex) -> pd.DataFrame:
    """Prophet's input frame for a forecast at `ds`: the forecast lies in the newest lifecycle, after every
    repair in the fit window, so every level-shift regressor is 1."""
    future = pd.DataFrame({"ds": ds})
    for column in model.extra_regressors:
        future[column] = 1.0
    return future


def _point_forecast(model: Any, ds: pd.DatetimeIndex) -> np.ndarray:
    """Prophet's deterministic forecast (trend + seasonality + regressors) at `ds`, without sampling."""
    prepared = model.setup_dataframe(_future(model, ds))
    trend = model.predict_trend(prepared)
    seasonal = model.predict_seasonal_components(prepared)
    return np.asarray(trend * (1 + seasonal["multiplicative_terms"]) + seasonal["additive_terms"], dtype=float)


def _predict(model: Any, ds: pd.DatetimeIndex, seed: int, scales: dict[str, float]) -> pd.DataFrame:
    """Point forecast and nested 80/95 % bands at `ds` (FORECAST_COLUMNS except `sensor`), band half-widths
    multiplied by the calibrated `scales` (level -> factor)."""
    with _seeded_numpy(seed):
        draws = model.predictive_samples(_future(model, ds))["yhat"]
    yhat = _point_forecast(model, ds)
    out = pd.DataFrame({"ds": ds, "yhat": yhat})
    lower, upper = yhat, yhat
    for level, (lo, hi) in BAND_PERCENTILES.items():
        factor = scales.get(level, 1.0)
        lower = np.minimum(lower, yhat - factor * np.maximum(yhat - np.percentile(draws, lo, axis=1), 0.0))
        upper = np.maximum(upper, yhat + factor * np.maximum(np.percentile(draws, hi, axis=1) - yhat, 0.0))
        out[f"yhat_lower_{level}"], out[f"yhat_upper_{level}"] = lower, upper
    return out


@dataclass(frozen=True)
class _Spec:
    """What every fit and forecast of one trained model shares (all of it stored in the model card)."""

    settings: ForecastSettings
    freq: str
    step: pd.Timedelta
    seasonalities: dict[str, bool]
    horizon_hours: int

    def grid(self, frame: pd.DataFrame, sensors: Sequence[str], where: str) -> _Grid:
        return _grid(frame, sensors, self.freq, where)

    def horizon(self, origin: pd.Timestamp, hours: float | None = None) -> pd.DatetimeIndex:
        """Grid points from `origin` covering `hours` (default: the trained horizon; at least one point)."""
        hours = self.horizon_hours if hours is None else hours
        return pd.date_range(origin, periods=max(1, math.ceil(pd.Timedelta(hours=hours) / self.step)), freq=self.step)

    def fit(self, grid: _Grid, sensor: str, origin: pd.Timestamp, where: str) -> Any:
        """Fit one Prophet on the trailing window of `sensor` before `origin`."""
        window = _fit_window(grid, sensor, origin, self.settings)
        if len(window) < 2:
            raise ForecastSkipped(
                f"{where}, sensor {sensor!r}: only {len(window)} value(s) in the {self.settings.history_days:g} days "
                f"before {origin}: cannot fit a forecast"
            )
        season = _seasonalities(window["ds"].iloc[-1] - window["ds"].iloc[0], self.seasonalities)
        s = self.settings
        model = _prophet_class()(
            growth=s.growth,
            changepoint_prior_scale=s.changepoint_prior_scale,
            changepoint_range=s.changepoint_range,
            seasonality_mode=s.seasonality_mode,
            seasonality_prior_scale=s.seasonality_prior_scale,
            daily_seasonality=season["daily"],
            weekly_seasonality=season["weekly"],
            yearly_seasonality=False,
            uncertainty_samples=int(s.uncertainty_samples),
        )
        for column in window.columns:
            if column.startswith(REPAIR_PREFIX):
                model.add_regressor(column, mode="additive")
        return model.fit(window)

    def fit_predict(
        self,
        grid: _Grid,
        sensor: str,
        origin: pd.Timestamp,
        where: str,
        scales: dict[str, float],
        hours: float | None = None,
    ) -> pd.DataFrame:
        """Refit `sensor` on the trailing window before `origin` and forecast from `origin`."""
        model = self.fit(grid, sensor, origin, where)
        return _predict(model, self.horizon(origin, hours), self.settings.seed, scales)


def _interval_scales(
    spec: _Spec, grid: _Grid, sensor: str, fits: Sequence[tuple[pd.Timestamp, Any]]
) -> dict[str, float]:
    """Band factors from models fitted before validation origins (split-conformal scaling): per level, the
    80 % (95 %) quantile of |actual - yhat| / band half-width on the side of the error."""
    ratios: dict[str, list[np.ndarray]] = {level: [] for level in BAND_PERCENTILES}
    for origin, model in fits:
        ds = spec.horizon(origin)
        fc = _predict(model, ds, spec.settings.seed, scales={})
        actual = grid.values[sensor].reindex(ds).to_numpy(dtype=float)
        keep = ~np.isnan(actual)
        yhat = fc["yhat"].to_numpy()[keep]
        err = actual[keep] - yhat
        for level in ratios:
            upper, lower = fc[f"yhat_upper_{level}"].to_numpy()[keep], fc[f"yhat_lower_{level}"].to_numpy()[keep]
            half = np.where(err >= 0, upper - yhat, yhat - lower)
            ratios[level].append(np.abs(err) / np.maximum(half, 1e-12))
    scales = {}
    for level, parts in ratios.items():
        r = np.concatenate(parts) if parts else np.array([])
        scales[level] = float(np.quantile(r, int(level) / 100)) if len(r) >= MIN_CALIBRATION_POINTS else 1.0
    return scales


def _backtest_origins(
    spec: _Spec, grid: _Grid, start: pd.Timestamp, end: pd.Timestamp, n_windows: int
) -> tuple[list[pd.Timestamp], int]:
    """Up to `n_windows` forecast origins spread evenly over `start`..`end` (every forecast period inside it)
    whose forecast period holds no lifecycle start, and how many candidate origins a lifecycle start excluded.

    Every grid point is a candidate origin; evenly spread picks among the valid ones keep the windows apart
    (no overlap while the period holds n_windows horizons) and away from repairs."""
    index = grid.values.index
    reach = spec.horizon(index[0])[-1] - index[0]  # origin -> last forecast bin
    candidates = index[(index >= start) & (index + reach <= end)]
    valid = [t for t in candidates if not _has_lifecycle_start(grid, t, t + reach, spec.step)]
    if not valid or n_windows < 1:
        return [], len(candidates) - len(valid)
    picks = np.unique(np.round(np.linspace(0, len(valid) - 1, min(n_windows, len(valid)))).astype(int))
    return [valid[i] for i in picks], len(candidates) - len(valid)


@dataclass
class _Candidate:
    """One candidate's validation backtest: per-sensor MAE and the models fitted before each origin."""

    spec: _Spec
    mae: dict[str, float]
    fits: dict[str, list[tuple[pd.Timestamp, Any]]]
    # Mean over sensors of MAE / MASE scale (sensors in different units weigh alike); inf if a fit failed.
    score: float
    failure: str | None = None


def _validate_candidate(
    spec: _Spec, grid: _Grid, sensors: Sequence[str], origins: Sequence[pd.Timestamp], scales: dict[str, float]
) -> _Candidate:
    """Fit `spec` before every validation origin and score its point forecasts over the horizon after it."""
    mae: dict[str, float] = {}
    fits: dict[str, list[tuple[pd.Timestamp, Any]]] = {}
    for sensor in sensors:
        errors, fits[sensor] = [], []
        for origin in origins:
            try:
                model = spec.fit(grid, sensor, origin, f"validation window at {origin}")
            except ForecastSkipped as exc:
                return _Candidate(spec, mae, fits, math.inf, failure=str(exc))
            ds = spec.horizon(origin)
            actual = grid.values[sensor].reindex(ds).to_numpy(dtype=float)
            errors.append(np.abs(actual - _point_forecast(model, ds))[~np.isnan(actual)])
            fits[sensor].append((origin, model))
        all_errors = np.concatenate(errors)
        mae[sensor] = float(all_errors.mean()) if len(all_errors) else math.nan
    normalized = [mae[s] / scales[s] for s in sensors if math.isfinite(mae[s]) and scales[s] > 0]
    return _Candidate(spec, mae, fits, float(np.mean(normalized)) if normalized else math.inf)


# ---------------------------------------------------------------------------------------------- training


def forecast_sensors(metadata_critical: Sequence[str], all_sensors: Sequence[str]) -> list[str]:
    """The sensors to forecast: the metadata's critical sensors, or every sensor when none is declared."""
    critical = list(dict.fromkeys(metadata_critical or ()))
    unknown = [s for s in critical if s not in all_sensors]
    if unknown:
        raise ValueError(
            f"critical sensor(s) {unknown} from the metadata are not among the sensors {list(all_sensors)}"
        )
    return critical or list(all_sensors)


def _validation_start(history_grid: _Grid, val_start: pd.Timestamp | None) -> pd.Timestamp:
    """Start of the validation period: `val_start`, else the last DEFAULT_VALIDATION_SHARE of the history."""
    first, last = history_grid.values.index[0], history_grid.values.index[-1]
    if val_start is None:
        return first + (last - first) * (1 - DEFAULT_VALIDATION_SHARE)
    val_start = pd.Timestamp(val_start)
    if val_start.tzinfo is not None:
        val_start = val_start.tz_convert("UTC").tz_localize(None)
    if not first < val_start <= last:
        raise ValueError(f"forecast history: val_start {val_start} is not inside the history ({first} to {last})")
    return val_start


def _select(
    specs: Sequence[_Spec],
    grid: _Grid,
    sensors: Sequence[str],
    val_start: pd.Timestamp,
    log: Log,
) -> tuple[_Candidate | None, dict[str, Any]]:
    """Backtest every candidate on the same validation origins (fitted on data before each origin only) and
    pick the lowest score; returns the winner (None when no validation window fits) and the record of it."""
    base = specs[0]
    n_windows = int(base.settings.validation_windows)
    origins, excluded = _backtest_origins(base, grid, val_start, grid.values.index[-1], n_windows)
    record: dict[str, Any] = {
        "validation_start": val_start.isoformat(),
        "origins": [o.isoformat() for o in origins],
        "origins_excluded_for_lifecycle_start": excluded,
        "score": "mean over sensors of validation MAE / in-sample seasonal-naive MAE before the validation period",
        "candidates": [],
        "chosen": None,
    }
    if not origins:
        record["reason"] = (
            f"no {base.horizon_hours} h validation window (validation_windows={n_windows}, period from {val_start}): "
            "the base settings are used as they are, with Prophet's own bands"
        )
        log(f"forecast: {record['reason']}")
        return None, record
    train_values = grid.values[grid.values.index < val_start]
    scales = {s: _mase_scale(train_values[s], base.step) for s in sensors}
    results = [_validate_candidate(spec, grid, sensors, origins, scales) for spec in specs]
    for result in results:
        record["candidates"].append(
            {
                "label": result.spec.settings.label(),
                "changes": _changes(base.settings, result.spec.settings),
                "score": result.score if math.isfinite(result.score) else None,
                "val_mae": result.mae,
                **({"failure": result.failure} if result.failure else {}),
            }
        )
        log(f"forecast: candidate {result.spec.settings.label()}: validation score {result.score:.4f}")
    best = min(results, key=lambda r: r.score)  # ties: the earlier (base-nearer) candidate
    if not math.isfinite(best.score):
        record["reason"] = "every candidate failed on a validation window: the first candidate is used as it is"
        return None, record
    record["chosen"] = best.spec.settings.label()
    log(f"forecast: chose {best.spec.settings.label()} on {len(origins)} validation window(s)")
    return best, record


def _changes(base: ForecastSettings, other: ForecastSettings) -> dict[str, Any]:
    """The fields where `other` differs from `base`."""
    b, o = asdict(base), asdict(other)
    return {k: v for k, v in o.items() if b[k] != v}


def train_sensor_forecasts(
    history: pd.DataFrame,
    sensors: Sequence[str],
    out_dir: Path,
    config: TrainingConfig,
    log: Log = print,
    *,
    val_start: pd.Timestamp | None = None,
) -> ForecastModelResult:
    """Choose forecast settings on validation windows, then fit one Prophet per sensor on the trailing window
    of `history` (train + val raw rows, in time order) into `out_dir`.

    The validation period runs from `val_start` (the first val timestamp; default: the last 15 % of the
    history) to the end of `history`. Each CANDIDATE_GRID setting (fields set in `config.extra` stay fixed)
    is backtested there at `validation_windows` origins, fitted on the data before each origin only; the
    lowest mean validation MASE wins, and its validation forecasts calibrate the interval widths."""
    start_time = time.perf_counter()
    settings = ForecastSettings.from_config(config)
    sensors = list(dict.fromkeys(sensors))
    where = "forecast history"
    if not sensors:
        raise ForecastSkipped(f"{where}: no sensors to forecast")
    if history.empty:
        raise ForecastSkipped(f"{where}: no rows: nothing to forecast")
    step_seconds = infer_step_seconds(_timestamps(history, where), where)
    freq, step = _model_step(step_seconds)
    grid = _grid(history, sensors, freq, where)
    first, last = grid.values.index[0], grid.values.index[-1]
    fixed = ForecastSettings.overrides(config)
    candidates = settings.candidates(fixed) if settings.validation_windows else [settings]
    specs = [
        _Spec(
            settings=candidate,
            freq=freq,
            step=step,
            seasonalities=_seasonalities(min(last - first, pd.Timedelta(days=candidate.history_days))),
            horizon_hours=int(config.forecast_hours),
        )
        for candidate in candidates
    ]
    log(
        f"forecast: {len(sensors)} sensor(s), raw step {step_seconds:g} s -> grid {freq!r}, "
        f"{len(specs)} candidate setting(s)"
    )
    chosen, selection = _select(specs, grid, sensors, _validation_start(grid, val_start), log)
    spec = chosen.spec if chosen else specs[0]
    from prophet.serialize import model_to_json

    out_dir = Path(out_dir)
    (out_dir / MODELS_SUBDIR).mkdir(parents=True, exist_ok=True)
    origin = last + step
    files: dict[str, str] = {}
    scales: dict[str, dict[str, float]] = {}
    window_hours = 0.0
    for i, sensor in enumerate(sensors):
        t = time.perf_counter()
        model = spec.fit(grid, sensor, origin, where)
        fit_seconds = time.perf_counter() - t
        files[sensor] = f"{MODELS_SUBDIR}/{i:02d}.json"
        (out_dir / files[sensor]).write_text(model_to_json(model))
        window_hours = max(window_hours, (origin - model.history["ds"].iloc[0]) / pd.Timedelta(hours=1))
        scales[sensor] = _interval_scales(spec, grid, sensor, chosen.fits[sensor] if chosen else [])
        log(
            f"forecast: sensor {i + 1}/{len(sensors)} {sensor}: {len(model.history)} points fitted in "
            f"{fit_seconds:.2f} s, interval factors {', '.join(f'{k} %: {v:.2f}' for k, v in scales[sensor].items())}"
        )
    card = {
        "model_type": TIMESERIES,
        "sensors": sensors,
        "files": files,
        "freq": freq,
        "step_seconds": step_seconds,
        "model_step_seconds": step.total_seconds(),
        "horizon_hours": spec.horizon_hours,
        "history_hours": window_hours,
        "history_end": last.isoformat(),
        "seasonalities": spec.seasonalities,
        "interval_scales": scales,
        "settings": asdict(spec.settings),
        "selection": selection,
    }
    (out_dir / MODEL_CARD).write_text(json.dumps(card, indent=1))
    size = size_mb(out_dir)
    seconds = time.perf_counter() - start_time
    log(f"forecast: wrote {len(sensors)} model(s) to {out_dir} ({size:.2f} MB) in {seconds:.1f} s")
    return ForecastModelResult(
        path=out_dir,
        size_mb=size,
        train_seconds=seconds,
        sensors=sensors,
        freq=freq,
        history_hours=window_hours,
        horizon_hours=spec.horizon_hours,
        seasonalities=spec.seasonalities,
        step_seconds=step_seconds,
        settings=asdict(spec.settings),
        selection=selection,
    )


# ---------------------------------------------------------------------------------------------- prediction


class SensorForecaster:
    """Loaded forecast models: `forecast()` from the stored fits, or `forecast(recent)` refitted on new rows."""

    def __init__(self, path: Path, card: dict[str, Any], models: dict[str, Any]):
        self.path = Path(path)
        self.card = card
        self.models = models
        self.sensors: list[str] = list(card["sensors"])
        self.interval_scales: dict[str, dict[str, float]] = card["interval_scales"]
        self.history_end = pd.Timestamp(card["history_end"])
        self.spec = _Spec(
            settings=ForecastSettings(**card["settings"]),
            freq=card["freq"],
            step=pd.Timedelta(seconds=card["model_step_seconds"]),
            seasonalities=dict(card["seasonalities"]),
            horizon_hours=int(card["horizon_hours"]),
        )

    def forecast(self, recent: pd.DataFrame | None = None, hours: int | None = None) -> pd.DataFrame:
        """Forecast every sensor for `hours` (default: the trained horizon).

        Without `recent`, the stored models forecast from the end of the training history. With `recent` (raw
        rows: timestamp, sensors, optional unit_id), each sensor is refitted on the trailing window of `recent`
        and the forecast starts at the first grid point after its last timestamp.
        Columns: sensor, ds, yhat, yhat_lower_80, yhat_upper_80, yhat_lower_95, yhat_upper_95.
        """
        if hours is not None and not hours > 0:
            raise ValueError(f"forecast hours must be > 0, got {hours!r}")
        seed = self.spec.settings.seed
        parts = []
        if recent is None:
            ds = self.spec.horizon(self.history_end + self.spec.step, hours)
            for sensor in self.sensors:
                fc = _predict(self.models[sensor], ds, seed, self.interval_scales[sensor])
                parts.append(fc.assign(sensor=sensor))
        else:
            where = "recent rows"
            if recent.empty:
                raise ValueError(f"{where}: no rows to forecast from")
            grid = self.spec.grid(recent, self.sensors, where)
            origin = grid.values.index[-1] + self.spec.step
            for sensor in self.sensors:
                fc = self.spec.fit_predict(grid, sensor, origin, where, self.interval_scales[sensor], hours)
                parts.append(fc.assign(sensor=sensor))
        return pd.concat(parts, ignore_index=True)[FORECAST_COLUMNS]


def load_forecaster(path: Path) -> SensorForecaster:
    """Load a forecast model directory written by `train_sensor_forecasts`."""
    path = Path(path)
    card_file = path / MODEL_CARD
    if not card_file.is_file():
        raise FileNotFoundError(f"no forecast model at {path}: {MODEL_CARD} is missing")
    card = json.loads(card_file.read_text())
    _prophet_class()
    from prophet.serialize import model_from_json

    models = {}
    for sensor, name in card["files"].items():
        file = path / name
        if not file.is_file():
            raise FileNotFoundError(f"forecast model {path}: file {name} for sensor {sensor!r} is missing")
        models[sensor] = model_from_json(file.read_text())
    return SensorForecaster(path, card, models)


# ---------------------------------------------------------------------------------------------- evaluation


def _seasonal_naive(values: pd.Series, ds: pd.DatetimeIndex, origin: pd.Timestamp, step: pd.Timedelta) -> np.ndarray:
    """Seasonal-naive forecast at `ds`: the value one season (24 h, or one step if coarser) earlier, repeated
    for horizons beyond one season, so only values before `origin` are used."""
    season = max(DAY, step)
    seasons_back = np.ceil(((ds - origin) + step) / season).astype(int)
    return values.reindex(ds - season * seasons_back).to_numpy(dtype=float)


def _mase_scale(values: pd.Series, step: pd.Timedelta) -> float:
    """In-sample MAE of the seasonal-naive forecast over the history (the standard MASE denominator)."""
    season = max(DAY, step)
    errors = (values - values.shift(freq=season).reindex(values.index)).abs().dropna()
    return float(errors.mean()) if len(errors) else float("nan")


def _errors(actual: np.ndarray, predicted: np.ndarray, scale: float) -> dict[str, float]:
    """MAE, sMAPE (%) and MASE of one forecast against the actual values."""
    err = np.abs(actual - predicted)
    denom = np.abs(actual) + np.abs(predicted)
    smape = np.divide(2 * err, denom, out=np.zeros_like(err), where=denom > 0)
    mae = float(err.mean())
    return {"mae": mae, "smape": float(100 * smape.mean()), "mase": mae / scale if scale > 0 else float("nan")}


def _window_picture(sensor: str, grid: _Grid, origin: pd.Timestamp, fc: pd.DataFrame) -> str:
    """History tail, forecast with 80/95 % bands and the actual values of one backtest window."""
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    values = grid.values[sensor]
    tail = values[(values.index >= origin - pd.Timedelta(hours=PLOT_HISTORY_HOURS)) & (values.index < origin)]
    actual = values.reindex(fc["ds"])
    fig, ax = new_figure(8.0, 3.5)
    ax.plot(tail.index, tail.to_numpy(), color="0.4", lw=1, label="history")
    ax.fill_between(fc["ds"], fc["yhat_lower_95"], fc["yhat_upper_95"], color="tab:blue", alpha=0.15, label="95 %")
    ax.fill_between(fc["ds"], fc["yhat_lower_80"], fc["yhat_upper_80"], color="tab:blue", alpha=0.3, label="80 %")
    ax.plot(fc["ds"], fc["yhat"], color="tab:blue", lw=1.5, label="forecast")
    ax.plot(fc["ds"], actual.to_numpy(), color="black", lw=1, ls="--", marker=".", ms=3, label="actual")
    ax.axvline(origin, color="0.6", lw=0.8)
    ax.set_title(f"{sensor}: last backtest window from {origin:%Y-%m-%d %H:%M}")
    ax.legend(loc="upper left", fontsize=7, ncol=5)
    fig.autofmt_xdate()
    return figure_markdown(fig, f"forecast {sensor}")


def _metric_table(per_sensor: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]) -> str:
    rows = [
        "| sensor | MAE | sMAPE % | MASE | naive MASE | coverage 80 % | coverage 95 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for sensor, m in per_sensor.items():
        rows.append(
            f"| {sensor} | {m['mae']:.3g} | {m['smape']:.2f} | {m['mase']:.3f} | {baseline[sensor]['mase']:.3f} "
            f"| {m['coverage_80']:.0%} | {m['coverage_95']:.0%} |"
        )
    return "\n".join(rows)


def _mean_over_sensors(table: dict[str, dict[str, float]], key: str) -> float:
    values = [row[key] for row in table.values() if math.isfinite(row[key])]
    return float(np.mean(values)) if values else float("nan")


def evaluate_sensor_forecasts(
    model_dir_or_result: Path | ForecastModelResult,
    history: pd.DataFrame,
    test: pd.DataFrame,
    *,
    n_windows: int = 10,
) -> Evaluation:
    """Rolling-origin backtest over TEST: at each origin refit on the past only, forecast the horizon, compare
    with the actual values and with the seasonal-naive baseline."""
    if n_windows < 1:
        raise ValueError(f"n_windows must be >= 1, got {n_windows}")
    path = model_dir_or_result.path if isinstance(model_dir_or_result, ForecastModelResult) else model_dir_or_result
    forecaster = load_forecaster(Path(path))
    spec, sensors = forecaster.spec, forecaster.sensors
    if test.empty:
        return Evaluation.skipped(TIMESERIES, "test split is empty: nothing to backtest")
    history_end, test_ts = _timestamps(history, "forecast history").max(), _timestamps(test, "test split")
    if test_ts.min() <= history_end:
        raise ValueError(
            f"test split starts at {test_ts.min()} but the history (train + val) runs to {history_end}: "
            "the test rows must come after the history"
        )
    history_grid = spec.grid(history, sensors, "forecast history")
    grid = spec.grid(pd.concat([history, test], ignore_index=True), sensors, "history + test")
    origins, excluded = _backtest_origins(spec, grid, test_ts.min(), test_ts.max(), n_windows)
    if not origins:
        period = f"test split ({test_ts.min()} to {test_ts.max()})"
        hours = spec.horizon_hours
        problem = f"has a lifecycle start in every {hours} h window" if excluded else f"is shorter than {hours} h"
        return Evaluation.skipped(TIMESERIES, f"{period} {problem}: nothing to backtest")

    per_sensor: dict[str, dict[str, float]] = {}
    per_sensor_baseline: dict[str, dict[str, float]] = {}
    pictures: dict[str, str] = {}
    for sensor in sensors:
        actual_all, yhat_all, naive_all = [], [], []
        inside: dict[str, list[np.ndarray]] = {level: [] for level in BAND_PERCENTILES}
        for origin in origins:
            fc = spec.fit_predict(grid, sensor, origin, f"backtest at {origin}", forecaster.interval_scales[sensor])
            ds = pd.DatetimeIndex(fc["ds"])
            actual = grid.values[sensor].reindex(ds).to_numpy(dtype=float)
            naive = _seasonal_naive(grid.values[sensor], ds, origin, spec.step)
            # Model and baseline are scored on the same points: those with an actual and a baseline value.
            keep = ~np.isnan(actual) & ~np.isnan(naive)
            actual_all.append(actual[keep])
            yhat_all.append(fc["yhat"].to_numpy()[keep])
            naive_all.append(naive[keep])
            for level, flags in inside.items():
                lower, upper = fc[f"yhat_lower_{level}"].to_numpy()[keep], fc[f"yhat_upper_{level}"].to_numpy()[keep]
                flags.append((actual[keep] >= lower) & (actual[keep] <= upper))
            if origin == origins[-1] and len(pictures) < MAX_PLOTTED_SENSORS:
                pictures[f"forecast {sensor}"] = _window_picture(sensor, grid, origin, fc)
        actual, yhat, naive = (np.concatenate(parts) for parts in (actual_all, yhat_all, naive_all))
        if len(actual) == 0:
            continue
        scale = _mase_scale(history_grid.values[sensor], spec.step)
        per_sensor[sensor] = _errors(actual, yhat, scale)
        per_sensor_baseline[sensor] = _errors(actual, naive, scale)
        for level, flags in inside.items():
            per_sensor[sensor][f"coverage_{level}"] = float(np.concatenate(flags).mean())
        per_sensor[sensor]["mase_scale"] = scale
        per_sensor[sensor]["n_points"] = float(len(actual))
    if not per_sensor:
        return Evaluation.skipped(TIMESERIES, "no actual test values inside the backtest windows")

    metrics = {k: _mean_over_sensors(per_sensor, k) for k in ("mae", "smape", "mase", "coverage_80", "coverage_95")}
    metrics["n_windows"] = float(len(origins))
    return Evaluation(
        model_type=TIMESERIES,
        metrics=metrics,
        baseline={k: _mean_over_sensors(per_sensor_baseline, k) for k in ("mae", "smape", "mase")},
        baseline_name="seasonal naive (value 24 h earlier)",
        details={
            "per_sensor": per_sensor,
            "per_sensor_baseline": per_sensor_baseline,
            "origins": [o.isoformat() for o in origins],
            "origins_excluded_for_lifecycle_start": excluded,
            "horizon_hours": spec.horizon_hours,
            "freq": spec.freq,
            "interval_scales": forecaster.interval_scales,
            "settings": asdict(spec.settings),
            "selection": forecaster.card.get("selection"),
        },
        pictures={"per-sensor backtest metrics": _metric_table(per_sensor, per_sensor_baseline), **pictures},
    )
