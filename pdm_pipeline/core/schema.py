"""Names shared by every part of the pipeline: splits and reserved columns (model types live in the family registry)."""

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
