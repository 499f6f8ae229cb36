"""Test metrics of the RUL regressor through the shipped runtime (TEST only, once), in the data's time unit.

`rmse`, `mae`, `r2`, `bias` against the RAW RUL (what the machine really has left); with a cap also
`rmse_capped_truth` (against min(rul, cap), the target the model learned) and `rmse_within_cap` (rows whose
raw RUL is at most the cap: the degradation window). For cycle data also the NASA asymmetric score of the
PHM08 challenge (late predictions cost more: exp(d/10) - 1 for d >= 0, exp(-d/13) - 1 for d < 0, d = predicted
- true), summed and per row. Baseline = the train mean of the raw RUL (the constant fitted to the truth the metrics use). Error by RUL band, pictures: predicted vs
true and RUL over time for the test units with the most rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.schema import RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import short
from pdm_pipeline.families import tabular
from pdm_pipeline.families.base import TestView, read_card
from pdm_pipeline.families.regressor import FAMILY
from pdm_pipeline.families.regressor.runtime import RegressorRuntime
from pdm_pipeline.families.regressor.train import capped, regression_metrics, rul_values

# Standard bands for hourly data (0-24 h, 24-72 h, 72-168 h, > 168 h); other units use quarters of the range.
HOUR_BAND_EDGES: tuple[float, ...] = (24.0, 72.0, 168.0)
RUL_PLOT_UNITS = 2


def nasa_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """PHM08 asymmetric score (sum over rows): late predictions (d > 0) are penalised more than early ones."""
    d = predicted - truth
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def rul_bands(max_rul: float, time_unit: str) -> list[tuple[float, float]]:
    """(lower, upper) bands for the error table."""
    edges = [e for e in HOUR_BAND_EDGES if e < max_rul] if time_unit == "hours" else []
    if len(edges) < 2 and max_rul > 0:
        edges = [float(f"{max_rul * q:.3g}") for q in (0.25, 0.5, 0.75)]
    bounds = [0.0, *edges, math.inf]
    return list(zip(bounds[:-1], bounds[1:]))


def _band_rows(truth: np.ndarray, predicted: np.ndarray, bands: list[tuple[float, float]], unit: str) -> list[dict]:
    rows = []
    for lower, upper in bands:
        inside = (truth >= lower) & (truth < upper)
        count = int(inside.sum())
        name = f">{lower:g} {unit}" if math.isinf(upper) else f"{lower:g}-{upper:g} {unit}"
        rows.append({
            "band": name,
            "count": count,
            "mae": float(np.mean(np.abs(predicted[inside] - truth[inside]))) if count else None,
            "bias": float(np.mean(predicted[inside] - truth[inside])) if count else None,
        })
    return rows


def _band_table(rows: list[dict[str, Any]], unit: str) -> str:
    lines = [f"| RUL band | rows | MAE ({unit}) | bias ({unit}) |", "|---|---|---|---|"]
    for row in rows:
        cells = ["-" if row[k] is None else f"{row[k]:.2f}" for k in ("mae", "bias")]
        lines.append(f"| {row['band']} | {row['count']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _scatter_plot(truth: np.ndarray, predicted: np.ndarray, unit: str, machine_id: str) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    fig, ax = new_figure(5.0, 5.0)
    ax.scatter(truth, predicted, s=6, alpha=0.4, color="tab:blue")
    top = float(max(truth.max(), predicted.max(), 1e-9))
    ax.plot([0, top], [0, top], color="black", linestyle="--", linewidth=1.0, label="perfect prediction")
    ax.set_xlabel(f"true RUL ({unit})")
    ax.set_ylabel(f"predicted RUL ({unit})")
    ax.set_title(machine_id)
    ax.legend(loc="upper left", fontsize=8)
    return figure_markdown(fig, f"{machine_id}: RUL predicted vs true (test)")


def _rul_over_time_plot(test: pd.DataFrame, truth: np.ndarray, predicted: np.ndarray, unit: str, machine_id: str) -> str:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    units = test[UNIT_ID].astype(str).to_numpy() if UNIT_ID in test.columns else np.full(len(test), "all rows")
    counts = pd.Series(units).value_counts()
    chosen = sorted(counts.index, key=lambda u: (-counts[u], u))[:RUL_PLOT_UNITS]
    by_time = TIMESTAMP in test.columns
    fig, ax = new_figure(9.0, 3.8)
    for i, name in enumerate(chosen):
        rows = np.flatnonzero(units == name)
        x = test[TIMESTAMP].to_numpy()[rows] if by_time else np.arange(len(rows))
        order = np.argsort(x, kind="stable")
        color = f"C{i}"
        ax.plot(x[order], truth[rows][order], color=color, linewidth=1.2, label=f"{name}: true RUL")
        ax.plot(x[order], predicted[rows][order], color=color, linestyle="--", label=f"{name}: predicted")
    ax.set_xlabel(TIMESTAMP if by_time else "row within unit")
    ax.set_ylabel(f"RUL ({unit})")
    ax.set_title(machine_id)
    ax.legend(loc="upper right", fontsize=8)
    return figure_markdown(fig, f"{machine_id}: RUL over time, true vs predicted (test)")


def evaluate(model_dir: Path, view: TestView) -> Evaluation:
    card = read_card(model_dir)
    runtime = RegressorRuntime(model_dir, card)
    test = view.test
    tabular.check_frame(test, "test", runtime.inputs, RUL)
    unit = short(card["time_unit"])
    truth = rul_values(test, "test")
    features = test[runtime.inputs].to_numpy(dtype=float)
    predicted = runtime.rul(features)
    cap = card.get("rul_cap")
    metrics = regression_metrics(truth, predicted)
    if cap is not None:
        metrics["rmse_capped_truth"] = float(np.sqrt(np.mean((predicted - capped(truth, cap)) ** 2)))
        within = truth <= cap
        if within.any():
            metrics["rmse_within_cap"] = float(np.sqrt(np.mean((predicted[within] - truth[within]) ** 2)))
    if card["time_unit"] == "cycles":
        metrics["nasa_score"] = nasa_score(truth, predicted)
        metrics["nasa_score_per_row"] = metrics["nasa_score"] / len(truth)
    metrics["single_row_latency_ms"] = tabular.single_row_latency_ms(runtime.rul, features[:1])
    train_mean = float(card["train_mean_rul"])
    baseline = regression_metrics(truth, np.full(len(truth), train_mean))
    metrics["rmse_vs_mean"] = metrics["rmse"] / baseline["rmse"] if baseline["rmse"] > 0 else float("nan")
    band_rows = _band_rows(truth, predicted, rul_bands(float(card["train_max_rul"]), card["time_unit"]), unit)
    details = {
        "truth": "metrics against the raw rul" + (f"; rmse_capped_truth against min(rul, {cap:g} {unit})" if cap else ""),
        "time_unit": card["time_unit"],
        "rul_cap": cap,
        "rul_cap_selection": card.get("rul_cap_selection"),
        "error_by_rul_band": band_rows,
        "train_mean_rul": train_mean,
        "n_test": len(test),
        "best_model": card["best_model"],
        "format": card["format"],
        "preset": card["preset"],
        "val_metrics": card["val_metrics"],
    }
    pictures = {
        "rul_predicted_vs_true": _scatter_plot(truth, predicted, unit, view.machine_id),
        "rul_over_time": _rul_over_time_plot(test, truth, predicted, unit, view.machine_id),
        "rul_error_by_band": _band_table(band_rows, unit),
    }
    return Evaluation(
        model_type=FAMILY.model_type,
        metrics=metrics,
        baseline=baseline,
        baseline_name=f"{FAMILY.baseline_name} ({train_mean:.1f} {unit})",
        details=details,
        pictures=pictures,
    )
