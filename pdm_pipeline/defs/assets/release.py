"""Publication: the candidates of a machine become its deployed models, only after every gate passed.

Blocking checks (data quality, Pi size per model, strict quality gates) stop the run before this asset, so
nothing reaches data/models/ unless it passed; the total-size budget is checked here, before any rename.
"""


import json
from typing import Any

import dagster as dg

from pdm_pipeline.core.champion import promote_champions
from pdm_pipeline.core.contract import machine_fingerprint
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.gates import check_total_size
from pdm_pipeline.core.pipeline import TrainedModel, publish_models
from pdm_pipeline.defs.assets.evaluation import evaluation_asset_name
from pdm_pipeline.defs.assets.models import MODEL_ASSETS, MODEL_TYPE_OF
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import DataRootResource, GatesResource

METRICS_FILE = "metrics.json"

_ins = {name: dg.AssetIn(name) for name in MODEL_ASSETS}
_ins.update({f"{name}_eval": dg.AssetIn(evaluation_asset_name(name)) for name in MODEL_ASSETS})
_ins["machine_features"] = dg.AssetIn("machine_features")


@dg.asset(
    partitions_def=machines_partitions,
    group_name="deployment",
    ins=_ins,
    description="Publishes the machine's models to data/models/<type>/<machine_id>/ (rename into place) once "
    "all gates passed; the previous models stay when anything failed. Moves the MLflow `champion` alias of the "
    "classifier/regressor when the new version beats the champion on the same test data.",
)
def deployed_models(
    context: dg.AssetExecutionContext,
    data_root: DataRootResource,
    gates: GatesResource,
    mlflow: dg.ResourceParam[Any],
    **inputs,
) -> dg.Output[dict]:
    trained: dict[str, TrainedModel] = {MODEL_TYPE_OF[n]: inputs[n] for n in MODEL_ASSETS}
    evaluations: dict[str, Evaluation] = {MODEL_TYPE_OF[n]: inputs[f"{n}_eval"] for n in MODEL_ASSETS}
    sizes = {t: m.size_mb for t, m in trained.items() if not m.skipped}
    total = check_total_size(sizes, gates.total_budget_mb)
    if not total.passed:
        raise dg.Failure(
            description=f"not published: {total.description}; the previous models stay",
            metadata={"total_mb": total.value, "limit_mb": gates.total_budget_mb},
            allow_retries=False,
        )
    for model_type, model in trained.items():
        if not model.skipped and model.path is not None:
            ev = evaluations[model_type]
            card = {"metrics": ev.metrics, "baseline": ev.baseline, "baseline_name": ev.baseline_name, "details": ev.details}
            (model.path / METRICS_FILE).write_text(json.dumps(card, indent=1, default=float))
    published = publish_models(data_root.root, trained)
    skipped = {t: m.skipped_reason for t, m in trained.items() if m.skipped}
    for model_type, path in published.items():
        context.log.info(f"published {model_type} -> {path}")
    # Every blocking gate passed, or this step would not run: each published model may compete for champion.
    decisions = promote_champions(
        mlflow.tracking_uri,
        trained,
        evaluations,
        inputs["machine_features"],
        machine_fingerprint(data_root.root, context.partition_key),
        passed_gates={t: t in published for t in trained},
        log=context.log.info,
    )
    mlflow.end_run()  # the Dagster run's MLflow run: this is the graph's last step
    return dg.Output(
        {t: str(p) for t, p in published.items()},
        metadata={
            "published": dg.MetadataValue.json({t: str(p) for t, p in published.items()}),
            "skipped": dg.MetadataValue.json(skipped),
            "total_mb": round(total.value or 0.0, 3),
            "total_limit_mb": gates.total_budget_mb,
            "champion": dg.MetadataValue.json({t: {"promoted": d.promoted, "version": d.version, "reason": d.reason} for t, d in decisions.items()}),
            **{f"{t}_mb": round(s, 3) for t, s in sizes.items()},
        },
    )
