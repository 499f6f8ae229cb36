"""Series on a forecast grid, and the two forecasters that run on it: Prophet and the seasonal-naive forecast.

Shared by training, evaluation and the edge runtime; numpy/pandas only (Prophet is imported when fitted).

Time axis
    Clock data keeps its datetimes. Cycle and step counters are laid on a synthetic clock (value v -> 2000-01-01
    + v seconds) because Prophet needs datetimes; no daily or weekly seasonality is ever fitted on them.
Grid
    The grid step is the raw step, or coarser so that the horizon spans about 24 points: hourly means for
    clock data sampled every hour or faster with the default 24 h horizon (bins labelled by their start: the
    bin 10:00 holds 10:00-10:59), one point per cycle for cycle data. Empty bins stay missing.
Segments
    Units that follow each other in time (a machine's lifecycles) form ONE series; each lifecycle start is a
    repair the fit window can adapt to (a 0/1 level-shift regressor, or a fresh window once the new lifecycle
    has run `min_lifecycle_points`). Units that run side by side or share an origin (a fleet, engines counting
    cycles from 1) are separate series: each is fitted and forecast on its own rows only.
Seasonal naive
    The value one season earlier (24 h for clock grids finer than a day, else one grid step: the last value),
    repeated for leads beyond one season; its bands come from the empirical quantiles of its own errors per
    lead on the history (split-conformal), so they need no model at all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.config import available_cpus
from pdm_pipeline.core.schema import TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import is_clock, seconds_per_unit, units_share_origin
from pdm_pipeline.families.forecast.settings import ForecastSettings

INDEX_ORIGIN = pd.Timestamp("2000-01-01")
DAY = pd.Timedelta(days=1)
WEEK = pd.Timedelta(days=7)
POINTS_PER_HORIZON = 24
# Interval level -> percentiles of the predictive samples that bound it (narrowest level first).
BAND_PERCENTILES: dict[str, tuple[float, float]] = {"80": (10.0, 90.0), "95": (2.5, 97.5)}
FORECAST_COLUMNS = ["sensor", "ds", "yhat", "yhat_lower_80", "yhat_upper_80", "yhat_lower_95", "yhat_upper_95"]
REPAIR_PREFIX = "repair_"


class ForecastSkipped(Exception):
    """Forecasting cannot run for this data; the message is the user-facing reason."""


def axis_datetimes(frame: pd.DataFrame, time_unit: str, where: str) -> pd.Series:
    """The `timestamp` column as tz-naive datetimes (cycle/step counters on the synthetic clock)."""
    if TIMESTAMP not in frame.columns:
        raise ForecastSkipped(f"{where}: no {TIMESTAMP!r} column: nothing to forecast")
    column = frame[TIMESTAMP]
    if is_clock(time_unit):
        ts = pd.to_datetime(column)
        if ts.dt.tz is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    else:
        ts = INDEX_ORIGIN + pd.to_timedelta(pd.to_numeric(column).astype(float), unit="s")
    if ts.isna().any():
        raise ValueError(f"{where}: column {TIMESTAMP!r} has {int(ts.isna().sum())} missing value(s)")
    return ts.astype("datetime64[ns]")


def to_axis(ds: pd.DatetimeIndex | pd.Series, time_unit: str) -> Any:
    """Grid datetimes back in the data's own terms (cycle numbers for index axes)."""
    if is_clock(time_unit):
        return ds
    return ((pd.DatetimeIndex(ds) - INDEX_ORIGIN) / pd.Timedelta(seconds=1)).to_numpy()


def raw_step(frame: pd.DataFrame, time_unit: str, where: str) -> pd.Timedelta:
    """Median positive step between consecutive rows of the same unit (on the axis clock)."""
    ts = axis_datetimes(frame, time_unit, where).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    units = frame[UNIT_ID].astype(str).to_numpy() if UNIT_ID in frame.columns else np.zeros(len(frame))
    order = np.lexsort((ts, units))
    same = units[order][1:] == units[order][:-1]
    diffs = np.diff(ts[order])[same]
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        raise ForecastSkipped(f"{where}: fewer than 2 distinct timestamps in any unit: cannot infer a step")
    return pd.Timedelta(int(np.median(diffs)), unit="ns")


def grid_step(raw: pd.Timedelta, horizon: pd.Timedelta, time_unit: str) -> pd.Timedelta:
    """The raw step, or a whole multiple of it so that the horizon spans about POINTS_PER_HORIZON points;
    hourly for clock data sampled at most hourly with a horizon of a day or more."""
    if is_clock(time_unit) and raw <= pd.Timedelta(hours=1) and horizon >= DAY:
        return pd.Timedelta(hours=1)
    multiple = max(1, math.floor((horizon / POINTS_PER_HORIZON) / raw))
    return raw * multiple


def default_horizon(time_unit: str, configured: float | None, raw: pd.Timedelta) -> pd.Timedelta:
    """The forecast horizon on the axis clock: configured (in the data's unit), else 24 h / 24 raw steps."""
    if configured is not None:
        seconds = seconds_per_unit(time_unit)
        return pd.Timedelta(seconds=float(configured) * (seconds if seconds else 1.0))
    return pd.Timedelta(hours=24) if is_clock(time_unit) else raw * POINTS_PER_HORIZON


@dataclass(frozen=True)
class Segment:
    """One series: sensor values on the grid (NaN where a bin is empty) and the lifecycle starts inside it."""

    key: str
    values: pd.DataFrame
    lifecycle_starts: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([]))


@dataclass(frozen=True)
class Spec:
    """What every fit and forecast of one trained model shares (stored in the model card)."""

    time_unit: str
    step: pd.Timedelta
    horizon_points: int
    seasonalities: dict[str, bool]
    method: str
    settings: ForecastSettings
    # Seasonal-naive season (a whole number of grid steps).
    season: pd.Timedelta

    def horizon(self, origin: pd.Timestamp) -> pd.DatetimeIndex:
        return pd.date_range(origin, periods=self.horizon_points, freq=self.step)

    def to_card(self) -> dict[str, Any]:
        return {
            "time_unit": self.time_unit,
            "step_seconds": self.step.total_seconds(),
            "horizon_points": self.horizon_points,
            "seasonalities": self.seasonalities,
            "method": self.method,
            "settings": self.settings.as_dict(),
            "season_seconds": self.season.total_seconds(),
        }

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> Spec:
        return cls(
            time_unit=card["time_unit"],
            step=pd.Timedelta(seconds=card["step_seconds"]),
            horizon_points=int(card["horizon_points"]),
            seasonalities=dict(card["seasonalities"]),
            method=card["method"],
            settings=ForecastSettings(**card["settings"]),
            season=pd.Timedelta(seconds=card["season_seconds"]),
        )


MIN_SEASONS_OF_HISTORY = 2  # a daily season needs two days of history: one day back for a day of errors


def season_for(step: pd.Timedelta, time_unit: str, span: pd.Timedelta | None = None) -> pd.Timedelta:
    """24 h for clock grids finer than a day (a whole number of steps) whose history `span` covers at least
    MIN_SEASONS_OF_HISTORY days, else one step (the last value): a season the history does not repeat gives the
    seasonal-naive forecast nothing to copy and its MASE scale no error to measure."""
    if is_clock(time_unit) and step < DAY and (DAY / step).is_integer() and (
            span is None or span >= MIN_SEASONS_OF_HISTORY * DAY):
        return DAY
    return step


def segments(frame: pd.DataFrame, sensors: Sequence[str], time_unit: str, step: pd.Timedelta, where: str) -> list[Segment]:
    """Raw rows -> series on the grid: one (lifecycles in sequence) or one per unit (units side by side)."""
    missing = [s for s in sensors if s not in frame.columns]
    if missing:
        raise ValueError(f"{where}: sensor column(s) {missing} not found; columns are {list(frame.columns)}")
    ts = axis_datetimes(frame, time_unit, where)
    parallel = UNIT_ID in frame.columns and units_share_origin(frame, time_unit)
    keys = frame[UNIT_ID].astype(str).to_numpy() if UNIT_ID in frame.columns else np.full(len(frame), "")
    groups = [(k, np.flatnonzero(keys == k)) for k in pd.unique(keys)] if parallel else [("", np.arange(len(frame)))]
    out = []
    for key, rows in groups:
        order = rows[np.argsort(ts.to_numpy()[rows], kind="stable")]
        index = pd.DatetimeIndex(ts.to_numpy()[order])
        raw = pd.DataFrame({s: frame[s].to_numpy(dtype=float)[order] for s in sensors}, index=index)
        values = raw.resample(step, origin="epoch").mean()
        values.index.name = "ds"
        starts = pd.DatetimeIndex([])
        if UNIT_ID in frame.columns and not parallel:
            units = keys[order]
            starts = index[1:][units[1:] != units[:-1]]
            # A lifecycle starts at the first bin wholly after the repair (ceil): the bin that straddles it averages
            # both lifecycles and stays on the old side, so a post-repair fit window and level shift see clean
            # bins only (flooring put the straddling bin first in the new lifecycle: test MASE 0.815 instead of
            # 0.779 over 40 windows on a sample compressor).
            starts = pd.DatetimeIndex(starts).ceil(step) if len(starts) else starts
        out.append(Segment(str(key), values, starts))
    return out


def seasonalities(span: pd.Timedelta, time_unit: str, step: pd.Timedelta, allowed: dict[str, bool] | None = None) -> dict[str, bool]:
    """Daily seasonality for clock grids finer than a day spanning >= 2 days, weekly when >= 2 weeks."""
    clock = is_clock(time_unit) and step < DAY
    found = {"daily": bool(clock and span >= 2 * DAY), "weekly": bool(clock and span >= 2 * WEEK)}
    if allowed is not None:
        found = {k: v and bool(allowed.get(k, False)) for k, v in found.items()}
    return found


# ---------------------------------------------------------------------------------------------- Prophet


_PROPHET_CLASS: type | None = None


def prophet_class() -> type:
    """Prophet (imported here: heavy) with a faster `regressor_column_matrix`, and cmdstanpy's per-fit INFO
    lines silenced."""
    global _PROPHET_CLASS
    if _PROPHET_CLASS is not None:
        return _PROPHET_CLASS
    try:
        from prophet import Prophet
    except ImportError:
        raise ImportError("this forecast model needs Prophet: pip install prophet") from None
    logger = logging.getLogger("cmdstanpy")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.setLevel(logging.WARNING)

    class FastComponentsProphet(Prophet):
        """Prophet whose component matrix is built with numpy instead of `pd.crosstab` + `pd.concat`.

        Prophet builds this small 0/1 table (feature column x component) on every fit and every prediction;
        its pandas version costs ~11 ms a call, ~3 s of a full-size machine's ~110 fits and forecasts. The
        result is the same DataFrame (values, dtype, index, column order: checked against Prophet's own in the
        tests), so models fitted here load and predict with plain Prophet."""

        def regressor_column_matrix(self, seasonal_features: pd.DataFrame, modes: dict) -> tuple[pd.DataFrame, dict]:
            return fast_component_matrix(self, seasonal_features, modes)

    _PROPHET_CLASS = FastComponentsProphet
    return _PROPHET_CLASS


def fast_component_matrix(model: Any, seasonal_features: pd.DataFrame, modes: dict) -> tuple[pd.DataFrame, dict]:
    """Prophet.regressor_column_matrix (prophet 1.1-1.5), without pandas reshaping: see FastComponentsProphet."""
    pairs = [(i, str(name).split("_delim_")[0]) for i, name in enumerate(seasonal_features.columns)]

    def add_group(name: str, group: Any) -> None:
        members = set(group)
        cols = list(dict.fromkeys(col for col, component in pairs if component in members))
        pairs.extend((col, name) for col in cols)

    if model.train_holiday_names is not None:
        add_group("holidays", model.train_holiday_names.unique())
    for mode in ("additive", "multiplicative"):
        add_group(mode + "_terms", modes[mode])
        add_group("extra_regressors_" + mode, [r for r, props in model.extra_regressors.items() if props["mode"] == mode])
        modes[mode].append(mode + "_terms")
        modes[mode].append("extra_regressors_" + mode)
    modes[model.holidays_mode].append("holidays")
    rows = sorted({col for col, _ in pairs})
    names = sorted({component for _, component in pairs})
    row_of = {col: k for k, col in enumerate(rows)}
    name_of = {name: k for k, name in enumerate(names)}
    counts = np.zeros((len(rows), len(names)), dtype=np.int64)
    for col, component in pairs:
        counts[row_of[col], name_of[component]] += 1
    component_cols = pd.DataFrame(
        counts, index=pd.Index(rows, name="col"), columns=pd.Index(names, dtype=object, name="component")
    )
    for name in ("additive_terms", "multiplicative_terms"):
        if name not in component_cols:
            component_cols[name] = 0
    component_cols = component_cols.drop("zeros", axis=1, errors="ignore")
    if max(component_cols["additive_terms"] + component_cols["multiplicative_terms"]) > 1:
        raise Exception("A bug occurred in seasonal components.")
    if model.train_component_cols is not None:
        component_cols = component_cols[model.train_component_cols.columns]
        if not component_cols.equals(model.train_component_cols):
            raise Exception("A bug occurred in constructing regressors.")
    return component_cols, modes


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Prophet samples from numpy's global RNG: seed it for reproducible bands, then restore its state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def fit_window(segment: Segment, sensor: str, origin: pd.Timestamp, spec: Spec) -> pd.DataFrame:
    """Prophet's training frame: the trailing window of `sensor` strictly before `origin` (ds, y), plus one 0/1
    level-shift column per lifecycle start inside the window (`repair_<k>`, 1 from that start on)."""
    settings = spec.settings
    start = origin - spec.step * settings.history_points
    starts = segment.lifecycle_starts
    settled = starts[(starts > start) & (starts <= origin - spec.step * settings.min_lifecycle_points)]
    if len(settled):
        start = settled.max()
    series = segment.values[sensor]
    window = series[(series.index >= start) & (series.index < origin)].dropna()
    frame = pd.DataFrame({"ds": window.index, "y": window.to_numpy()})
    if len(frame):
        inside = starts[(starts > frame["ds"].iloc[0]) & (starts <= frame["ds"].iloc[-1])]
        for k, repair in enumerate(inside):
            frame[f"{REPAIR_PREFIX}{k}"] = (frame["ds"] >= repair).astype(float)
    return frame


def fit_prophet(segment: Segment, sensor: str, origin: pd.Timestamp, spec: Spec, where: str) -> Any:
    window = fit_window(segment, sensor, origin, spec)
    if len(window) < 2:
        raise ForecastSkipped(
            f"{where}, sensor {sensor!r}: only {len(window)} value(s) in the {spec.settings.history_points} grid "
            f"points before {origin}: cannot fit a forecast"
        )
    season = seasonalities(window["ds"].iloc[-1] - window["ds"].iloc[0], spec.time_unit, spec.step, spec.seasonalities)
    s = spec.settings
    model = prophet_class()(
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


FitJob = tuple[Segment, str, pd.Timestamp, Spec, str]


def fit_prophet_all(jobs: Sequence[FitJob]) -> list[Any]:
    """`fit_prophet(*job)` for every job, in job order, on up to one thread per CPU.

    Each fit is mostly a CmdStan optimisation in its own process, which the calling thread only waits for, so
    threads run the fits side by side (as Prophet's own cross_validation(parallel="threads") does); a fit is
    deterministic, so the models are the ones a loop would make. A ForecastSkipped (or any error) of the first
    failing job in job order is raised, as a loop would raise it, and the fits not started yet are dropped."""
    from concurrent.futures import ThreadPoolExecutor

    workers = min(available_cpus(), len(jobs))
    if workers <= 1:
        return [fit_prophet(*job) for job in jobs]
    prophet_class()  # import and define it once, before the threads ask for it
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prophet-fit") as pool:
        futures = [pool.submit(fit_prophet, *job) for job in jobs]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _future(model: Any, ds: pd.DatetimeIndex) -> pd.DataFrame:
    """Prophet's input at `ds`: the forecast lies after every repair in the fit window (regressors = 1)."""
    future = pd.DataFrame({"ds": ds})
    for column in model.extra_regressors:
        future[column] = 1.0
    return future


def prophet_point(model: Any, ds: pd.DatetimeIndex) -> np.ndarray:
    """Prophet's deterministic forecast (trend + seasonality + regressors) at `ds`, without sampling."""
    prepared = model.setup_dataframe(_future(model, ds))
    trend = model.predict_trend(prepared)
    seasonal = model.predict_seasonal_components(prepared)
    return np.asarray(trend * (1 + seasonal["multiplicative_terms"]) + seasonal["additive_terms"], dtype=float)


def prophet_forecast(model: Any, ds: pd.DatetimeIndex, seed: int, scales: dict[str, float]) -> pd.DataFrame:
    """Point forecast and nested 80/95 % bands at `ds`, band half-widths multiplied by `scales` (level -> factor)."""
    with seeded_numpy(seed):
        draws = model.predictive_samples(_future(model, ds))["yhat"]
    yhat = prophet_point(model, ds)
    out = pd.DataFrame({"ds": ds, "yhat": yhat})
    lower, upper = yhat, yhat
    for level, (lo, hi) in BAND_PERCENTILES.items():
        factor = scales.get(level, 1.0)
        lower = np.minimum(lower, yhat - factor * np.maximum(yhat - np.percentile(draws, lo, axis=1), 0.0))
        upper = np.maximum(upper, yhat + factor * np.maximum(np.percentile(draws, hi, axis=1) - yhat, 0.0))
        out[f"yhat_lower_{level}"], out[f"yhat_upper_{level}"] = lower, upper
    return out


# ---------------------------------------------------------------------------------------------- seasonal naive


def naive_point(values: pd.Series, ds: pd.DatetimeIndex, origin: pd.Timestamp, spec: Spec) -> np.ndarray:
    """Seasonal-naive forecast at `ds`: the value one season earlier, repeated for leads beyond one season, so
    only values before `origin` are used; a missing value falls back to the last value before `origin`."""
    season = spec.season
    seasons_back = np.ceil(((ds - origin) + spec.step) / season).astype(int)
    out = values.reindex(ds - season * seasons_back).to_numpy(dtype=float)
    if np.isnan(out).any():
        before = values[values.index < origin].dropna()
        if len(before):
            out = np.where(np.isnan(out), float(before.iloc[-1]), out)
    return out


def naive_errors(values: pd.Series, spec: Spec, end: pd.Timestamp, max_origins: int = 200) -> np.ndarray:
    """|error| of the seasonal-naive forecast per lead (origins x leads) over the history before `end`."""
    index = values.index[values.index < end]
    n = spec.horizon_points
    season_points = int(round(spec.season / spec.step))
    candidates = index[season_points + 1: len(index) - n + 1]
    if len(candidates) == 0:
        return np.empty((0, n))
    picks = candidates[np.unique(np.linspace(0, len(candidates) - 1, min(max_origins, len(candidates))).astype(int))]
    rows = []
    for origin in picks:
        ds = spec.horizon(origin)
        actual = values.reindex(ds).to_numpy(dtype=float)
        rows.append(np.abs(actual - naive_point(values, ds, origin, spec)))
    return np.vstack(rows)


def naive_half_widths(errors: np.ndarray, horizon_points: int) -> dict[str, list[float]]:
    """Per level and lead: the 80 % / 95 % quantile of |error| (conformal bands), non-decreasing with the lead."""
    out: dict[str, list[float]] = {}
    for level in BAND_PERCENTILES:
        q = int(level) / 100.0
        widths = []
        for lead in range(horizon_points):
            column = errors[:, lead] if errors.size else np.array([])
            column = column[np.isfinite(column)]
            widths.append(float(np.quantile(column, q)) if len(column) else float("nan"))
        widths = np.fmax.accumulate(np.nan_to_num(np.array(widths), nan=np.nanmax(widths) if np.isfinite(widths).any() else 0.0))
        out[level] = [float(w) for w in widths]
    return out


def naive_forecast(values: pd.Series, origin: pd.Timestamp, spec: Spec, half_widths: dict[str, list[float]]) -> pd.DataFrame:
    ds = spec.horizon(origin)
    yhat = naive_point(values, ds, origin, spec)
    out = pd.DataFrame({"ds": ds, "yhat": yhat})
    for level in BAND_PERCENTILES:
        width = np.asarray(half_widths[level][: len(ds)], dtype=float)
        out[f"yhat_lower_{level}"], out[f"yhat_upper_{level}"] = yhat - width, yhat + width
    return out


def in_sample_naive_mae(values: pd.Series, spec: Spec) -> float:
    """In-sample MAE of the seasonal-naive (one season back) forecast: the MASE denominator."""
    errors = (values - values.shift(freq=spec.season).reindex(values.index)).abs().dropna()
    return float(errors.mean()) if len(errors) else float("nan")


def has_lifecycle_start(segment: Segment, origin: pd.Timestamp, last: pd.Timestamp, step: pd.Timedelta) -> bool:
    """Whether a repair falls in the forecast period from `origin` to the bin `last` (or in the bin before it).

    A lifecycle start s is the first bin wholly after its repair, so the repair lies in (s - step, s]."""
    starts = segment.lifecycle_starts
    return bool(((starts > origin - step) & (starts < last + 2 * step)).any())


Bounds = list[tuple[pd.Timestamp, pd.Timestamp] | None]


def split_bounds(segments_: Sequence[Segment], rows: pd.DataFrame, time_unit: str, step: pd.Timedelta,
                 where: str) -> Bounds:
    """Units side by side: per segment, the first and last grid bin (floored, as a single series' split start)
    holding a row of that segment's unit in `rows` (one split: val or test); None for a unit without such rows.
    Each unit counts time from its own origin, so one start for all units would not separate the splits."""
    if rows.empty or UNIT_ID not in rows.columns:
        return [None] * len(segments_)
    ts = pd.Series(axis_datetimes(rows, time_unit, where).to_numpy(), index=rows[UNIT_ID].astype(str).to_numpy())
    first, last = ts.groupby(level=0).min(), ts.groupby(level=0).max()
    return [(pd.Timestamp(first[s.key]).floor(step), pd.Timestamp(last[s.key]).floor(step)) if s.key in first.index
            else None for s in segments_]


def origins(
    segments_: Sequence[Segment], spec: Spec, start: pd.Timestamp | None, n_windows: int, min_history_points: int,
    bounds: Bounds | None = None,
) -> tuple[list[tuple[int, pd.Timestamp]], int]:
    """Up to `n_windows` (segment, origin) pairs spread evenly over the candidates: grid points at or after
    `start` (None: anywhere) with `min_history_points` of the segment before them, the whole horizon inside the
    segment and no lifecycle start in it. With `bounds` (one per segment, see `split_bounds`), a segment's
    windows lie wholly inside its (first, last) bins, and a segment whose bounds are None gives none (the data
    before `first` is still history a forecast may use). Returns them and how many a lifecycle start excluded."""
    reach = spec.step * (spec.horizon_points - 1)
    valid: list[tuple[int, pd.Timestamp]] = []
    excluded = 0
    for i, segment in enumerate(segments_):
        index = segment.values.index
        bound = bounds[i] if bounds is not None else None
        if len(index) <= min_history_points or (bounds is not None and bound is None):
            continue
        first_allowed = index[min_history_points]
        candidates = index[(index >= first_allowed) & (index + reach <= index[-1])]
        if start is not None:
            candidates = candidates[candidates >= start]
        if bound is not None:
            candidates = candidates[(candidates >= bound[0]) & (candidates + reach <= bound[1])]
        for t in candidates:
            if has_lifecycle_start(segment, t, t + reach, spec.step):
                excluded += 1
            else:
                valid.append((i, t))
    if not valid or n_windows < 1:
        return [], excluded
    picks = np.unique(np.round(np.linspace(0, len(valid) - 1, min(n_windows, len(valid)))).astype(int))
    return [valid[k] for k in picks], excluded
