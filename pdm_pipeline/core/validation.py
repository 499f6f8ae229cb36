"""`validate`: everything that would stop or warn a run, before anything is queued.

The same checks as the run: the data contract (every problem at once, each naming machine, file and column),
then, when the data loads, the data-quality gates of the `machine_dataset` step (constant sensors by name,
critical sensors with gaps, unsorted timestamps, RUL range, train-vs-test shift). ERROR means a run would be
refused or stopped; WARN means it would run and say so. Plus what the data is: rows, units, sensors, time span
and time unit per split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdm_pipeline.core.config import GateSettings
from pdm_pipeline.core.contract import ContractError, Problem, load_machine
from pdm_pipeline.core.gates import GateOutcome, data_quality
from pdm_pipeline.core.schema import TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import short

# validate is stricter than the run's loader only where the run would stop anyway (its data checks).
LOAD_MAX_NAN_SHARE = 0.5


@dataclass
class MachineReport:
    machine_id: str
    problems: list[Problem] = field(default_factory=list)
    gates: list[GateOutcome] = field(default_factory=list)
    splits: list[dict[str, Any]] = field(default_factory=list)
    time_unit: str | None = None
    sensors: tuple[str, ...] = ()

    @property
    def errors(self) -> list[str]:
        return [str(p) for p in self.problems] + [f"{self.machine_id}: {g.line()}" for g in self.gates if g.blocks]

    @property
    def warnings(self) -> list[str]:
        return [f"{self.machine_id}: {g.line()}" for g in self.gates if g.warns]

    @property
    def ok(self) -> bool:
        return not self.errors


def machine_report(root: Path, machine_id: str, settings: GateSettings | None = None) -> MachineReport:
    settings = (settings or GateSettings()).validate()
    report = MachineReport(machine_id)
    try:
        data = load_machine(root, machine_id, max_nan_share=LOAD_MAX_NAN_SHARE, max_rows=settings.max_split_rows)
    except ContractError as exc:
        report.problems = exc.problems
        return report
    report.time_unit = data.metadata.time_unit
    report.sensors = data.sensors
    unit = short(data.metadata.time_unit)
    for split, df in data.splits.items():
        span = "-"
        if TIMESTAMP in df.columns and len(df):
            span = f"{df[TIMESTAMP].min()} .. {df[TIMESTAMP].max()}"
        report.splits.append({
            "split": split,
            "rows": len(df),
            "units": int(df[UNIT_ID].nunique()) if UNIT_ID in df.columns else 1,
            "span": span,
            "unit": unit if data.metadata.time_order else "no time order",
        })
    report.gates = data_quality(data, settings)
    return report
