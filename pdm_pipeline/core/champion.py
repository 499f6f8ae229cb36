"""The champion rule per machine: the registry alias `champion` moves to a new classifier/regressor version only
when it passed its gates and beats the current champion re-scored on the SAME (current) test data."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from pdm_pipeline.core import tracking
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.core.pipeline import FeatureFrames, TrainedModel
from pdm_pipeline.core.schema import CLASSIFICATION, REGRESSION

# Model type -> (test metric that decides, higher is better).
CHAMPION_METRIC: dict[str, tuple[str, bool]] = {CLASSIFICATION: ("f1", True), REGRESSION: ("rmse", False)}


def _rescore(model_type: str, model_dir: Path, features: FeatureFrames) -> float | None:
    from pdm_pipeline.core import tabular

    evaluate = tabular.evaluate_classifier if model_type == CLASSIFICATION else tabular.evaluate_regressor
    metric = CHAMPION_METRIC[model_type][0]
    return evaluate(model_dir, features.frames["test"]).metrics.get(metric)


def promote_champions(
    tracking_uri: str,
    trained: dict[str, TrainedModel],
    evaluations: dict[str, Evaluation],
    features: FeatureFrames,
    data_version: str,
    passed_gates: dict[str, bool],
    log: Callable[[str], None] = print,
) -> dict[str, tracking.ChampionDecision]:
    """Register each tracked classifier/regressor and move `champion` when the rule says so."""
    decisions = {}
    for model_type, (metric, higher_is_better) in CHAMPION_METRIC.items():
        model = trained.get(model_type)
        run_id = model.summary.get("mlflow_run_id") if model and not model.skipped else None
        new_score = evaluations[model_type].metrics.get(metric) if run_id else None
        if run_id is None or new_score is None:
            continue
        champion_score = None
        if tracking.current_champion(tracking_uri=tracking_uri, machine_id=model.machine_id, model_type=model_type):
            with tempfile.TemporaryDirectory() as tmp:
                champion_dir = tracking.champion_artifact_dir(
                    tracking_uri=tracking_uri, machine_id=model.machine_id, model_type=model_type, dst=Path(tmp)
                )
                if champion_dir is not None:
                    champion_score = _rescore(model_type, champion_dir, features)
        decision = tracking.register_and_promote(
            tracking_uri=tracking_uri,
            run_id=run_id,
            machine_id=model.machine_id,
            model_type=model_type,
            data_version=data_version,
            new_score=float(new_score),
            champion_score_on_same_data=champion_score,
            higher_is_better=higher_is_better,
            passed_gates=passed_gates.get(model_type, False),
            metric_name=metric,
        )
        log(f"{model_type} champion: {decision.reason}")
        decisions[model_type] = decision
    return decisions
