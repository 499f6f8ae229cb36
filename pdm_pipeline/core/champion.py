"""The MLflow registry after a release: `champion` and `deployed` aliases per machine and family.

For each family with a champion metric whose model has an MLflow run (logged by the tracking of its training):
the version is registered; `champion` moves to it only when it passed its gates and beats the current champion
re-scored on the SAME test data (the champion's artifacts are downloaded, their signed manifest verified, then
evaluated through the family's own evaluation); `deployed` always points at the version in the current release
(the one on disk and in the bundle), so a person can tell which model the Pi runs, whatever `champion` says.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdm_pipeline import families
from pdm_pipeline.core import tracking
from pdm_pipeline.core.evaluation import Evaluation
from pdm_pipeline.edge.integrity import Trust, verify_dir
from pdm_pipeline.families.base import TrainedModel

log = logging.getLogger(__name__)


def _rescore(model_type: str, model_dir: Path, data: Any, features: Any, trust: Trust) -> float | None:
    from pdm_pipeline.core.pipeline import test_view

    family = families.get(model_type)
    verify_dir(model_dir, trust, f"champion {model_type} model from MLflow")
    metric = family.champion_metric[0]
    return family.evaluate(model_dir, test_view(data, features)).metrics.get(metric)


def promote_champions(
    tracking_uri: str,
    result: Any,
    trained: Mapping[str, TrainedModel],
    evaluations: Mapping[str, Evaluation],
    data: Any,
    features: Any,
    data_version: str,
    trust: Trust,
) -> dict[str, Any]:
    decisions: dict[str, Any] = {}
    for family in families.all_families():
        t = family.model_type
        model = trained.get(t)
        run_id = model.summary.get("mlflow_run_id") if model is not None and not model.skipped else None
        if family.champion_metric is None:  # no champion to compare with; still registered as what is deployed
            if run_id and result.decisions.get(t) is not None and result.decisions[t].action == "released":
                version = tracking.mark_deployed(
                    tracking_uri=tracking_uri, run_id=run_id, machine_id=model.machine_id, model_type=t,
                    release_id=result.release_id, why=f"{family.title}: no champion metric, deployed with its release")
                decisions[t] = {"promoted": False, "version": version, "deployed": True,
                                "reason": "no champion metric: registered as deployed with its release"}
            continue
        metric, higher_is_better = family.champion_metric
        evaluation = evaluations.get(t)
        new_score = evaluation.metrics.get(metric) if run_id and evaluation is not None else None
        if run_id is None or new_score is None:
            continue
        released = result.decisions[t].action == "released"
        champion_score = None
        if data is not None and features is not None and tracking.current_champion(
            tracking_uri=tracking_uri, machine_id=model.machine_id, model_type=t
        ):
            with tempfile.TemporaryDirectory() as tmp:
                champion_dir = tracking.champion_artifact_dir(
                    tracking_uri=tracking_uri, machine_id=model.machine_id, model_type=t, dst=Path(tmp)
                )
                if champion_dir is not None:
                    try:
                        champion_score = _rescore(t, champion_dir, data, features, trust)
                    except Exception as exc:
                        log.warning(f"{t} champion could not be re-scored: {exc}")
        decision = tracking.register_and_promote(
            tracking_uri=tracking_uri,
            run_id=run_id,
            machine_id=model.machine_id,
            model_type=t,
            data_version=data_version,
            new_score=float(new_score),
            champion_score_on_same_data=champion_score,
            higher_is_better=higher_is_better,
            passed_gates=released,
            metric_name=metric,
            deployed=released,
            release_id=result.release_id if released else None,
        )
        log.info(f"{t} champion: {decision.reason}")
        decisions[t] = {"promoted": decision.promoted, "version": decision.version, "reason": decision.reason,
                        "deployed": released}
    return decisions
