"""The edge bundle: a machine's deployed models in their smallest faithful form, ready for a Raspberry Pi.

Built aside from the published models after `deployed_models`, gated by size (`bundle_size_gate`, blocking:
over budget, the new bundle is discarded and the previous one stays), then renamed to
data/bundles/<machine_id>/. It is loaded back through the edge predictor (which verifies every hash) and asked
for one prediction, so a bundle that cannot predict never looks healthy in the UI.
"""


import json

import dagster as dg

from pdm_pipeline.core.bundle import BundleExportError, publish_bundle
from pdm_pipeline.core.contract import load_machine
from pdm_pipeline.defs.checks.outcomes import check_result
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import DataRootResource, GatesResource

BUNDLE_CHECK = "bundle_size_gate"


def _smoke_prediction(bundle, root, machine_id: str) -> dict:
    """The bundle's prediction for the last val row (with its history), as the edge would compute it.

    Val, not test: test is used once, by the evaluations."""
    from pdm_pipeline.core.predict import EdgePredictor

    predictor = EdgePredictor.load(bundle)
    if not predictor.sensors:  # forecasts only: nothing to predict per row
        return {}
    val = load_machine(root, machine_id).splits["val"]
    row = predictor.predict(val.iloc[-predictor.min_history_rows:], latest_only=True).iloc[-1]
    return json.loads(row.to_json(date_format="iso"))


@dg.asset(
    partitions_def=machines_partitions,
    group_name="deployment",
    ins={"deployed_models": dg.AssetIn("deployed_models")},
    check_specs=[
        dg.AssetCheckSpec(
            BUNDLE_CHECK,
            asset="edge_bundle",
            blocking=True,
            partitions_def=machines_partitions,
            description="edge bundle (all files) within its Raspberry Pi budget (MB); over budget it is not "
            "published and the previous bundle stays",
        )
    ],
    description="Everything a Raspberry Pi needs to predict for this machine: native boosters (checked against "
    "AutoGluon), the anomaly ensemble, the Prophet models, feature parameters, thresholds, label definition, "
    "metrics, library versions and manifest.json (sha256 + size of every file). data/bundles/<machine_id>/; "
    "`pdm-pipeline predict --bundle` uses it.",
)
def edge_bundle(context: dg.AssetExecutionContext, data_root: DataRootResource, gates: GatesResource, deployed_models: dict):
    root, machine_id = data_root.root, context.partition_key
    try:
        info, outcome = publish_bundle(root, machine_id, gates.bundle_budget_mb, log=context.log.info)
    except BundleExportError as exc:
        raise dg.Failure(description=f"no bundle for {machine_id}: {exc}", allow_retries=False) from exc
    if not outcome.passed:
        yield check_result(outcome, dg.AssetKey("edge_bundle"))
        raise dg.Failure(
            description=f"bundle not published: {outcome.description}; the previous bundle stays",
            metadata={"size_mb": round(info.size_mb, 3), "limit_mb": gates.bundle_budget_mb},
            allow_retries=False,
        )
    prediction = _smoke_prediction(info.path, root, machine_id)
    context.log.info(f"bundle {info.path} loads and predicts: {prediction}")
    files = "\n".join(
        ["| model | format | max abs diff vs AutoGluon |", "|---|---|---|"]
        + [f"| {t} | {f} | {info.max_abs_diff.get(t, '-')} |" for t, f in info.formats.items()]
    )
    yield dg.Output(
        {"path": str(info.path), "size_mb": info.size_mb, "formats": info.formats},
        metadata={
            "path": dg.MetadataValue.path(str(info.path)),
            "size_mb": round(info.size_mb, 3),
            "limit_mb": gates.bundle_budget_mb,
            "files": info.n_files,
            "models": dg.MetadataValue.md(files),
            "absent": dg.MetadataValue.json(info.absent),
            "last_val_row_prediction": dg.MetadataValue.json(prediction),
            "export": f"pdm-pipeline export --machine-id {machine_id} --out DIR",
            "relative_path": str(info.path.relative_to(root)) if info.path.is_relative_to(root) else str(info.path),
        },
    )
    yield check_result(outcome, dg.AssetKey("edge_bundle"))

