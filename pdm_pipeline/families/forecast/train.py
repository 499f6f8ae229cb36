"""Choose the forecaster on validation windows, then fit it per sensor (or store the naive forecast's bands).

Sensors (see `choose_sensors`): the metadata's critical sensors, all of them. None declared: every sensor that
varies on train, or, beyond `max_sensors` (8; `extra.forecast_max_sensors`, 0 = no cap), the `max_sensors` most
tied to degradation on TRAIN rows only: largest |Spearman| with `rul`, else with the failure label, else the
largest level drift over each unit's train rows relative to its noise (ties by name). The card's
`sensor_selection` names the rule, each sensor's score and how many were left out. History = raw train + val.

Selection (VALIDATION windows, per machine)
    Candidates: Prophet with each CANDIDATE_GRID setting (settings fixed in `config.extra` are not varied) and
    the seasonal-naive forecast. `validation_windows` forecast windows spread over the validation part (val rows:
    after the first val timestamp, or, when units run side by side, wholly inside each unit's own val rows), each
    forecast fitted on the data before its origin only. Score: mean over sensors of validation MAE / the
    sensor's in-sample seasonal-naive MAE before the validation part (side by side: before each unit's own val
    rows; a validation MASE, so sensors in different units weigh alike). The lowest wins; the naive forecast
    wins ties (the simpler model). When no validation window fits, there is no evidence that Prophet beats
    naive: the naive forecast ships, and the card says why. The grid, every candidate's score, the origins, how
    many there are (`n_windows`; side by side, each one's unit: `origin_units`) and the choice are stored in the
    model card (`selection`).
Intervals
    Prophet: one set of predictive samples gives both bands (10/90 and 2.5/97.5 percentiles, fixed seed), and
    each sensor's half-widths are scaled by factors calibrated on the validation forecasts (split-conformal:
    the 80 % (95 %) quantile of |error| / half-width). Naive: per-lead empirical quantiles of its own errors on
    the history (see series.py).
Storage
    `model_card.json` (sensors, grid, spec, selection, scales or naive bands, history tail) and, for Prophet,
    one `prophet/<nn>.json` per sensor (`prophet.serialize.model_to_json`: JSON, no pickle).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.gates import rank_correlations
from pdm_pipeline.core.schema import LABEL, RUL, UNIT_ID
from pdm_pipeline.core.timeaxis import short
from pdm_pipeline.families.base import CARD_FILE, ModelSkipped, TrainView
from pdm_pipeline.families.forecast import FAMILY
from pdm_pipeline.families.forecast import series as fs
from pdm_pipeline.families.forecast.settings import NAIVE, PROPHET, ForecastSettings

log = logging.getLogger(__name__)

MODELS_SUBDIR = "prophet"
MIN_CALIBRATION_POINTS = 24
# A series needs this many horizons of history before the forecaster is trained at all.
MIN_HORIZONS_OF_HISTORY = 2
# Points of each sensor's history tail kept in the card (the naive forecast without new rows).
TAIL_SEASONS = 2
# A selection target (rul, label) needs this many train rows with a value, a drift score this many per unit.
MIN_SCORE_ROWS = 8
# Sensors left out by the cap whose scores the card shows (the nearest misses).
NEXT_BEST_SHOWN = 5


def forecast_sensors(critical: Sequence[str], all_sensors: Sequence[str]) -> list[str]:
    """The sensors to forecast: the metadata's critical sensors, or every sensor when none is declared."""
    chosen = list(dict.fromkeys(critical or ()))
    unknown = [s for s in chosen if s not in all_sensors]
    if unknown:
        raise ValueError(f"critical sensor(s) {unknown} from the metadata are not among the sensors {list(all_sensors)}")
    return chosen or list(all_sensors)


def choose_sensors(view: TrainView, max_sensors: int) -> tuple[list[str], dict[str, Any]]:
    """The sensors to forecast (constant ones on train dropped) and the card's record of why.

    Declared critical sensors: all of them, no cap (explicit beats implicit). None declared: every varying sensor,
    or, beyond `max_sensors` (0 = no cap), the `max_sensors` best by `sensor_scores` on train, ties by name."""
    declared = bool(view.metadata.critical_sensors)
    sensors = forecast_sensors(view.metadata.critical_sensors, view.sensors)
    train = view.raw["train"]
    constant = [s for s in sensors if train[s].nunique(dropna=True) <= 1]
    varying = [s for s in sensors if s not in constant]
    record: dict[str, Any] = {"max_sensors": max_sensors, "constant_on_train": constant}
    if declared:
        record["rule"] = "the critical sensors declared in the metadata (rul_parameters.critical_sensors), no cap"
        return varying, record
    if not max_sensors or len(varying) <= max_sensors:
        record["rule"] = ("no critical sensors declared: every sensor varying on train"
                          + (" (max_sensors 0: no cap)" if not max_sensors else f" ({len(varying)} <= max_sensors)"))
        return varying, record
    rule, scores = sensor_scores(view, varying)
    ranked = sorted(varying, key=lambda s: (-round(scores[s], 12), s))
    chosen, rest = ranked[:max_sensors], ranked[max_sensors:]
    record.update({
        "rule": f"no critical sensors declared and {len(varying)} varying sensors > max_sensors {max_sensors}: the "
                f"{max_sensors} with the largest {rule} (ties by name)",
        "scores": {s: scores[s] for s in chosen},
        "left_out": len(rest),
        "next_best": {s: scores[s] for s in rest[:NEXT_BEST_SHOWN]},
        "change": "declare rul_parameters.critical_sensors in the machine's metadata (all forecast, no cap), or "
                  "set the cap: --set extra.forecast_max_sensors=<n> (0 = every sensor)",
    })
    return chosen, record


def sensor_scores(view: TrainView, sensors: Sequence[str]) -> tuple[str, dict[str, float]]:
    """How tied to degradation each sensor is, on TRAIN rows only (never val/test), and the rule's name:
    |Spearman| with `rul`, else with the failure label (the data's, else the one fitted on train), else drift:
    |mean of the last - first quarter| of each unit's train rows / the noise of its step-to-step changes
    (std / sqrt 2), averaged over units by rows. Missing values are left out; a sensor without a score gets 0."""
    train = view.raw["train"]
    values = {s: np.asarray(pd.to_numeric(train[s], errors="coerce"), dtype=float) for s in sensors}
    for name, target in _targets(view):
        y = np.asarray(pd.to_numeric(pd.Series(np.asarray(target)), errors="coerce"), dtype=float)
        known = np.isfinite(y)
        if known.sum() >= MIN_SCORE_ROWS and np.unique(y[known]).size > 1:
            scores = rank_correlations(train[list(sensors)], pd.Series(y, index=train.index), MIN_SCORE_ROWS)
            return f"|Spearman correlation| with {name} on train", {
                s: v if math.isfinite(v) else 0.0 for s, v in scores.items()
            }
    time = np.asarray(fs.axis_datetimes(train, view.time_unit, f"machine {view.machine_id}, train split"))
    units = train[UNIT_ID].astype(str).to_numpy() if UNIT_ID in train.columns else np.zeros(len(train))
    groups = [np.flatnonzero(units == u) for u in pd.unique(units)]
    groups = [rows[np.argsort(time[rows], kind="stable")] for rows in groups]
    return "level drift over each unit's train rows / noise (no rul or failure label on train)", {
        s: _drift(values[s], groups) for s in sensors
    }


def _targets(view: TrainView) -> list[tuple[str, Any]]:
    """Candidate selection targets aligned with the raw train rows, best first: rul, then the failure label."""
    train, frame = view.raw["train"], view.frames.get("train")
    out: list[tuple[str, Any]] = [(RUL, train[RUL])] if RUL in train.columns else []
    if LABEL in train.columns:
        out.append((LABEL, train[LABEL]))
    elif frame is not None and LABEL in frame.columns and len(frame) == len(train):
        out.append((f"{LABEL} (fitted on train)", frame[LABEL]))
    return out


def _drift(x: np.ndarray, groups: Sequence[np.ndarray]) -> float:
    total, weight = 0.0, 0
    for rows in groups:
        v = x[rows]
        v = v[np.isfinite(v)]
        if len(v) < MIN_SCORE_ROWS:
            continue
        noise = float(np.diff(v).std()) / math.sqrt(2)
        q = len(v) // 4
        shift = abs(float(v[-q:].mean()) - float(v[:q].mean()))
        total += (shift / noise if noise > 0 else 0.0) * len(v)
        weight += len(v)
    return total / weight if weight else 0.0


@dataclass
class Candidate:
    spec: fs.Spec
    mae: dict[str, float]
    fits: dict[str, list[tuple[int, pd.Timestamp, Any]]]
    score: float
    failure: str | None = None

    @property
    def label(self) -> str:
        return "seasonal naive" if self.spec.method == NAIVE else self.spec.settings.label()


def _validate(
    spec: fs.Spec, segs: list[fs.Segment], sensors: Sequence[str], windows: Sequence[tuple[int, pd.Timestamp]],
    scales: dict[str, float],
) -> Candidate:
    """Forecast every validation window (fitted on the data before its origin) and score the point forecasts."""
    mae: dict[str, float] = {}
    fits: dict[str, list[tuple[int, pd.Timestamp, Any]]] = {}
    models: dict[tuple[str, int, pd.Timestamp], Any] = {}
    if spec.method != NAIVE:
        keys = [(sensor, i, origin) for sensor in sensors for i, origin in windows]
        jobs = [(segs[i], sensor, origin, spec, f"validation window at {origin}") for sensor, i, origin in keys]
        try:
            fitted = fs.fit_prophet_all(jobs)
        except fs.ForecastSkipped as exc:
            return Candidate(spec, mae, fits, math.inf, failure=str(exc))
        models = {(sensor, i, origin): model for (sensor, i, origin), model in zip(keys, fitted)}
    for sensor in sensors:
        errors, fits[sensor] = [], []
        for i, origin in windows:
            ds = spec.horizon(origin)
            values = segs[i].values[sensor]
            actual = values.reindex(ds).to_numpy(dtype=float)
            if spec.method == NAIVE:
                predicted = fs.naive_point(values, ds, origin, spec)
            else:
                model = models[(sensor, i, origin)]
                predicted = fs.prophet_point(model, ds)
                fits[sensor].append((i, origin, model))
            keep = ~np.isnan(actual) & ~np.isnan(predicted)
            errors.append(np.abs(actual - predicted)[keep])
        joined = np.concatenate(errors) if errors else np.array([])
        mae[sensor] = float(joined.mean()) if len(joined) else math.nan
    normalised = [mae[s] / scales[s] for s in sensors if math.isfinite(mae[s]) and scales.get(s, 0) > 0]
    return Candidate(spec, mae, fits, float(np.mean(normalised)) if normalised else math.inf)


def _interval_scales(spec: fs.Spec, segs: list[fs.Segment], sensor: str, fits: Sequence[tuple[int, pd.Timestamp, Any]]) -> dict[str, float]:
    """Prophet band factors from the validation fits: per level the quantile of |error| / half-width."""
    ratios: dict[str, list[np.ndarray]] = {level: [] for level in fs.BAND_PERCENTILES}
    for i, origin, model in fits:
        ds = spec.horizon(origin)
        fc = fs.prophet_forecast(model, ds, spec.settings.seed, scales={})
        actual = segs[i].values[sensor].reindex(ds).to_numpy(dtype=float)
        keep = ~np.isnan(actual)
        yhat = fc["yhat"].to_numpy()[keep]
        err = actual[keep] - yhat
        for level in ratios:
            upper, lower = fc[f"yhat_upper_{level}"].to_numpy()[keep], fc[f"yhat_lower_{level}"].to_numpy()[keep]
            half = np.where(err >= 0, upper - yhat, yhat - lower)
            ratios[level].append(np.abs(err) / np.maximum(half, 1e-12))
    out = {}
    for level, parts in ratios.items():
        r = np.concatenate(parts) if parts else np.array([])
        out[level] = float(np.quantile(r, int(level) / 100)) if len(r) >= MIN_CALIBRATION_POINTS else 1.0
    return out


def _validation_windows(
    segs: list[fs.Segment], spec: fs.Spec, val_start: pd.Timestamp, val_bounds: fs.Bounds | None
) -> tuple[list[tuple[int, pd.Timestamp]], int]:
    """Windows wholly in val: after the first val time (one series), or, units side by side, inside each unit's
    own val rows (every unit counts time from its own origin: one start for all would put windows in train)."""
    n = int(spec.settings.validation_windows)
    min_history = max(2 * spec.horizon_points, 10)
    if val_bounds is not None:
        return fs.origins(segs, spec, None, n, min_history, val_bounds)
    return fs.origins(segs, spec, val_start, n, min_history)


def train(view: TrainView, out_dir: Path, config: TrainingConfig) -> dict[str, Any]:
    started = time.perf_counter()
    if not view.metadata.time_order:
        raise ModelSkipped(f"machine {view.machine_id} has no timestamp column: nothing to forecast")
    settings = ForecastSettings.from_config(config)
    sensors, sensor_record = choose_sensors(view, settings.max_sensors)
    if not sensors:
        raise ModelSkipped(f"every sensor to forecast is constant on train "
                           f"({', '.join(sensor_record['constant_on_train'])}): nothing to forecast")
    if "left_out" in sensor_record:
        log.info(f"forecast: machine {view.machine_id}: {sensor_record['rule']}: {', '.join(sensors)}; "
                 f"{sensor_record['left_out']} sensor(s) left out ({sensor_record['change']})")
    unit = view.time_unit
    history = pd.concat([view.raw["train"], view.raw["val"]], ignore_index=True)
    where = f"machine {view.machine_id}, forecast history"
    try:
        raw = fs.raw_step(history, unit, where)
    except fs.ForecastSkipped as exc:
        raise ModelSkipped(str(exc)) from None
    horizon = fs.default_horizon(unit, config.forecast_horizon, raw)
    step = fs.grid_step(raw, horizon, unit)
    horizon_points = max(1, math.ceil(horizon / step))
    segs = fs.segments(history, sensors, unit, step, where)
    longest = max(len(s.values) for s in segs)
    needed = MIN_HORIZONS_OF_HISTORY * horizon_points + 1
    if longest < needed:
        span = longest * step
        raise ModelSkipped(
            f"{where}: the longest series has {longest} grid points of {_step_text(step, unit)} "
            f"({_span_text(span, unit)}); a {_span_text(horizon, unit)} forecast needs at least {needed} "
            f"({MIN_HORIZONS_OF_HISTORY} horizons of history): too short to forecast"
            + ("" if config.forecast_horizon is not None else
               f"; a shorter horizon fits: forecast_horizon at most {_span_text(span / MIN_HORIZONS_OF_HISTORY, unit)}"
               f" (in {unit})")
        )
    parallel = len(segs) > 1
    fixed = ForecastSettings.overrides(config.extra)
    span = max(s.values.index[-1] - s.values.index[0] for s in segs)
    season = fs.season_for(step, unit, span)

    def spec_for(candidate: ForecastSettings, method: str) -> fs.Spec:
        window = min(span, step * candidate.history_points)
        return fs.Spec(unit, step, horizon_points, fs.seasonalities(window, unit, step), method, candidate, season)

    # A window longer than the longest series is the whole series: candidates that differ only there are one.
    clamped = []
    for candidate in settings.candidates(fixed) if settings.validation_windows else [settings]:
        if "history_points" not in fixed:
            candidate = replace(candidate, history_points=min(candidate.history_points, longest))
        if candidate not in clamped:
            clamped.append(candidate)
    prophet_specs = [spec_for(c, PROPHET) for c in clamped]
    naive_spec = spec_for(settings, NAIVE)
    val_start = fs.axis_datetimes(view.raw["val"], unit, "val split").min().floor(step)
    val_bounds = fs.split_bounds(segs, view.raw["val"], unit, step, "val split") if parallel else None
    windows, excluded = _validation_windows(segs, naive_spec, val_start, val_bounds)
    log.info(
        f"forecast: {len(sensors)} sensor(s), raw step {_step_text(raw, unit)} -> grid {_step_text(step, unit)}, "
        f"horizon {horizon_points} points, {len(windows)} validation window(s), {len(prophet_specs)} Prophet "
        "candidate(s) + seasonal naive"
    )
    record: dict[str, Any] = {
        "validation_start": str(val_start),
        "origins": [str(o) for _, o in windows],
        "n_windows": len(windows),
        "origins_excluded_for_lifecycle_start": excluded,
        "score": "mean over sensors of validation MAE / in-sample seasonal-naive MAE before the validation part",
        "candidates": [],
        "chosen": None,
    }
    if val_bounds is not None:
        record["validation_start_per_unit"] = {s.key: str(b[0]) for s, b in zip(segs, val_bounds) if b is not None}
        record["origin_units"] = [segs[i].key for i, _ in windows]
    chosen: Candidate | None = None
    if windows:
        if val_bounds is None:
            before = [fs.Segment(s.key, s.values[s.values.index < val_start]) for s in segs]
        else:  # each unit's rows before its own val rows (a unit without val rows: all of them)
            before = [s if b is None else fs.Segment(s.key, s.values[s.values.index < b[0]])
                      for s, b in zip(segs, val_bounds)]
        scales = {s: _pooled_scale(before, s, naive_spec) for s in sensors}
        results = [_validate(spec, segs, sensors, windows, scales) for spec in prophet_specs]
        results.append(_validate(naive_spec, segs, sensors, windows, scales))
        for result in results:
            record["candidates"].append({
                "label": result.label,
                "method": result.spec.method,
                "changes": _changes(settings, result.spec.settings) if result.spec.method == PROPHET else {},
                "score": result.score if math.isfinite(result.score) else None,
                "val_mae": result.mae,
                **({"failure": result.failure} if result.failure else {}),
            })
            log.info(f"forecast: candidate {result.label}: validation score {result.score:.4f}")
        naive_result = results[-1]
        best_prophet = min(results[:-1], key=lambda r: r.score if math.isfinite(r.score) else math.inf)
        comparable = math.isfinite(naive_result.score) and math.isfinite(best_prophet.score)
        chosen = naive_result if not comparable or naive_result.score <= best_prophet.score else best_prophet
        record["chosen"] = chosen.label
        if not comparable:
            record["reason"] = (
                f"validation scores seasonal naive {naive_result.score:.4f}, best Prophet {best_prophet.score:.4f}: "
                "not both finite (the in-sample naive error that scales them is 0 or undefined), so there is no "
                "evidence that Prophet beats the seasonal-naive forecast, which ships"
            )
        elif chosen.spec.method == NAIVE:
            record["reason"] = (
                f"seasonal naive {naive_result.score:.4f} <= best Prophet {best_prophet.score:.4f} on validation: "
                "the naive forecast ships (honestly labelled)"
            )
    else:
        record["reason"] = (
            "no forecast window fits in the validation part: there is no evidence that Prophet beats the "
            "seasonal-naive forecast, which ships"
        )
        record["chosen"] = "seasonal naive"
    spec = chosen.spec if chosen is not None else naive_spec
    log.info(f"forecast: chose {record['chosen']}")

    out_dir.mkdir(parents=True, exist_ok=True)
    last_segment = _latest_segment(segs, history, view)
    card: dict[str, Any] = {
        "model_type": FAMILY.model_type,
        "sensors": sensors,
        "sensor_selection": sensor_record,
        "spec": spec.to_card(),
        "method": spec.method,
        "label": "seasonal naive" if spec.method == NAIVE else "prophet",
        "raw_step_seconds": raw.total_seconds(),
        "horizon": _span_text(horizon, unit),
        "history_end": str(last_segment.values.index[-1]),
        "selection": record,
        "parallel_units": parallel,
    }
    if spec.method == NAIVE:
        card["naive_half_widths"] = {
            s: fs.naive_half_widths(_pooled_errors(segs, s, spec), horizon_points) for s in sensors
        }
        tail = int(round(spec.season / step)) * TAIL_SEASONS + horizon_points
        card["history_tail"] = {
            s: {"ds": [str(t) for t in last_segment.values.index[-tail:]],
                "values": [None if not np.isfinite(v) else float(v) for v in last_segment.values[s].to_numpy()[-tail:]]}
            for s in sensors
        }
    else:
        from prophet.serialize import model_to_json

        (out_dir / MODELS_SUBDIR).mkdir(parents=True, exist_ok=True)
        origin = last_segment.values.index[-1] + step
        files, scales_out = {}, {}
        final = fs.fit_prophet_all([(last_segment, sensor, origin, spec, where) for sensor in sensors])
        for i, (sensor, model) in enumerate(zip(sensors, final)):
            files[sensor] = f"{MODELS_SUBDIR}/{i:02d}.json"
            (out_dir / files[sensor]).write_text(model_to_json(model))
            scales_out[sensor] = _interval_scales(spec, segs, sensor, chosen.fits[sensor] if chosen else [])
        card["files"] = files
        card["interval_scales"] = scales_out
    card["train_seconds"] = time.perf_counter() - started
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=1))
    return {
        "sensors": sensors,
        "sensor_selection": sensor_record,
        "method": spec.method,
        "grid_step": _step_text(step, unit),
        "horizon": card["horizon"],
        "seasonalities": spec.seasonalities,
        "settings": asdict(spec.settings),
        "chosen": record["chosen"],
    }


def _latest_segment(segs: list[fs.Segment], history: pd.DataFrame, view: TrainView) -> fs.Segment:
    """The series a forecast continues: the only one, or (units side by side) the unit of the last val row."""
    if len(segs) == 1:
        return segs[0]
    last_unit = str(view.raw["val"][UNIT_ID].iloc[-1]) if UNIT_ID in view.raw["val"].columns else segs[-1].key
    return next((s for s in segs if s.key == last_unit), segs[-1])


def _pooled_scale(segs: Sequence[fs.Segment], sensor: str, spec: fs.Spec) -> float:
    values = [fs.in_sample_naive_mae(s.values[sensor], spec) for s in segs if len(s.values)]
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _pooled_errors(segs: Sequence[fs.Segment], sensor: str, spec: fs.Spec) -> np.ndarray:
    parts = [fs.naive_errors(s.values[sensor], spec, s.values.index[-1] + spec.step) for s in segs]
    parts = [p for p in parts if p.size]
    return np.vstack(parts) if parts else np.empty((0, spec.horizon_points))


def _changes(base: ForecastSettings, other: ForecastSettings) -> dict[str, Any]:
    b, o = asdict(base), asdict(other)
    return {k: v for k, v in o.items() if b[k] != v}


def _step_text(step: pd.Timedelta, unit: str) -> str:
    from pdm_pipeline.core.timeaxis import is_clock

    if is_clock(unit):
        return str(step)
    return f"{step.total_seconds():g} {short(unit)}"


def _span_text(span: pd.Timedelta, unit: str) -> str:
    from pdm_pipeline.core.timeaxis import is_clock, seconds_per_unit

    if is_clock(unit):
        return f"{span.total_seconds() / (seconds_per_unit(unit) or 1):g} {short(unit)}"
    return f"{span.total_seconds():g} {short(unit)}"


__all__ = ["choose_sensors", "forecast_sensors", "sensor_scores", "train"]
