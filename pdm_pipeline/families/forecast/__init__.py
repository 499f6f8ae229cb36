"""Per-sensor forecasts with 80 %/95 % intervals: Prophet, or the seasonal-naive forecast where Prophet loses on val."""

from pdm_pipeline.families.base import ModelFamily

FAMILY = ModelFamily(
    model_type="timeseries",
    asset_name="sensor_forecasts",
    title="sensor forecasts",
    description="Per-sensor forecasts (24 h for clock data, 24 steps otherwise) with 80/95 % intervals: Prophet on a "
    "trailing window, or the seasonal-naive forecast when Prophet does not beat it on val",
    kind="prophet",
    baseline_name="seasonal naive (value one season earlier)",
    headline_metrics=(("mase", False), ("coverage_80", True), ("coverage_95", True)),
    champion_metric=None,
    size_budget_mb=100.0,
    quality_gates=(),
    package=__name__,
    uses_features=False,
)
