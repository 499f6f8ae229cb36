"""Data-quality checks on each machine's data; ERROR results block training of that machine."""


import dagster as dg

from pdm_pipeline.core import gates as rules
from pdm_pipeline.core.contract import MachineData
from pdm_pipeline.core.pipeline import LabelResult
from pdm_pipeline.defs.assets.preparation import failure_labels, machine_dataset
from pdm_pipeline.defs.checks.outcomes import check_result
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import GatesResource

DATA_CHECKS = {
    "critical_sensors_complete": "No missing values in critical sensors beyond the tolerance (ERROR)",
    "no_constant_sensor": "No sensor is constant on train (ERROR)",
    "timestamps_regular": "Timestamps sorted and unique per unit with a regular step (WARN when irregular)",
    "splits_disjoint": "Splits disjoint in lifecycle and ordered in time (WARN when they overlap)",
    "rul_in_range": "rul within the metadata's max_operational_hours, else 0-500 h (WARN outside)",
    "distribution_shift": "Per-sensor train-vs-test Kolmogorov-Smirnov statistic under the limit (WARN past it)",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=machine_dataset, description=desc, blocking=True, partitions_def=machines_partitions)
        for name, desc in DATA_CHECKS.items()
    ],
    ins={"machine_dataset": dg.AssetIn("machine_dataset")},
)
def machine_data_quality(machine_dataset: MachineData, gates: GatesResource):
    data, limits = machine_dataset, gates.data_limits()
    dataset_key = dg.AssetKey("machine_dataset")
    critical = data.metadata.critical_sensors or data.sensors
    outcomes = [
        rules.check_critical_sensors_complete(data.splits, tuple(critical), limits),
        rules.check_no_constant_sensor(data.splits, data.sensors),
        rules.check_regular_timestamps(data.splits, limits),
        rules.check_splits_disjoint(data.splits),
        rules.check_rul_range(data.splits, data.metadata.rul_parameters, limits),
        rules.check_distribution_shift(data.splits, data.sensors, limits),
    ]
    for outcome in outcomes:
        yield check_result(outcome, dataset_key)


@dg.asset_check(
    asset=failure_labels,
    blocking=True,
    partitions_def=machines_partitions,
    description="Train positive rate of failure_status within 10-20 % (WARN outside); ERROR when a split has one class",
)
def label_balance(failure_labels: LabelResult, gates: GatesResource) -> dg.AssetCheckResult:
    if failure_labels.defective:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=failure_labels.skipped_reason,
            metadata={"problem": failure_labels.skipped_reason},
        )
    if failure_labels.definition is None:
        return dg.AssetCheckResult(
            passed=True,
            description=f"no label: {failure_labels.skipped_reason}",
            metadata={"skipped_reason": failure_labels.skipped_reason},
        )
    outcome = rules.check_label_balance(failure_labels.labels, gates.data_limits())
    return check_result(outcome)
