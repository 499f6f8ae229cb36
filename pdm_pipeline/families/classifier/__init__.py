"""Failure classifier: will this machine fail within the label horizon H? (AutoGluon, native booster on the edge)."""

from pdm_pipeline.families.base import ModelFamily, QualityGate

FAILURE_PROBABILITY = "failure_probability"
FAILURE_FLAG = "failure_flag"

FAMILY = ModelFamily(
    model_type="classification",
    asset_name="failure_classifier",
    title="failure classifier",
    description="AutoGluon binary classifier of failure_status (fails within H), threshold calibrated on val; "
    "shipped as its native LightGBM/XGBoost/CatBoost file",
    kind="autogluon",
    baseline_name="the better constant prediction per metric: always the train majority class or always failure",
    headline_metrics=(("f1", True), ("pr_auc", True), ("roc_auc", True), ("precision", True), ("recall", True)),
    champion_metric=("f1", True),
    size_budget_mb=250.0,
    quality_gates=(
        QualityGate("classifier_roc_auc", "roc_auc", 0.90, "min", "test ROC-AUC of the failure classifier"),
        QualityGate("classifier_precision", "precision", 0.85, "min", "test precision at the val threshold"),
        QualityGate("classifier_recall", "recall", 0.85, "min", "test recall at the val threshold"),
        QualityGate("classification_single_row_latency", "single_row_latency_ms", 50.0, "max",
                    "one-row prediction time of the shipped model (ms)"),
    ),
    package=__name__,
    output_columns=(FAILURE_PROBABILITY, FAILURE_FLAG),
)
