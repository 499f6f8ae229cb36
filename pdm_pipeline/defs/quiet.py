"""Quiet terminals: the known Beta/Preview warnings of the Dagster APIs we use on purpose (dagster-mlflow's
resource, asset-check and dynamic-partition APIs) are filtered at their source, by category and module, never
with a blanket ignore: every other warning still shows. (AutoGluon's torch probe is silenced where AutoGluon is
used: families/tabular.py.)"""

from __future__ import annotations

import warnings

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    import dagster as dg

    for category in (dg.BetaWarning, dg.PreviewWarning):
        for module in (r"dagster(\..*)?", r"dagster_mlflow(\..*)?", r"dagster_graphql(\..*)?", r"pdm_pipeline(\..*)?"):
            warnings.filterwarnings("ignore", category=category, module=module)
    _installed = True
