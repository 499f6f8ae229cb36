"""The Raspberry Pi model-size gate on each model: a model over budget is not published (blocking ERROR)."""


import dagster as dg

from pdm_pipeline.core.gates import check_model_size
from pdm_pipeline.core.pipeline import TrainedModel
from pdm_pipeline.defs.assets.models import MODEL_ASSETS
from pdm_pipeline.defs.checks.outcomes import check_result
from pdm_pipeline.defs.partitions import machines_partitions
from pdm_pipeline.defs.resources import GatesResource


def _build_size_check(model_asset_name: str, model_type: str) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name=f"{model_asset_name}_pi_size_gate",
        specs=[
            dg.AssetCheckSpec(
                "pi_size_gate",
                asset=model_asset_name,
                blocking=True,
                partitions_def=machines_partitions,
                description=f"{model_type} model on disk within its Raspberry Pi budget (MB); over budget blocks publication",
            )
        ],
        ins={"trained": dg.AssetIn(model_asset_name)},
    )
    def _size_gate(trained: TrainedModel, gates: GatesResource):
        outcome = check_model_size(model_type, trained.size_mb, gates.budget_mb(model_type), trained.skipped_reason)
        yield check_result(outcome, dg.AssetKey(model_asset_name))

    return _size_gate


size_checks = [_build_size_check(name, spec[0]) for name, spec in MODEL_ASSETS.items()]
