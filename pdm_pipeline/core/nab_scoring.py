"""The NAB score of one data file (Numenta Anomaly Benchmark, standard profile), as NAB's sweeper computes it.

Rows come in file order; `in_window` marks the rows of the labelled anomaly windows. NAB ignores the first
`probation_rows` rows (min(15 % of the rows, 750): `importer.recipes.nab_probation_rows`). Each detection
(a row flagged as anomalous) earns a weight from a scaled sigmoid of its position:
- inside a window: only the earliest detection of the window counts, from +1 at the window's left edge down
  towards 0 at its right edge; a window without a detection costs -1 (fnWeight);
- outside: every detection costs fpWeight times a sigmoid of its distance past the previous window (-0.11 far
  from any window, less just after one).
The file's normalised score is 100 x (raw - null) / (perfect - null): 0 for a detector that never fires
(raw -1 per window), 100 for one detection at the left edge of every window and nothing else.

An alarm system is scored by its alarm onsets (the row where an alarm switches on): that is what an operator is
told. NAB's own harness thresholds a per-row anomaly score, and its scoreboard (nab/final_results.json) sums over
58 files, so a one-file score reads as the same scale, not as a leaderboard entry.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# NAB's config/profiles.json, "standard".
STANDARD_PROFILE = {"tp_weight": 1.0, "fp_weight": 0.11, "fn_weight": 1.0}


def scaled_sigmoid(relative_position: float) -> float:
    """NAB's scaled sigmoid: 2 * sigmoid(-5 x) - 1 (x = -1 at a window's left edge, 0 at its right edge, > 0
    after it); -1 from 3 window widths past a window on."""
    if relative_position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * relative_position)) - 1.0


def _windows(in_window: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) row of each run of window rows (both included)."""
    edges = np.diff(np.r_[0, in_window.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def row_weights(in_window: np.ndarray, fp_weight: float, tp_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the weight a detection there would earn, and the index of its window (-1 outside)."""
    in_window = np.asarray(in_window, dtype=bool)
    weights = np.empty(len(in_window))
    window_of = np.full(len(in_window), -1)
    max_tp = scaled_sigmoid(-1.0)
    previous: tuple[int, int] | None = None  # (right index, width) of the last window passed
    windows = _windows(in_window)
    next_window = 0
    i = 0
    while i < len(in_window):
        if next_window < len(windows) and i == windows[next_window][0]:
            first, last = windows[next_window]
            width = last - first + 1
            for j in range(first, last + 1):
                weights[j] = scaled_sigmoid(-(last - j + 1) / width) * tp_weight / max_tp
                window_of[j] = next_window
            previous = (last, width)
            next_window += 1
            i = last + 1
            continue
        if previous is None:
            position = 3.0
        else:
            right, width = previous
            position = abs(right - i) / float(max(width - 1, 1))
        weights[i] = scaled_sigmoid(position) * fp_weight
        i += 1
    return weights, window_of


def nab_score(
    in_window: np.ndarray, detections: np.ndarray, probation_rows: int, profile: dict[str, float] | None = None
) -> dict[str, Any]:
    """NAB's score of one file: raw, normalised (0 = never fires, 100 = perfect), windows detected, false
    positives (detections outside windows) and windows, over the rows after the probation."""
    profile = profile or STANDARD_PROFILE
    in_window = np.asarray(in_window, dtype=bool)
    detections = np.asarray(detections, dtype=bool)
    if in_window.shape != detections.shape:
        raise ValueError(f"in_window has {in_window.shape[0]} rows, detections {detections.shape[0]}")
    weights, window_of = row_weights(in_window, profile["fp_weight"], profile["tp_weight"])
    scored = np.arange(len(in_window)) >= probation_rows
    windows = sorted({int(w) for w in window_of[scored] if w >= 0})
    window_score = dict.fromkeys(windows, -profile["fn_weight"])
    fp_score, false_positives = 0.0, 0
    for i in np.flatnonzero(detections & scored):
        w = int(window_of[i])
        if w >= 0:
            window_score[w] = max(window_score[w], float(weights[i]))
        else:
            fp_score += float(weights[i])
            false_positives += 1
    raw = sum(window_score.values()) + fp_score
    null = -profile["fn_weight"] * len(windows)
    perfect = profile["tp_weight"] * len(windows)
    normalised = 100.0 * (raw - null) / (perfect - null) if windows else math.nan
    return {
        "raw": raw,
        "normalised": normalised,
        "windows": len(windows),
        "windows_detected": sum(1 for s in window_score.values() if s > -profile["fn_weight"]),
        "false_positives": false_positives,
        "profile": "standard" if profile == STANDARD_PROFILE else "custom",
    }


def onsets(flags: np.ndarray) -> np.ndarray:
    """The rows where a 0/1 alarm switches on."""
    flags = np.asarray(flags, dtype=bool)
    return flags & ~np.r_[False, flags[:-1]]
