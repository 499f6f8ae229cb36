"""The NAB standard-profile score of one file, against NAB's own anchors (nab/sweeper.py docstrings)."""

from __future__ import annotations

import numpy as np
import pytest

from pdm_pipeline.core.importer.recipes import nab_probation_rows
from pdm_pipeline.core.nab_scoring import nab_score, onsets, scaled_sigmoid


def _file(rows: int = 3000, windows: tuple[tuple[int, int], ...] = ((1000, 1199), (2000, 2199))) -> np.ndarray:
    in_window = np.zeros(rows, dtype=bool)
    for first, last in windows:
        in_window[first:last + 1] = True
    return in_window


def test_the_scaled_sigmoid_matches_nabs_anchors():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == -1.0


def test_probation_is_15_percent_of_the_rows_at_most_750():
    assert nab_probation_rows(22695) == 750
    assert nab_probation_rows(4000) == 600


def test_never_firing_scores_0_and_the_earliest_detection_of_every_window_scores_100():
    in_window = _file()
    silent = nab_score(in_window, np.zeros_like(in_window), probation_rows=450)
    assert silent["normalised"] == pytest.approx(0.0) and silent["windows_detected"] == 0
    perfect = np.zeros_like(in_window)
    perfect[[1000, 2000]] = True
    best = nab_score(in_window, perfect, probation_rows=450)
    assert best["normalised"] == pytest.approx(100.0) and best["windows_detected"] == 2
    assert best["false_positives"] == 0


def test_only_a_windows_earliest_detection_counts_and_later_ones_earn_less():
    in_window = _file()
    early, late = np.zeros_like(in_window), np.zeros_like(in_window)
    early[[1000, 1100, 1199]] = True  # three detections in one window: the first one counts
    late[1150] = True
    first_only = nab_score(in_window, early, probation_rows=450)
    assert first_only["raw"] == pytest.approx(1.0 - 1.0)  # window 1 perfect, window 2 missed
    assert nab_score(in_window, late, probation_rows=450)["raw"] < first_only["raw"]


def test_false_positives_cost_011_far_from_windows_and_less_just_after_one():
    in_window = _file()
    far, near = np.zeros_like(in_window), np.zeros_like(in_window)
    far[500] = True  # after the probation, before any window: -0.11
    near[1201] = True  # two rows past window 1
    assert nab_score(in_window, far, probation_rows=450)["raw"] == pytest.approx(-2.0 - 0.11)
    near_score = nab_score(in_window, near, probation_rows=450)
    assert -2.0 - 0.11 < near_score["raw"] < -2.0 and near_score["false_positives"] == 1


def test_probation_rows_are_never_scored():
    in_window = _file(windows=((100, 299), (2000, 2199)))
    detections = np.zeros_like(in_window)
    detections[[50, 100]] = True  # inside the probation: neither a false positive nor a detection
    result = nab_score(in_window, detections, probation_rows=450)
    assert result["windows"] == 1 and result["windows_detected"] == 0 and result["false_positives"] == 0


def test_an_alarm_is_scored_by_its_onsets():
    flags = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0], dtype=bool)
    assert np.flatnonzero(onsets(flags)).tolist() == [1, 6]
