"""Validated machine data, labels and features: everything the model families are trained on.

The data-quality checks run inside `machine_dataset` (one step) and are BLOCKING: an ERROR there (a constant
sensor, a critical sensor with gaps, unsorted timestamps) stops every model of the machine, which keeps its
current release. `label_balance` is reported on `failure_labels` but blocks only the classifier (the other
families do not need a balanced label): the classifier step reports it and its previous version stays.
"""

from dataclasses import replace

import dagster as dg

from pdm_pipeline.core.contract import ContractError, MachineData, load_machine, machine_fingerprint
from pdm_pipeline.core.gates import DATA_CHECKS, check_label_balance, data_quality
from pdm_pipeline.core.paths import InvalidMachineIdError
from pdm_pipeline.core.pipeline import FeatureFrames, LabelResult, prepare_features, prepare_labels
from pdm_pipeline.core.schema import RUL, TIMESTAMP, UNIT_ID
from pdm_pipeline.core.timeaxis import short
from pdm_pipeline.defs.assets.source_data import machine_metadata, machine_splits
from pdm_pipeline.defs.checks.outcomes import emit
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import DataRootResource, GatesResource, TrainingResource

# A sensor more than half empty is unusable; smaller gaps are judged by the data-quality checks.
HARD_MAX_NAN_SHARE = 0.5


def split_summary(data: MachineData) -> str:
    unit = short(data.metadata.time_unit)
    rows = []
    for split, df in data.splits.items():
        span = f"{df[TIMESTAMP].min()} .. {df[TIMESTAMP].max()}" if TIMESTAMP in df.columns and len(df) else "-"
        units = df[UNIT_ID].nunique() if UNIT_ID in df.columns else 1
        rul = f"{df[RUL].min():g}-{df[RUL].max():g} {unit}" if RUL in df.columns and len(df) else "-"
        rows.append(f"| {split} | {len(df):,} | {units} | {span} | {rul} |")
    return "| split | rows | units | time span | rul |\n|---|---|---|---|---|\n" + "\n".join(rows)


@dg.multi_asset(
    name="machine_dataset",
    outs={"machine_dataset": dg.AssetOut(
        group_name="preparation", kinds={"pandas"},
        description="The machine's three splits and metadata, validated against the data contract (fails with "
        "the full list of problems, each naming machine, file and column), with the data-quality checks.",
    )},
    partitions_def=machines_partitions,
    deps=[machine_splits, machine_metadata],
    check_specs=[
        dg.AssetCheckSpec(name, asset="machine_dataset", description=desc, blocking=True,
                          partitions_def=machines_partitions)
        for name, desc in DATA_CHECKS.items()
    ],
    # A check with nothing to judge (no rul column, no time order) reports no result instead of a fake pass.
    can_subset=True,
)
def machine_dataset(context: dg.AssetExecutionContext, data_root: DataRootResource, gates: GatesResource):
    machine_id = context.partition_key
    try:
        try:
            before: str | None = machine_fingerprint(data_root.root, machine_id)
        except ContractError:  # missing or unreadable files: the loader names each problem
            before = None
        data = load_machine(data_root.root, machine_id, max_nan_share=HARD_MAX_NAN_SHARE,
                            max_rows=gates.settings().max_split_rows)
        fingerprint = machine_fingerprint(data_root.root, machine_id)
    except (ContractError, InvalidMachineIdError) as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in getattr(exc, "problems", [exc])))},
            allow_retries=False,
        ) from exc
    if fingerprint != before:  # files replaced while being read: what was read may be a mix of two versions
        raise dg.Failure(
            description=f"machine {machine_id}: its data files changed while they were read (version "
            f"{(before or 'unreadable')[:12]} before, {fingerprint[:12]} after): nothing is trained on them; the next run reads the "
            "new files whole (new_machine_data_sensor requests one)", allow_retries=False)
    data = replace(data, fingerprint=fingerprint)
    outcomes = data_quality(data, gates.settings())  # judged before the dataset is stored, which keeps the outcomes
    yield dg.Output(
        data,
        output_name="machine_dataset",
        data_version=dg.DataVersion(fingerprint),
        metadata={
            "rows_train": len(data.splits["train"]),
            "rows_val": len(data.splits["val"]),
            "rows_test": len(data.splits["test"]),
            "sensors": dg.MetadataValue.json(list(data.sensors)),
            "critical_sensors": dg.MetadataValue.json(list(data.metadata.critical_sensors)),
            "time_unit": data.metadata.time_unit,
            "machine_type": data.metadata.machine_type or "",
            "has_rul": data.metadata.has_rul,
            "data_fingerprint": fingerprint,
            "splits": dg.MetadataValue.md(split_summary(data)),
        },
    )
    for outcome in outcomes:
        if outcome.blocks:
            context.log.error(f"{machine_id}: {outcome.line()}: the machine keeps its current release")
        elif outcome.warns:
            context.log.warning(f"{machine_id}: {outcome.line()}")
    yield from emit(outcomes, dg.AssetKey("machine_dataset"), set(context.selected_asset_check_keys))


@dg.multi_asset(
    name="failure_labels",
    outs={"failure_labels": dg.AssetOut(
        group_name="preparation", kinds={"pandas"},
        description="failure_status = fails within the next H (in the data's time unit); H is fitted on train "
        "(or set) and the one definition is applied to every split.",
    )},
    partitions_def=machines_partitions,
    ins={"machine_dataset": dg.AssetIn("machine_dataset")},
    check_specs=[dg.AssetCheckSpec(
        "label_balance", asset="failure_labels", blocking=False, partitions_def=machines_partitions,
        description="Train positive rate of failure_status within the target band (WARN outside); ERROR when the "
        "label is constant on train or a split has one class: the classifier keeps its previous version",
    )],
    can_subset=True,  # no failure label at all (no rul column): nothing to judge, no result
)
def failure_labels(context: dg.AssetExecutionContext, machine_dataset: MachineData, training: TrainingResource):
    config = training.settings()
    labels = prepare_labels(machine_dataset, config)
    if labels.definition is None:
        context.log.warning(f"no failure label: {labels.skipped_reason}")
        yield dg.Output(labels, output_name="failure_labels", metadata={"skipped_reason": labels.skipped_reason})
        if labels.defective:
            yield from emit([check_label_balance({}, tuple(config.target_positive_rate), labels.skipped_reason)],
                            dg.AssetKey("failure_labels"), set())
        return
    d = labels.definition
    yield dg.Output(
        labels,
        output_name="failure_labels",
        metadata={
            "method": d.method,
            "definition": d.describe(),
            "horizon": d.horizon if d.horizon is not None else float("nan"),
            "time_unit": d.time_unit,
            **{f"positive_rate_{s}": float(r) for s, r in labels.positive_rate.items()},
        },
    )
    yield from emit([check_label_balance(labels.labels, tuple(config.target_positive_rate))],
                    dg.AssetKey("failure_labels"), set())


@dg.asset(
    partitions_def=machines_partitions,
    group_name="preparation",
    kinds={"pandas"},
    description="Causal rolling-window features per unit over its whole history (mean, std, min, max, RMS, peak, "
    "slope in windows counted in samples; band energies for vibration); never timestamp, rul or the label.",
)
def machine_features(
    context: dg.AssetExecutionContext, machine_dataset: MachineData, failure_labels: LabelResult,
    training: TrainingResource,
) -> dg.Output[FeatureFrames]:
    features = prepare_features(machine_dataset, failure_labels, training.settings())
    spec = features.spec
    unit = short(spec.time_unit)
    durations = [f"{w} samples = {d:g} {unit}" for w, d in zip(spec.windows, spec.window_durations())]
    context.log.info(f"{len(features.feature_names)} features from {len(machine_dataset.sensors)} sensors; "
                     f"windows {', '.join(durations) or 'none (no time order)'}")
    return dg.Output(
        features,
        metadata={
            "n_features": len(features.feature_names),
            "windows_samples": dg.MetadataValue.json(list(spec.windows)),
            "windows": dg.MetadataValue.json(durations),
            "sampling_step": f"{spec.step:g} {unit}" if spec.step else "no time order",
            "feature_names": dg.MetadataValue.json(features.feature_names),
        },
    )
