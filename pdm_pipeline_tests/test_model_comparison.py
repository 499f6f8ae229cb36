"""The pooled-vs-own comparison of time-ordered models: one sample per val unit (lifecycle), one-sided paired t."""

from __future__ import annotations

import numpy as np

from pdm_pipeline.families.comparison import paired_unit_test


def _units(n_units: int, rows: int = 200) -> np.ndarray:
    return np.repeat(np.arange(n_units), rows)


def test_thousands_of_rows_from_two_lifecycles_are_not_evidence_of_a_small_gain():
    rng = np.random.default_rng(0)
    units = _units(2)
    own = (20 + rng.normal(0, 1, len(units))) ** 2
    # 3 % lower error on one unit, 1 % higher on the other: "lower RMSE" overall, but no consistent gain.
    pooled = own * np.where(units == 0, 0.94, 1.02)
    result = paired_unit_test(own, pooled, units)
    assert np.sqrt(pooled.mean()) < np.sqrt(own.mean())
    assert not result["better"] and result["units"] == 2 and result["units_better"] == 1


def test_a_gain_on_every_unit_well_beyond_its_spread_wins():
    rng = np.random.default_rng(1)
    units = _units(4)
    own = (20 + rng.normal(0, 1, len(units))) ** 2
    pooled = own * (0.7 + 0.02 * rng.normal(size=4))[units]
    result = paired_unit_test(own, pooled, units)
    assert result["better"] and result["units_better"] == 4 and result["t"] > result["critical"]


def test_one_unit_is_no_evidence_and_the_incumbent_stays():
    units = _units(1)
    own = np.full(len(units), 100.0)
    result = paired_unit_test(own, own / 2, units)
    assert not result["better"] and "too few" in result["why"]


def test_the_same_gain_on_every_unit_is_decided_by_its_sign():
    units = _units(3)
    own = np.full(len(units), 100.0)
    assert paired_unit_test(own, own - 10, units)["better"]
    assert not paired_unit_test(own, own + 10, units)["better"]
