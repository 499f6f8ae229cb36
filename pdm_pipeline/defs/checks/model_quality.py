"""Quality gates on the test evaluations: WARN by default, blocking ERROR for gates marked strict."""


import dagster as dg

from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.gates import QualityGateLimits, quality_gates
from pdm_pipeline.defs.assets.evaluation import evaluation_asset_name
from pdm_pipeline.defs.assets.models import MODEL_ASSETS
from pdm_pipeline.defs.checks.outcomes import check_result
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import GatesResource


def _gate_names(model_type: str) -> list[str]:
    probe = {m: 0.0 for m in ("roc_auc", "precision", "recall", "false_alarm_rate", "single_row_latency_ms")}
    return [o.name for o in quality_gates(model_type, probe, QualityGateLimits())]


def _build_quality_check(model_asset_name: str, model_type: str) -> dg.AssetChecksDefinition | None:
    names = _gate_names(model_type)
    if not names:
        return None
    asset = evaluation_asset_name(model_asset_name)

    @dg.multi_asset_check(
        name=f"{asset}_quality_gates",
        specs=[
            dg.AssetCheckSpec(n, asset=asset, blocking=True, partitions_def=machines_partitions, description=f"quality gate {n}")
            for n in names
        ],
        ins={"evaluation": dg.AssetIn(asset)},
    )
    def _quality(evaluation: Evaluation, gates: GatesResource):
        limits = gates.quality_limits()
        for outcome in quality_gates(model_type, evaluation.metrics, limits):
            if evaluation.skipped_reason:
                outcome.passed, outcome.description = True, f"skipped: {evaluation.skipped_reason}"
            yield check_result(outcome, dg.AssetKey(asset))

    return _quality


quality_checks = [c for c in (_build_quality_check(n, spec[0]) for n, spec in MODEL_ASSETS.items()) if c is not None]
