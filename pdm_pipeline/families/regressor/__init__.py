"""RUL regressor: how much useful life is left, in the data's own time unit (hours, seconds, cycles, ...)."""

from pdm_pipeline.families.base import ModelFamily, QualityGate

FAMILY = ModelFamily(
    model_type="regression",
    asset_name="rul_regressor",
    title="RUL regressor",
    description="AutoGluon regressor of the remaining useful life in the data's time unit, with a piecewise-linear "
    "cap chosen on val; shipped as its native booster file",
    kind="autogluon",
    baseline_name="predict the train mean RUL",
    headline_metrics=(("rmse", False), ("mae", False), ("r2", True)),
    champion_metric=("rmse", False),
    size_budget_mb=250.0,
    quality_gates=(
        # Above 1 the model does worse on test than always predicting the train mean RUL: useless, whatever R²'s sign.
        QualityGate("regression_beats_mean_rul", "rmse_vs_mean", 1.0, "max",
                    "test RMSE of the shipped regressor / that of predicting the train mean RUL on the same rows"),
        # Below 0 the model does worse than the test rows' own mean RUL (a constant nobody knows at training): it may
        # still beat the train mean when test RUL sits far from train's, so this warns where the one above is silent.
        QualityGate("regression_r2_above_zero", "r2", 0.0, "min",
                    "test R² of the shipped regressor (0 = as good as predicting the test rows' own mean RUL)"),
        QualityGate("regression_single_row_latency", "single_row_latency_ms", 50.0, "max",
                    "one-row prediction time of the shipped model (ms)"),
    ),
    package=__name__,
    output_columns=("rul_<time unit>",),
)


def output_column(time_unit: str) -> str:
    """The prediction column, named with its unit: rul_hours, rul_seconds, rul_cycles, ..."""
    return f"rul_{time_unit}"
