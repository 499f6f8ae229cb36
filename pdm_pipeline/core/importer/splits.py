"""Split modes: which rows of a machine are train, val and test.

- "chronological": one global time cut (rows sharing a timestamp stay together);
- "unit": whole units by `ratios` of the unit count;
- "column": the split_column values train/val/test;
- "random": seeded, stratified on the label; only without time order;
- "first_rows": the first `train_rows` rows of each unit are train (their last `val_share` is val), every later
  row of the unit is test (SKAB's leaderboard protocol).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pdm_pipeline.core.importer.columns import Columns, text_values
from pdm_pipeline.core.importer.options import ImportOptions, ImportOptionsError
from pdm_pipeline.core.importer.reading import Table
from pdm_pipeline.core.importer.timeline import time_key, unit_rank
from pdm_pipeline.core.schema import LABEL, SPLITS, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import is_clock, units_share_origin


def cut_counts(n: int, ratios: Sequence[float]) -> tuple[int, int]:
    """Positions where val and test start when `n` ordered items are cut by `ratios`."""
    first = int(math.floor(n * ratios[0] + 0.5))
    second = int(math.floor(n * (ratios[0] + ratios[1]) + 0.5))
    return first, second


def _require_filled(assign: np.ndarray, machine_id: str, ratios: Sequence[float], what: str) -> None:
    for split in SPLITS:
        if not (assign == split).any():
            raise ImportOptionsError(
                f"machine {machine_id!r}: ratios {tuple(ratios)} leave the {split} split empty for {what}"
            )


def split_labels(table: Table, columns: Columns) -> pd.Series | None:
    """The split_column values (train/val/test, case-insensitive); raise naming the first other value."""
    if columns.split is None:
        return None
    values = text_values(table, columns.split, "split_column")
    bad = ~values.str.lower().isin(SPLITS).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ImportOptionsError(
            f"{table.label}: column {columns.split!r} (split_column): {int(bad.sum())} values are not "
            f"train/val/test, first {values.iloc[first]!r} at {table.where(first)}"
        )
    return values


def assign_splits(
    frame: pd.DataFrame, split_values: pd.Series | None, options: ImportOptions, columns: Columns, machine_id: str
) -> np.ndarray:
    """The split name of every row of the (sorted) machine frame, by `options.split`."""
    ratios = tuple(options.ratios)
    time_unit = options.effective_time_unit
    if options.split == "chronological":
        if columns.cycle is not None and UNIT_ID in frame.columns and frame[UNIT_ID].nunique() > 1:
            raise ImportOptionsError(
                f"machine {machine_id!r}: split='chronological' with cycle_column {columns.cycle!r} and several "
                "units: every unit's cycles start at the same origin, so a time cut would put every unit's early "
                "life in train and its end in test; use split='unit'"
            )
        assign = _chronological_split(frame[TIMESTAMP], ratios)
        n_times = frame[TIMESTAMP].nunique()
        _require_filled(assign, machine_id, ratios, f"{len(frame)} rows ({n_times} distinct timestamps)")
    elif options.split == "unit":
        if UNIT_ID not in frame.columns:
            raise ImportOptionsError(
                f"machine {machine_id!r}: split='unit' needs units: give unit_column or a directory of files per unit"
            )
        assign = _unit_split(frame, ratios, by_id=time_unit is not None and not is_clock(time_unit))
        _require_filled(assign, machine_id, ratios, f"{frame[UNIT_ID].nunique()} units")
    elif options.split == "column":
        assert split_values is not None and columns.split is not None  # guaranteed by validate() and planning
        assign = split_values.str.lower().to_numpy()
        for split in SPLITS:
            if not (assign == split).any():
                raise ImportOptionsError(
                    f"machine {machine_id!r}: column {columns.split!r} (split_column) has no row with value {split!r}"
                )
    elif options.split == "first_rows":
        assign = _first_rows_split(frame, options, machine_id)
    else:  # "random": validate() allows it only without time order
        strata = frame[LABEL].to_numpy() if LABEL in frame.columns else np.zeros(len(frame), dtype=np.int64)
        assign = _random_split(strata, ratios, options.seed)
        _require_filled(assign, machine_id, ratios, f"{len(frame)} rows")
    return assign


def _chronological_split(timestamps: pd.Series, ratios: Sequence[float]) -> np.ndarray:
    """One global time cut: rows sharing a timestamp stay together, so every split is later than the one before."""
    ticks = time_key(timestamps)
    ordered = np.sort(ticks)
    n = len(ticks)
    val_cut, test_cut = cut_counts(n, ratios)
    in_val = ticks >= ordered[val_cut] if val_cut < n else np.zeros(n, dtype=bool)
    in_test = ticks >= ordered[test_cut] if test_cut < n else np.zeros(n, dtype=bool)
    return np.where(in_test, SPLITS[2], np.where(in_val, SPLITS[1], SPLITS[0]))


def _unit_split(frame: pd.DataFrame, ratios: Sequence[float], *, by_id: bool) -> np.ndarray:
    """Whole units to splits by unit count. Units are ordered by first timestamp, ties (and data without time) by
    first row in the source; for cycle/step counters (every unit counting from 1) ties go by unit id."""
    starts = pd.DataFrame({"unit": frame[UNIT_ID].to_numpy(), "position": frame.index.to_numpy()})
    if TIMESTAMP in frame.columns:
        starts["time"] = time_key(frame[TIMESTAMP])
    if by_id:
        starts["rank"] = unit_rank(frame[UNIT_ID])
    first_rows = starts.groupby("unit", sort=False).min()
    keys = [c for c in ("time", "rank", "position") if c in first_rows.columns]
    order = first_rows.sort_values(keys, kind="stable").index
    parts = np.split(np.asarray(order), cut_counts(len(order), ratios))
    unit_split = {unit: split for split, units in zip(SPLITS, parts) for unit in units}
    return frame[UNIT_ID].map(unit_split).to_numpy()


def _random_split(strata: np.ndarray, ratios: Sequence[float], seed: int) -> np.ndarray:
    """A seeded random split of rows, cut by `ratios` within each stratum (label value)."""
    rng = np.random.default_rng(seed)
    assign = np.empty(len(strata), dtype=object)
    for value in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == value))
        for split, part in zip(SPLITS, np.split(rows, cut_counts(len(rows), ratios))):
            assign[part] = split
    return assign


def _first_rows_split(frame: pd.DataFrame, options: ImportOptions, machine_id: str) -> np.ndarray:
    """Per unit (in time order): the first train_rows - val_rows rows train, the next val_rows val, the rest test."""
    n, n_val = int(options.train_rows or 0), options.val_rows
    has_units = UNIT_ID in frame.columns
    time_unit = options.effective_time_unit
    if has_units and frame[UNIT_ID].nunique() > 1 and time_unit is not None:
        if not units_share_origin(frame, time_unit):
            raise ImportOptionsError(
                f"machine {machine_id!r}: split='first_rows' with {frame[UNIT_ID].nunique()} units that follow each "
                "other in time: the test rows of an earlier unit would come before the train rows of a later one, "
                "and the data contract needs train before val before test; import one machine per unit "
                "(e.g. one file per machine, or group_column) or use split='unit'"
            )
    if has_units:
        groups = frame.groupby(UNIT_ID, sort=False)[UNIT_ID]
        position = groups.cumcount().to_numpy()
        sizes = groups.size()
    else:
        position = np.arange(len(frame))
        sizes = pd.Series({"": len(frame)})
    short = sizes[sizes <= n]
    if len(short):
        listing = ", ".join(f"{u!r} ({k} rows)" for u, k in short.head(5).items()) + (
            f", ... ({len(short) - 5} more)" if len(short) > 5 else "")
        who = (
            f"{len(short)} of {len(sizes)} unit(s) have no more than that: {listing}"
            if has_units else f"the data (no units) has only {len(frame)} rows"
        )
        raise ImportOptionsError(
            f"machine {machine_id!r}: split='first_rows' needs more than train_rows={n} rows per unit (the rows "
            f"after the first {n} are the test rows), but {who}; lower train_rows or leave such units out"
        )
    return np.where(
        position < n - n_val, SPLITS[0], np.where(position < n, SPLITS[1], SPLITS[2])
    ).astype(object)
