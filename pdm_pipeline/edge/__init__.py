"""The edge runtime: what a Raspberry Pi installs (`pip install 'pdm-pipeline[edge]'`) to predict from a bundle.

It needs numpy, pandas, pyarrow, lightgbm and cryptography only (Prophet for refitted forecasts, XGBoost or
CatBoost for bundles that ship those boosters): never Dagster, AutoGluon or MLflow.

    from pdm_pipeline.edge import EdgePredictor
    predictor = EdgePredictor.load("bundle/", public_key="public_key.pem")   # verifies every file first
    predictor.predict(recent_rows)
"""

from __future__ import annotations

from typing import Any

__all__ = ["EdgePredictor", "read_input"]


def __getattr__(name: str) -> Any:  # lazy: `import pdm_pipeline.edge.integrity` stays light
    if name in __all__:
        from pdm_pipeline.edge import predictor

        return getattr(predictor, name)
    raise AttributeError(name)
