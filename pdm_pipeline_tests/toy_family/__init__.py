"""A toy model family for tests: adding a family is this package plus one `families.register(FAMILY)` call.

The "model" stores each sensor's train mean and predicts the distance of the first sensor from it.
"""

from pdm_pipeline.families.base import ModelFamily, QualityGate

FAMILY = ModelFamily(
    model_type="toy_level",
    asset_name="toy_level_model",
    title="toy level model",
    description="distance of the first sensor from its train mean (a test-only family)",
    kind="python",
    baseline_name="predict zero distance",
    headline_metrics=(("mae", False),),
    champion_metric=None,
    size_budget_mb=1.0,
    quality_gates=(QualityGate("toy_mae", "mae", 1e9, "max", "mean absolute distance on test"),),
    package=__name__,
    output_columns=("toy_distance",),
)
