"""pdm-pipeline: predictive-maintenance models per machine, trained and gated as a Dagster asset graph.

`pdm_pipeline.core` is plain Python (no Dagster); `pdm_pipeline.defs` wires it into Dagster.
"""

__version__ = "0.1.0"
