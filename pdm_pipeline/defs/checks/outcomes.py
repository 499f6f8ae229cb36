"""Turn the core's GateOutcome into a Dagster AssetCheckResult with the value beside its limit."""

import dagster as dg

from pdm_pipeline.core.gates import ERROR, GateOutcome


def _number(value: float) -> int | float:
    """A count (an int, e.g. constant sensors) stays an int in the metadata; any other value is a float."""
    return int(value) if isinstance(value, int) else float(value)


def check_result(outcome: GateOutcome, asset_key: dg.AssetKey | None = None) -> dg.AssetCheckResult:
    metadata: dict = {"description": outcome.description, "status": outcome.status, "severity": outcome.severity}
    if outcome.value is not None:
        metadata["value"] = _number(outcome.value)
    if outcome.limit is not None:
        metadata["limit"] = outcome.limit if isinstance(outcome.limit, str) else _number(outcome.limit)
    if outcome.details:
        metadata["details"] = dg.MetadataValue.json(outcome.details)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=outcome.name,
        passed=bool(outcome.passed),
        severity=dg.AssetCheckSeverity.ERROR if outcome.severity == ERROR else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata=metadata,
    )


def emit(outcomes: list[GateOutcome], asset_key: dg.AssetKey, selected: set) -> list[dg.AssetCheckResult]:
    """Results of the outcomes that were judged (a skipped gate yields nothing: the UI shows it as skipped)."""
    out = []
    for outcome in outcomes:
        key = dg.AssetCheckKey(asset_key, outcome.name)
        if not outcome.skipped and (not selected or key in selected):
            out.append(check_result(outcome, asset_key))
    return out
