"""Validated machine data, labels and features: everything the four models are trained on."""

import dagster as dg

from pdm_pipeline.core.contract import ContractError, MachineData, load_machine, machine_fingerprint
from pdm_pipeline.core.paths import InvalidMachineIdError
from pdm_pipeline.core.pipeline import FeatureFrames, LabelResult, prepare_features, prepare_labels
from pdm_pipeline.core.schema import RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.defs.assets.source_data import machine_metadata, machine_splits
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import DataRootResource, TrainingResource

# A sensor more than half empty is unusable; smaller gaps are judged by the data-quality checks.
HARD_MAX_NAN_SHARE = 0.5


def _split_summary(data: MachineData) -> str:
    rows = []
    for split, df in data.splits.items():
        span = f"{df[TIMESTAMP].min()} .. {df[TIMESTAMP].max()}" if TIMESTAMP in df.columns and len(df) else "-"
        units = df[UNIT_ID].nunique() if UNIT_ID in df.columns else 1
        rul = f"{df[RUL].min():.0f}-{df[RUL].max():.0f}" if RUL in df.columns and len(df) else "-"
        rows.append(f"| {split} | {len(df):,} | {units} | {span} | {rul} |")
    return "| split | rows | units | time span | rul (h) |\n|---|---|---|---|---|\n" + "\n".join(rows)


@dg.asset(
    partitions_def=machines_partitions,
    group_name="preparation",
    deps=[machine_splits, machine_metadata],
    kinds={"pandas"},
    description="The machine's three splits and metadata, validated against the data contract "
    "(fails with the full list of problems, each naming machine, file and column).",
)
def machine_dataset(context: dg.AssetExecutionContext, data_root: DataRootResource) -> dg.Output[MachineData]:
    machine_id = context.partition_key
    try:
        data = load_machine(data_root.root, machine_id, max_nan_share=HARD_MAX_NAN_SHARE)
    except (ContractError, InvalidMachineIdError) as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in getattr(exc, "problems", [exc])))},
            allow_retries=False,
        ) from exc
    fingerprint = machine_fingerprint(data_root.root, machine_id)
    return dg.Output(
        data,
        data_version=dg.DataVersion(fingerprint),
        metadata={
            "rows_train": len(data.splits["train"]),
            "rows_val": len(data.splits["val"]),
            "rows_test": len(data.splits["test"]),
            "sensors": dg.MetadataValue.json(list(data.sensors)),
            "critical_sensors": dg.MetadataValue.json(list(data.metadata.critical_sensors)),
            "has_rul": data.metadata.has_rul,
            "has_profile": data.profile is not None,
            "data_fingerprint": fingerprint,
            "splits": dg.MetadataValue.md(_split_summary(data)),
        },
    )


@dg.asset(
    partitions_def=machines_partitions,
    group_name="preparation",
    kinds={"pandas"},
    description="failure_status = fails within the next H hours; H is fitted on train (or configured) and the "
    "one definition is applied to every split.",
)
def failure_labels(
    context: dg.AssetExecutionContext, machine_dataset: MachineData, training: TrainingResource
) -> dg.Output[LabelResult]:
    labels = prepare_labels(machine_dataset, training.config())
    if labels.definition is None:
        context.log.warning(f"no failure label: {labels.skipped_reason}")
        return dg.Output(labels, metadata={"skipped_reason": labels.skipped_reason})
    d = labels.definition
    rates = labels.positive_rate
    return dg.Output(
        labels,
        metadata={
            "method": d.method,
            "horizon_hours": d.horizon_hours if d.horizon_hours is not None else float("nan"),
            "horizon_source": d.horizon_source,
            **{f"positive_rate_{s}": float(r) for s, r in rates.items()},
        },
    )


@dg.asset(
    partitions_def=machines_partitions,
    group_name="preparation",
    kinds={"pandas"},
    description="Causal rolling-window features per unit (mean, std, min, max, RMS, peak, slope; band energies "
    "for vibration) from past rows only; never timestamp, rul or the label.",
)
def machine_features(
    context: dg.AssetExecutionContext, machine_dataset: MachineData, failure_labels: LabelResult
) -> dg.Output[FeatureFrames]:
    features = prepare_features(machine_dataset, failure_labels)
    context.log.info(f"{len(features.feature_names)} features from {len(machine_dataset.sensors)} sensors")
    return dg.Output(
        features,
        metadata={
            "n_features": len(features.feature_names),
            "windows_rows": dg.MetadataValue.json(list(features.spec.windows)),
            "window_hours": dg.MetadataValue.json(list(features.spec.window_hours)),
            "step_seconds": float(features.spec.step_seconds or 0.0),
            "feature_names": dg.MetadataValue.json(features.feature_names),
        },
    )
