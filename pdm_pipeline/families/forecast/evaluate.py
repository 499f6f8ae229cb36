"""Rolling-origin backtest of the shipped forecaster over TEST (used once).

`n_windows` (10) origins spread evenly over the test part (test rows after the history; with units side by side,
each window wholly inside its unit's own test rows, the unit's earlier rows serving as history), each with enough
history before the origin; the details say how many windows validation and test gave (`n_windows`) and, side by
side, each window's unit (`origin_units`). At each origin every sensor is forecast from the data strictly before it (Prophet refitted on its trailing window with the stored settings;
the naive forecast from one season back) and compared with the actual grid values. An origin whose horizon
holds a lifecycle start (a repair: no forecaster can see it coming) is not used. Metrics per sensor, then
averaged: MAE, sMAPE (%), MASE (scale: in-sample seasonal-naive MAE over the history) and 80 %/95 % interval
coverage. Baseline = the seasonal-naive forecast on the same points.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.families.base import TestView, read_card
from pdm_pipeline.families.forecast import FAMILY
from pdm_pipeline.families.forecast import series as fs
from pdm_pipeline.families.forecast.runtime import ForecastRuntime
from pdm_pipeline.families.forecast.settings import NAIVE

PLOT_HISTORY_POINTS = 72
MAX_PLOTTED_SENSORS = 4


def _errors(actual: np.ndarray, predicted: np.ndarray, scale: float) -> dict[str, float]:
    err = np.abs(actual - predicted)
    denom = np.abs(actual) + np.abs(predicted)
    smape = np.divide(2 * err, denom, out=np.zeros_like(err), where=denom > 0)
    mae = float(err.mean())
    return {"mae": mae, "smape": float(100 * smape.mean()), "mase": mae / scale if scale > 0 else float("nan")}


def _window_picture(sensor: str, segment: fs.Segment, origin: pd.Timestamp, fc: pd.DataFrame, step: pd.Timedelta,
                    label: str, machine_id: str) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    values = segment.values[sensor]
    tail = values[(values.index >= origin - step * PLOT_HISTORY_POINTS) & (values.index < origin)]
    actual = values.reindex(fc["ds"])
    fig, ax = new_figure(8.0, 3.5)
    ax.plot(tail.index, tail.to_numpy(), color="0.4", lw=1, label="history")
    ax.fill_between(fc["ds"], fc["yhat_lower_95"], fc["yhat_upper_95"], color="tab:blue", alpha=0.15, label="95 %")
    ax.fill_between(fc["ds"], fc["yhat_lower_80"], fc["yhat_upper_80"], color="tab:blue", alpha=0.3, label="80 %")
    ax.plot(fc["ds"], fc["yhat"], color="tab:blue", lw=1.5, label=f"forecast ({label})")
    ax.plot(fc["ds"], actual.to_numpy(), color="black", lw=1, ls="--", marker=".", ms=3, label="actual")
    ax.axvline(origin, color="0.6", lw=0.8)
    ax.set_title(f"{machine_id} / {sensor}: last backtest window")
    ax.legend(loc="upper left", fontsize=7, ncol=5)
    fig.autofmt_xdate()
    return figure_markdown(fig, f"{machine_id}: forecast {sensor}")


def _metric_table(per_sensor: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]]) -> str:
    rows = [
        "| sensor | MAE | sMAPE % | MASE | naive MASE | MAE / naive MAE | coverage 80 % | coverage 95 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sensor, m in per_sensor.items():
        rows.append(
            f"| {sensor} | {m['mae']:.3g} | {m['smape']:.2f} | {m['mase']:.3f} | {baseline[sensor]['mase']:.3f} "
            f"| {m['mae_vs_naive']:.3f} | {m['coverage_80']:.0%} | {m['coverage_95']:.0%} |"
        )
    return "\n".join(rows)


def _mean(table: dict[str, dict[str, float]], key: str) -> float:
    values = [row[key] for row in table.values() if math.isfinite(row[key])]
    return float(np.mean(values)) if values else float("nan")


def evaluate(model_dir: Path, view: TestView, n_windows: int = 10) -> Evaluation:
    card = read_card(model_dir)
    runtime = ForecastRuntime(model_dir, card)
    spec, sensors, unit = runtime.spec, runtime.sensors, runtime.time_unit
    test = view.raw_test
    if test.empty:
        return Evaluation.skipped(FAMILY.model_type, "test split is empty: nothing to backtest")
    full = pd.concat([view.history, test], ignore_index=True)
    segments = fs.segments(full, sensors, unit, spec.step, "history + test")
    history_segments = fs.segments(view.history, sensors, unit, spec.step, "history")
    min_history = max(2 * spec.horizon_points, 10)
    test_bounds: fs.Bounds | None = None
    if len(segments) > 1:  # units side by side, each on its own clock: windows inside each unit's test rows
        test_bounds = fs.split_bounds(segments, test, unit, spec.step, "test split")
        origins, excluded = fs.origins(segments, spec, None, n_windows, min_history, test_bounds)
    else:
        test_start = fs.axis_datetimes(test, unit, "test split").min().floor(spec.step)
        origins, excluded = fs.origins(segments, spec, test_start, n_windows, min_history)
    if not origins:
        reason = ("every window holds a lifecycle start" if excluded else
                  f"no {spec.horizon_points}-point window with {min_history} points of history before it")
        return Evaluation.skipped(FAMILY.model_type, f"test part: {reason}: nothing to backtest")

    widths = {s: runtime._widths(s, spec) for s in sensors} if runtime.method == NAIVE else {}
    per_sensor: dict[str, dict[str, float]] = {}
    per_sensor_baseline: dict[str, dict[str, float]] = {}
    pictures: dict[str, str] = {}
    backtests: dict[tuple[str, int, pd.Timestamp], Any] = {}
    if runtime.method != NAIVE:
        keys = [(sensor, i, origin) for sensor in sensors for i, origin in origins]
        jobs = [(segments[i], sensor, origin, spec, f"backtest at {origin}") for sensor, i, origin in keys]
        backtests = dict(zip(keys, fs.fit_prophet_all(jobs)))
    for sensor in sensors:
        actual_all, yhat_all, naive_all = [], [], []
        inside: dict[str, list[np.ndarray]] = {level: [] for level in fs.BAND_PERCENTILES}
        for k, (i, origin) in enumerate(origins):
            segment = segments[i]
            values = segment.values[sensor]
            if runtime.method == NAIVE:
                fc = fs.naive_forecast(values, origin, spec, widths[sensor])
            else:
                model = backtests[(sensor, i, origin)]
                fc = fs.prophet_forecast(model, spec.horizon(origin), spec.settings.seed, card["interval_scales"][sensor])
            ds = pd.DatetimeIndex(fc["ds"])
            actual = values.reindex(ds).to_numpy(dtype=float)
            naive = fs.naive_point(values, ds, origin, spec)
            keep = ~np.isnan(actual) & ~np.isnan(naive)
            actual_all.append(actual[keep])
            yhat_all.append(fc["yhat"].to_numpy()[keep])
            naive_all.append(naive[keep])
            for level, flags in inside.items():
                lower, upper = fc[f"yhat_lower_{level}"].to_numpy()[keep], fc[f"yhat_upper_{level}"].to_numpy()[keep]
                flags.append((actual[keep] >= lower) & (actual[keep] <= upper))
            if k == len(origins) - 1 and len(pictures) < MAX_PLOTTED_SENSORS:
                pictures[f"forecast {sensor}"] = _window_picture(
                    sensor, segment, origin, fc, spec.step, runtime.label, view.machine_id
                )
        actual, yhat, naive = (np.concatenate(parts) for parts in (actual_all, yhat_all, naive_all))
        if len(actual) == 0:
            continue
        scales = [fs.in_sample_naive_mae(s.values[sensor], spec) for s in history_segments if len(s.values)]
        scales = [v for v in scales if math.isfinite(v)]
        scale = float(np.mean(scales)) if scales else float("nan")
        per_sensor[sensor] = _errors(actual, yhat, scale)
        per_sensor_baseline[sensor] = _errors(actual, naive, scale)
        naive_mae = per_sensor_baseline[sensor]["mae"]
        # Skill against seasonal naive on the same test windows (1 for the naive forecast itself).
        per_sensor[sensor]["mae_vs_naive"] = (per_sensor[sensor]["mae"] / naive_mae if naive_mae > 0 else
                                              (1.0 if per_sensor[sensor]["mae"] == 0 else float("inf")))
        for level, flags in inside.items():
            per_sensor[sensor][f"coverage_{level}"] = float(np.concatenate(flags).mean())
        per_sensor[sensor]["mase_scale"] = scale
        per_sensor[sensor]["n_points"] = len(actual)
    if not per_sensor:
        return Evaluation.skipped(FAMILY.model_type, "no actual test values inside the backtest windows")

    metrics = {k: _mean(per_sensor, k) for k in ("mae", "smape", "mase", "coverage_80", "coverage_95", "mae_vs_naive")}
    metrics["n_windows"] = len(origins)  # a count: a whole number
    selection = card.get("selection") or {}
    windows: dict[str, Any] = {
        "n_windows": {"validation": len(selection.get("origins", [])), "test": len(origins)},
    }
    if test_bounds is not None:
        windows["test_start_per_unit"] = {s.key: str(b[0]) for s, b in zip(segments, test_bounds) if b is not None}
        windows["origin_units"] = [segments[i].key for i, _ in origins]
    return Evaluation(
        model_type=FAMILY.model_type,
        metrics=metrics,
        baseline={k: _mean(per_sensor_baseline, k) for k in ("mae", "smape", "mase")},
        baseline_name=FAMILY.baseline_name,
        details={
            "method": runtime.method,
            "label": runtime.label,
            "per_sensor": per_sensor,
            "per_sensor_baseline": per_sensor_baseline,
            "origins": [str(o) for _, o in origins],
            "origins_excluded_for_lifecycle_start": excluded,
            **windows,
            "horizon_points": spec.horizon_points,
            "step_seconds": spec.step.total_seconds(),
            "selection": card.get("selection"),
        },
        pictures={"per-sensor backtest metrics": _metric_table(per_sensor, per_sensor_baseline), **pictures},
    )
