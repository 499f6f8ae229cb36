"""Event-level anomaly metrics: an operator counts alarms and incidents, not rows.

An event is a run of consecutive rows with value 1 within one unit. A truth event is *found* when at least one
of its rows is flagged; a flagged event that touches no truth row is a *false alarm*. Rates are per day of
normal operation for clock data (per 1,000 normal rows otherwise), and the detection delay is counted from a
truth event's first row to its first flagged row.
"""

from __future__ import annotations

import numpy as np


def events(values: np.ndarray, units: np.ndarray | None = None) -> list[tuple[int, int]]:
    """(start, end) row positions (end exclusive) of the runs of 1 in `values`, never crossing a unit change."""
    values = np.asarray(values).astype(bool)
    if units is None:
        units = np.zeros(len(values), dtype=np.int64)
    units = np.asarray(units)
    out, start = [], None
    for i, v in enumerate(values):
        if start is not None and (not v or units[i] != units[start]):
            out.append((start, i))
            start = None
        if v and start is None:
            start = i
    if start is not None:
        out.append((start, len(values)))
    return out


def event_metrics(
    truth: np.ndarray,
    flags: np.ndarray,
    units: np.ndarray | None = None,
    normal_days: float | None = None,
) -> dict[str, float]:
    """events_total, events_found, event_recall, false_alarm_events, false_alarms_per_day (or per 1k rows),
    mean_detection_delay_rows."""
    truth = np.asarray(truth).astype(bool)
    flags = np.asarray(flags).astype(bool)
    truth_events = events(truth, units)
    flag_events = events(flags, units)
    found, delays = 0, []
    for start, end in truth_events:
        hit = np.flatnonzero(flags[start:end])
        if hit.size:
            found += 1
            delays.append(float(hit[0]))
    false_alarms = sum(1 for start, end in flag_events if not truth[start:end].any())
    out = {
        "events_total": len(truth_events),  # counts are whole numbers (metadata shows 4, not 4.0)
        "events_found": found,
        "event_recall": found / len(truth_events) if truth_events else float("nan"),
        "false_alarm_events": false_alarms,
        "mean_detection_delay_rows": float(np.mean(delays)) if delays else float("nan"),
    }
    normal_rows = int((~truth).sum())
    if normal_days is not None and normal_days > 0:
        out["false_alarms_per_day"] = false_alarms / normal_days
    elif normal_rows:
        out["false_alarms_per_1k_rows"] = 1000.0 * false_alarms / normal_rows
    return out
