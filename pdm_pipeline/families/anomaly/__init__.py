"""Anomaly ensemble: unsupervised detectors fitted on normal train rows, weighted on val, debounced alarm."""

from pdm_pipeline.families.base import ModelFamily, QualityGate

ENSEMBLE = "ensemble"
ANOMALY_SCORE = "anomaly_score"
ANOMALY_FLAG = "anomaly_flag"
DETECTORS: tuple[str, ...] = (
    "isolation_forest",
    "one_class_svm",
    "local_outlier_factor",
    "zscore",
    "hotelling_t2",
    "spe_q",
    "autoencoder",
)

FAMILY = ModelFamily(
    model_type="anomaly",
    asset_name="anomaly_detector",
    title="anomaly ensemble",
    description="IsolationForest, OneClassSVM, LOF, z-score, PCA T² and Q, MLP autoencoder fitted on normal train "
    "rows; detectors weighted on val, threshold from val normal rows, debounced alarm",
    kind="scikitlearn",
    baseline_name="random flags at the contamination rate (expected values)",
    headline_metrics=(("f1", True), ("false_alarm_rate", False), ("roc_auc", True), ("event_recall", True)),
    champion_metric=None,
    size_budget_mb=50.0,
    quality_gates=(
        QualityGate("anomaly_false_alarm_rate", "false_alarm_rate", 0.05, "max",
                    "share of normal test rows flagged by the alarm"),
        # The conformal threshold keeps the expected false-alarm rate at most `contamination` on any number of
        # rows, but on few it is close to their largest score and the rate on new rows spreads widely around it
        # (its standard deviation is about contamination / sqrt(rows x contamination)).
        QualityGate("anomaly_threshold_support", "threshold_expected_exceedances", 5.0, "min",
                    "normal rows the threshold was set on x contamination: the rows expected above it there"),
        QualityGate("anomaly_single_row_latency", "single_row_latency_ms", 50.0, "max",
                    "one-row scoring time of the shipped ensemble (ms)"),
    ),
    package=__name__,
    output_columns=(ANOMALY_SCORE, ANOMALY_FLAG),
)
