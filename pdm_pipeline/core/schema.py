"""Names shared by every part of the pipeline: splits, reserved columns, model types."""

from __future__ import annotations

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Reserved columns of the data contract. None of them is ever a model feature.
TIMESTAMP = "timestamp"
RUL = "rul"
UNIT_ID = "unit_id"
# Label written by the labels step (or given by an importer): 1 = "fails within the next H hours".
LABEL = "failure_status"
# Optional column an importer may keep for evaluation only (e.g. NAB anomaly windows).
EVAL_ANOMALY = "anomaly_window"

RESERVED_COLUMNS: frozenset[str] = frozenset({TIMESTAMP, RUL, UNIT_ID, LABEL, EVAL_ANOMALY})

# Model types, as used in paths (data/models/<type>/<machine_id>/) and in the CLI.
CLASSIFICATION = "classification"
REGRESSION = "regression"
ANOMALY = "anomaly"
TIMESERIES = "timeseries"
MODEL_TYPES: tuple[str, ...] = (CLASSIFICATION, REGRESSION, ANOMALY, TIMESERIES)
