"""Event-level anomaly metrics: an operator counts alarms and incidents, not rows.

An event is a run of consecutive rows with value 1 within one unit (an alarm already on at the first row is an
event from that row). A truth event is *found* when at least one of its rows is flagged.

A *false alarm* is each stretch of normal (not labelled anomalous) rows an alarm stays on over, except the
alarm clearing after an anomaly: a stretch that follows an anomalous row of the same alarm and ends where the
alarm switches off, inside the unit's data. So an alarm that touches no anomaly is one false alarm, and so is an
alarm raised before an anomaly begins (lead-in), one that stays on between two anomalies without clearing, and one
still on at the end of the data after its anomaly ended (it was never seen to clear): an alarm stuck on over a
split with normal rows is never free of false alarms. Rates are per day of normal operation for clock data (per
1,000 normal rows otherwise), and the detection delay is counted from a truth event's first row to its first
flagged row.
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


def false_alarm_events(truth: np.ndarray, flags: np.ndarray, units: np.ndarray | None = None) -> int:
    """The stretches of normal rows alarms stay on over, less those where an alarm clears after an anomaly (see
    the module's docstring)."""
    truth = np.asarray(truth).astype(bool)
    flags = np.asarray(flags).astype(bool)
    units = np.zeros(len(flags), dtype=np.int64) if units is None else np.asarray(units)
    count = 0
    for start, end in events(flags, units):
        for first, last in events(~truth[start:end]):
            first, last = start + first, start + last
            after_anomaly = first > start  # the row before is the same alarm's, on an anomalous row
            clears = last == end and end < len(flags) and units[end] == units[start]  # switched off in the data
            if not (after_anomaly and clears):
                count += 1
    return count


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
    found, delays = 0, []
    for start, end in truth_events:
        hit = np.flatnonzero(flags[start:end])
        if hit.size:
            found += 1
            delays.append(float(hit[0]))
    false_alarms = false_alarm_events(truth, flags, units)
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
