"""pdm-pipeline: predictive-maintenance models per machine, trained and gated as a Dagster asset graph.

`pdm_pipeline.core` is plain Python (no Dagster); `pdm_pipeline.defs` wires it into Dagster.
"""

import os

# Two-thread LightGBM/sklearn spin-wait for work under OpenMP's default policy, which slows every other step
# running beside them (measured: a LightGBM fit 30.6 s -> 4.3 s on 2 busy cores). Set before anything loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MLflow 3 sends usage telemetry by default; a training pipeline has no business phoning home.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
