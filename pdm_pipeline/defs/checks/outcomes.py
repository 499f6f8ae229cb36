"""Turn the core's GateOutcome into a Dagster AssetCheckResult with the value beside its limit."""


import dagster as dg

from pdm_pipeline.core.gates import ERROR, GateOutcome


def check_result(outcome: GateOutcome, asset_key: dg.AssetKey | None = None) -> dg.AssetCheckResult:
    metadata: dict = {"description": outcome.description}
    if outcome.value is not None:
        metadata["value"] = float(outcome.value)
    if outcome.limit is not None:
        metadata["limit"] = outcome.limit if isinstance(outcome.limit, str) else float(outcome.limit)
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
