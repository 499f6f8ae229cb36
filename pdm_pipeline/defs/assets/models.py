"""One step per model family, generated from the family registry: the model asset and its evaluation asset.

Each step trains its family into the run's staging directory, logs it to MLflow, evaluates it on test, and
reports its gates as asset checks. It never fails the run for the model's own problems, so one family never
blocks the others (the release keeps that family's previous model):

- trained: the model asset materializes (size, train time, card summary), `pi_size_gate` is reported;
- skipped (does not apply to this data) or failed (training raised; the traceback is in the step log at ERROR
  level): the model asset does NOT materialize in this run and its checks show as skipped; the evaluation
  asset records the reason (`status`, `reason`), so the UI, `status` and the summaries say which and why.

The quality gates are reported on the evaluation asset: WARN by default, ERROR when named in
`strict_quality_gates` (that model then keeps its previous version; the rest of the release goes on).
The step also writes its outcome to `<staging>/<family>.result.json`, which `machine_release` reads.
"""


import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from pdm_pipeline import families
from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.contract import MachineData, machine_fingerprint
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.gates import check_model_size, quality_gates, skipped_quality_gates
from pdm_pipeline.core.pipeline import FeatureFrames, LabelResult, evaluate_model, train_model
from pdm_pipeline.core.release import pooled_models
from pdm_pipeline.defs.checks.outcomes import emit
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.recovery import mark_staging_owner
from pdm_pipeline.defs.reexecution import result_file
from pdm_pipeline.defs.resources import DataRootResource, GatesResource, TrainingResource
from pdm_pipeline.defs.tracking import log_evaluation, log_trained_model
from pdm_pipeline.families.base import ModelFamily, TrainedModel


def write_result(path: Path, trained: TrainedModel, evaluation: Evaluation) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"trained": trained.to_dict(), "evaluation": evaluation.card()}, default=float))
    tmp.replace(path)


def read_results(root: Path, machine_id: str, run_id: str, sources: Mapping[str, str] | None = None,
                 ) -> tuple[dict[str, TrainedModel], dict[str, Evaluation]]:
    """Each family's outcome from the run that trained it: `sources` (model type -> run id, a re-execution's
    ancestor for the steps it reuses; reexecution.py), else `run_id`. A family whose source run's result is gone
    raises ReusedWorkMissing: releasing without it would silently keep (or drop) that model."""
    trained, evaluations = {}, {}
    for family in families.all_families():
        source = (sources or {}).get(family.model_type, run_id)
        path = result_file(root, machine_id, source, family.model_type)
        if source != run_id and not path.is_file():
            raise ReusedWorkMissing(f"the {family.model_type} model trained by run {source[:8]} is no longer on disk "
                                    f"({path.parent})")
        if path.is_file():
            record = json.loads(path.read_text())
            trained[family.model_type] = TrainedModel.from_dict(record["trained"])
            evaluations[family.model_type] = Evaluation.from_card(record["evaluation"])
    return trained, evaluations


class ReusedWorkMissing(Exception):
    """A re-execution's release finds the work of the run it reuses gone (removed since it was queued)."""


def trained_data_version(context: dg.AssetExecutionContext, root: Any, data: MachineData) -> str:
    """The version of the data the run read, not of the files now: they may have been replaced since, and the
    release would then claim a version it never trained on (which the sensor would then never train)."""
    from pdm_pipeline.core.contract import ContractError

    try:
        now: str | None = machine_fingerprint(root, data.machine_id)
    except ContractError:  # files removed or broken since: the version read stands
        now = None
    if data.fingerprint is None:
        return now or ""
    if now is not None and now != data.fingerprint:
        context.log.warning(f"{data.machine_id}: the data files changed after this run read them (version "
                            f"{data.fingerprint[:12]} read, {now[:12]} now): this run records the version it "
                            "trained on; the new files get their own run")
    return data.fingerprint


def model_metadata(trained: TrainedModel) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "status": trained.status,
        "path": dg.MetadataValue.path(str(trained.path)),
        "size_mb": round(trained.size_mb, 3),
        "train_seconds": round(trained.train_seconds, 2),
        "summary": dg.MetadataValue.json(trained.summary),
    }
    for key, value in (trained.summary.get("val_metrics") or {}).items():
        if isinstance(value, (int, float)):  # (a count stays an int: shown as 4, not 4.0)
            meta[f"val_{key}" if not key.startswith("val_") else key] = value if isinstance(value, int) else float(value)
    return meta


def evaluation_metadata(evaluation: Evaluation, trained: TrainedModel) -> dict[str, Any]:
    """Numeric metrics (plotted across materializations), baseline values, the pictures; or the reason."""
    if not evaluation.evaluated:
        status = trained.status if trained.skipped else "evaluation failed"
        return {"status": status, "reason": evaluation.skipped_reason or evaluation.failed_reason or ""}
    meta: dict[str, Any] = {"status": "evaluated", **evaluation.flat_metrics()}
    meta["baseline"] = evaluation.baseline_name
    if evaluation.details:
        meta["details"] = dg.MetadataValue.json(evaluation.details)
    for title, markdown in evaluation.pictures.items():
        meta[title] = dg.MetadataValue.md(markdown)
    return meta


def build_family_asset(family: ModelFamily) -> dg.AssetsDefinition:
    model_key, eval_key = dg.AssetKey(family.asset_name), dg.AssetKey(family.evaluation_asset)
    check_specs = [dg.AssetCheckSpec(
        "pi_size_gate", asset=model_key, blocking=False, partitions_def=machines_partitions,
        description=f"{family.title} on disk within its Raspberry Pi budget (default {family.size_budget_mb:g} MB); "
        "over budget this model is not released (it keeps its previous version)",
    )]
    check_specs += [
        dg.AssetCheckSpec(
            gate.name, asset=eval_key, blocking=False, partitions_def=machines_partitions,
            description=f"{gate.description}: {gate.metric} {gate.sign} {gate.limit:g} by default. WARN; ERROR "
            "when listed in strict_quality_gates (then this model keeps its previous version)",
        )
        for gate in family.quality_gates
    ]

    @dg.multi_asset(
        name=f"train_{family.model_type}",
        outs={
            family.asset_name: dg.AssetOut(
                is_required=False, group_name="models", kinds={family.kind}, description=family.description,
            ),
            family.evaluation_asset: dg.AssetOut(
                group_name="evaluation", kinds={"matplotlib"},
                description=f"Test metrics of the {family.title} beside the baseline ({family.baseline_name}), "
                "with pictures; the test split is used here and nowhere else. Records why when there is no model.",
            ),
        },
        partitions_def=machines_partitions,
        check_specs=check_specs,
        can_subset=True,
        ins={
            "machine_dataset": dg.AssetIn("machine_dataset"),
            "failure_labels": dg.AssetIn("failure_labels"),
            "machine_features": dg.AssetIn("machine_features"),
        },
    )
    def _family_step(
        context: dg.AssetExecutionContext,
        machine_dataset: MachineData,
        failure_labels: LabelResult,
        machine_features: FeatureFrames,
        data_root: DataRootResource,
        training: TrainingResource,
        gates: GatesResource,
        mlflow: dg.ResourceParam[Any],
    ):
        root, machine_id = data_root.root, context.partition_key
        config, settings = training.settings(), gates.settings()
        staging = paths.staging_dir(root, machine_id, context.run_id) / family.model_type
        context.log.info(f"training the {family.title} of {machine_id} (preset {config.preset}) into {staging}")
        mark_staging_owner(staging.parent)
        trained = train_model(
            family, machine_dataset, failure_labels, machine_features, staging, config,
            keys.signing_key(root), pooled_models(root, machine_dataset),
        )
        data_version = trained_data_version(context, root, machine_dataset)
        selected = set(context.selected_asset_check_keys)
        if trained.skipped:
            log = context.log.error if trained.status == "failed" else context.log.warning
            log(f"{family.title} of {machine_id} {trained.status}: {trained.reason}; its previous version stays")
        else:
            example = machine_features.frames["train"][machine_features.feature_names].head(5)
            tracked = log_trained_model(context, mlflow, trained, config.as_dict(), data_version, example)
            if model_key in context.selected_asset_keys:
                yield dg.Output(trained, output_name=family.asset_name, metadata={**model_metadata(trained), **tracked})
        size = check_model_size(family.model_type, trained.size_mb, settings.budget_mb(family.model_type),
                                trained.reason if trained.skipped else None)
        yield from emit([size], model_key, selected)

        evaluation = evaluate_model(trained, machine_dataset, machine_features, keys.local_trust(root))
        if evaluation.evaluated:
            context.log.info(f"{family.title} test metrics: "
                             + ", ".join(f"{k} {v:.4g}" for k, v in evaluation.metrics.items()
                                         if isinstance(v, (int, float))))
            log_evaluation(mlflow, trained, evaluation)
            outcomes = quality_gates(family.model_type, evaluation.metrics, settings)
        else:
            outcomes = skipped_quality_gates(family.model_type, evaluation.skipped_reason or evaluation.failed_reason
                                             or "not evaluated", settings)
        for outcome in outcomes:
            if outcome.blocks:
                context.log.error(f"{family.title}: {outcome.line()}: this model keeps its previous version")
            elif outcome.warns:
                context.log.warning(f"{family.title}: {outcome.line()}")
        write_result(result_file(root, machine_id, context.run_id, family.model_type), trained, evaluation)
        if eval_key in context.selected_asset_keys:
            yield dg.Output(evaluation, output_name=family.evaluation_asset,
                            metadata=evaluation_metadata(evaluation, trained))
        yield from emit(outcomes, eval_key, selected)

    return _family_step


def family_assets() -> list[dg.AssetsDefinition]:
    return [build_family_asset(f) for f in families.all_families()]
