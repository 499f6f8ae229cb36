import json
from pathlib import Path

from pdm_pipeline.families.base import CARD_FILE


def train(view, out_dir: Path, config) -> dict:
    sensor = view.feature_names[0]
    mean = float(view.frames["train"][sensor].mean())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CARD_FILE).write_text(json.dumps({"model_type": "toy_level", "sensor": sensor, "mean": mean,
                                                 "format": "json"}))
    return {"sensor": sensor, "mean": mean}
