"""Is one model better than another on a machine's val rows, beyond what those rows can tell apart?

Errors of time-ordered predictions are correlated along a unit's life (a RUL model that is late at one row is
late at the next), so the val rows of one lifecycle are one observation, not thousands. The comparison is a
one-sided paired t-test over the val UNITS (Diebold-Mariano with the unit as the block): per unit, the
difference of mean squared errors; the challenger wins only when that difference is positive with
CONFIDENCE. With fewer than MIN_UNITS units there is no evidence, and the incumbent stays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CONFIDENCE = 0.95
MIN_UNITS = 2


def paired_unit_test(
    incumbent_sq_errors: np.ndarray, challenger_sq_errors: np.ndarray, units: np.ndarray
) -> dict[str, Any]:
    """One-sided paired t-test that the challenger's mean squared error is lower, one sample per unit.

    Returns units, units where the challenger is better, the t statistic, its critical value and `better`
    (True only when the test is passed)."""
    from scipy.stats import t as student_t

    incumbent_sq_errors = np.asarray(incumbent_sq_errors, dtype=float)
    challenger_sq_errors = np.asarray(challenger_sq_errors, dtype=float)
    units = np.asarray(units)
    gains = np.array([
        incumbent_sq_errors[units == u].mean() - challenger_sq_errors[units == u].mean() for u in np.unique(units)
    ])
    n = len(gains)
    out: dict[str, Any] = {"units": n, "units_better": int((gains > 0).sum()), "confidence": CONFIDENCE}
    if n < MIN_UNITS:
        return {**out, "t": None, "critical": None, "better": False,
                "why": f"{n} val unit(s): too few lifecycles to tell two models apart"}
    spread = float(gains.std(ddof=1))
    mean = float(gains.mean())
    critical = float(student_t.ppf(CONFIDENCE, n - 1))
    if spread == 0.0:  # the same difference on every unit: its sign decides (t is unbounded, not recorded)
        better = mean > 0
        return {**out, "t": None, "critical": critical, "better": better,
                "why": f"the same difference on all {n} val units ({'lower' if better else 'not lower'})"}
    t = mean / (spread / math.sqrt(n))
    better = t > critical
    return {**out, "t": t, "critical": critical, "better": better,
            "why": f"paired t over {n} val units = {t:.2f} ({'>' if better else '<='} {critical:.2f}, "
                   f"one-sided {CONFIDENCE:.0%})"}
