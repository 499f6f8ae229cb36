"""Setting validation (core/config.py): every bad value is refused naming the setting and what is allowed."""

from __future__ import annotations

import pytest

from pdm_pipeline.core.config import build_gate_settings, parse_settings
from pdm_pipeline.errors import SettingsError


@pytest.mark.parametrize("gate, value, words", [
    ("classifier_recall", 1.5, "quality_limits.classifier_recall=1.5 is outside the range of its metric recall [0, 1]"),
    ("classifier_roc_auc", 85, "metric roc_auc [0, 1]"),
    ("anomaly_false_alarm_rate", -0.1, "metric false_alarm_rate [0, 1]"),
    ("regression_r2_above_zero", 1.2, "metric r2 [-inf, 1]"),
    ("forecast_beats_seasonal_naive", -1, "metric mae_vs_naive [0, inf]"),
])
def test_a_quality_limit_no_metric_value_can_meet_is_refused(gate, value, words):
    """--set quality_limits.classifier_recall=1.5 was accepted: a limit no recall can meet."""
    with pytest.raises(SettingsError, match="invalid gate settings") as raised:
        build_gate_settings(parse_settings([f"quality_limits.{gate}={value}"])["gates"])
    assert words in str(raised.value)


@pytest.mark.parametrize("gate, value", [
    ("classifier_recall", 1.0), ("classifier_recall", 0.0), ("regression_r2_above_zero", -3.0),
    ("anomaly_single_row_latency", 0.0), ("regression_beats_mean_rul", 1.5),
])
def test_limits_within_the_metric_range_are_kept(gate, value):
    assert build_gate_settings({"quality_limits": {gate: value}}).quality_limits[gate] == value
