"""Resources: where the data lives, how to train, and the limits of every gate.

They are set once per run in the launchpad (under `resources`), not per asset, so one preset or one budget
applies to the whole graph of a run.
"""


from pathlib import Path

import dagster as dg
from pydantic import Field

from pdm_pipeline.core import paths
from pdm_pipeline.core.config import TrainingConfig
from pdm_pipeline.core.gates import (
    DEFAULT_BUNDLE_BUDGET_MB,
    DEFAULT_SIZE_BUDGET_MB,
    DEFAULT_TOTAL_BUDGET_MB,
    DataQualityLimits,
    QualityGateLimits,
    validate_strict,
)
from pdm_pipeline.core.schema import ANOMALY, CLASSIFICATION, REGRESSION, TIMESERIES


class DataRootResource(dg.ConfigurableResource):
    """The data root: `data_dir` if set, else $PDM_DATA_DIR, else ./data."""

    data_dir: str | None = Field(default=None, description="Data root; default $PDM_DATA_DIR or ./data")

    @property
    def root(self) -> Path:
        return paths.data_root(self.data_dir)


class TrainingResource(dg.ConfigurableResource):
    """Training settings for every model of the run (mirrors pdm_pipeline.core.config.TrainingConfig)."""

    preset: str = Field(default="pi", description="pi (default: small, fast), seed (the original settings), server")
    time_limit_s: float | None = Field(default=None, description="AutoGluon time limit per tabular model (s); default from the preset")
    excluded_models: list[str] = Field(default=[], description="model types to skip: classification, regression, anomaly, timeseries")
    contamination: float = Field(default=0.05, description="expected anomaly share among normal rows (sets the anomaly threshold)")
    forecast_hours: int = Field(default=24, description="forecast horizon in hours")
    horizon_hours: float | None = Field(default=None, description="label horizon H: fails within H hours; null = chosen on train")
    rul_cap_hours: float | None = Field(default=None, description="optional piecewise cap on the RUL target (hours)")
    seed: int = Field(default=0, description="random seed for every model")

    def config(self) -> TrainingConfig:
        return TrainingConfig(
            preset=self.preset,
            time_limit_s=self.time_limit_s,
            excluded_models=tuple(self.excluded_models),
            contamination=self.contamination,
            forecast_hours=self.forecast_hours,
            horizon_hours=self.horizon_hours,
            rul_cap_hours=self.rul_cap_hours,
            seed=self.seed,
        ).validate()


class GatesResource(dg.ConfigurableResource):
    """Limits of the data-quality checks, the Pi size gate and the quality gates."""

    classification_budget_mb: float = DEFAULT_SIZE_BUDGET_MB[CLASSIFICATION]
    regression_budget_mb: float = DEFAULT_SIZE_BUDGET_MB[REGRESSION]
    anomaly_budget_mb: float = DEFAULT_SIZE_BUDGET_MB[ANOMALY]
    timeseries_budget_mb: float = DEFAULT_SIZE_BUDGET_MB[TIMESERIES]
    total_budget_mb: float = DEFAULT_TOTAL_BUDGET_MB
    bundle_budget_mb: float = Field(default=DEFAULT_BUNDLE_BUDGET_MB, description="edge bundle, all files (MB)")
    classifier_min_roc_auc: float = 0.90
    classifier_min_precision: float = 0.85
    classifier_min_recall: float = 0.85
    anomaly_max_false_alarm_rate: float = 0.05
    max_single_row_latency_ms: float = 50.0
    strict_quality_gates: list[str] = Field(
        default=[], description="quality gates that block publication when they fail (e.g. classifier_roc_auc)"
    )
    max_critical_nan_share: float = 0.0
    max_irregular_step_share: float = 0.05
    default_max_rul_hours: float = 500.0
    max_ks_statistic: float = 0.30

    def budget_mb(self, model_type: str) -> float:
        return float(getattr(self, f"{model_type}_budget_mb"))

    def quality_limits(self) -> QualityGateLimits:
        validate_strict(tuple(self.strict_quality_gates))
        return QualityGateLimits(
            classifier_min_roc_auc=self.classifier_min_roc_auc,
            classifier_min_precision=self.classifier_min_precision,
            classifier_min_recall=self.classifier_min_recall,
            anomaly_max_false_alarm_rate=self.anomaly_max_false_alarm_rate,
            max_single_row_latency_ms=self.max_single_row_latency_ms,
            strict=tuple(self.strict_quality_gates),
        )

    def data_limits(self) -> DataQualityLimits:
        return DataQualityLimits(
            max_critical_nan_share=self.max_critical_nan_share,
            max_irregular_step_share=self.max_irregular_step_share,
            default_max_rul_hours=self.default_max_rul_hours,
            max_ks_statistic=self.max_ks_statistic,
        )
