"""The fleet overview: one table of machines x models (headline metric, gate status, release, age) and pictures.

Unpartitioned: it reads each machine's current release (release.json, signature checked) and the metric
history of its evaluation materializations. Materialized by the `fleet_overview_job` (also after every
`make demo`), so the UI always has one page that answers "which machine runs which model, how good, since
when, and what blocked".
"""


import math
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from pdm_pipeline import families
from pdm_pipeline.core import keys, paths
from pdm_pipeline.core.release import current_release_dir, read_release
from pdm_pipeline.defs.partitions import MACHINES_PARTITION_NAME
from pdm_pipeline.defs.resources import DataRootResource, TrainingResource

FLEET_OVERVIEW = "fleet_overview"
HISTORY_POINTS = 20


def _age(created_at: str) -> str:
    try:
        delta = datetime.now(UTC) - datetime.fromisoformat(created_at)
    except ValueError:
        return "?"
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def fleet_rows(root: Any, machine_ids: list[str]) -> list[dict[str, Any]]:
    """One row per machine and family: action, headline metric, gates, release id and age."""
    trust = keys.local_trust(root)
    rows = []
    for machine_id in machine_ids:
        if not paths.is_valid_machine_id(machine_id):
            continue
        release_dir = current_release_dir(root, machine_id)
        if release_dir is None:
            rows.append({"machine": machine_id, "model": "-", "status": "no release yet"})
            continue
        try:
            release = read_release(release_dir, trust)
        except Exception as exc:  # one machine's damaged release must not hide the rest of the fleet
            rows.append({"machine": machine_id, "model": "-",
                         "status": f"release {release_dir.name} does not verify: {type(exc).__name__}: {exc}"})
            continue
        for family in families.all_families():
            entry = release["models"].get(family.model_type, {})
            metric, _ = family.headline_metrics[0]
            value = entry.get("metrics", {}).get(metric)
            gates = entry.get("gates", [])
            failed = [g["name"] for g in gates if g["status"] == "failed"]
            rows.append({
                "machine": machine_id,
                "model": family.model_type,
                "action": entry.get("action", "none"),
                "from_release": entry.get("source_release") or "-",
                "metric": metric,
                "value": value,
                "gates": "all passed" if not failed else ", ".join(failed),
                "release": release["release_id"],
                "age": _age(release["created_at"]),
                "reason": entry.get("reason", ""),
            })
    return rows


def overview_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| machine | model | release action | headline metric | gates not passed | model from release | age |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("model") == "-":
            lines.append(f"| {r['machine']} | - | {r['status']} | - | - | - | - |")
            continue
        value = r["value"]
        shown = "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"
        lines.append(f"| {r['machine']} | {r['model']} | {r['action']} | {r['metric']} {shown} | {r['gates']} | "
                     f"{r['from_release']} | {r['age']} |")
    return "\n".join(lines)


def metric_history(instance: dg.DagsterInstance, machine_ids: list[str]) -> dict[str, dict[str, list[float]]]:
    """family -> machine -> headline metric over its last evaluation materializations (oldest first)."""
    out: dict[str, dict[str, list[float]]] = {}
    for family in families.all_families():
        metric = family.headline_metrics[0][0]
        for machine_id in machine_ids:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(family.evaluation_asset), asset_partitions=[machine_id]),
                limit=HISTORY_POINTS,
            ).records
            values = []
            for record in reversed(records):
                meta = (record.asset_materialization.metadata or {}) if record.asset_materialization else {}
                value = getattr(meta.get(metric), "value", None)
                if isinstance(value, (int, float)):
                    values.append(float(value))
            if values:
                out.setdefault(family.model_type, {})[machine_id] = values
    return out


def history_picture(history: dict[str, dict[str, list[float]]]) -> str | None:
    from pdm_pipeline.core.plots import figure_markdown, new_figure

    if not history:
        return None
    kinds = list(history)
    fig, axes = new_figure(4.0 * len(kinds), 3.2, ncols=len(kinds))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, model_type in zip(axes, kinds):
        family = families.get(model_type)
        metric = family.headline_metrics[0][0]
        for machine_id, values in sorted(history[model_type].items()):
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=machine_id)
        ax.set_title(f"{model_type}: test {metric}")
        ax.set_xlabel("release (oldest to newest)")
        ax.legend(fontsize=7)
    return figure_markdown(fig, "headline test metric per machine over its releases")


@dg.asset(
    name=FLEET_OVERVIEW,
    group_name="fleet",
    kinds={"python"},
    description="Machines x models: release action, headline test metric, gates not passed, which release the "
    "model comes from and its age; plus each machine's metric over its releases.",
)
def fleet_overview(context: dg.AssetExecutionContext, data_root: DataRootResource) -> dg.MaterializeResult:
    root = data_root.root
    machine_ids = sorted(context.instance.get_dynamic_partitions(MACHINES_PARTITION_NAME))
    rows = fleet_rows(root, machine_ids)
    metadata: dict[str, Any] = {
        "machines": len(machine_ids),
        "released_models": sum(1 for r in rows if r.get("action") == "released"),
        "overview": dg.MetadataValue.md(overview_table(rows)),
    }
    picture = history_picture(metric_history(context.instance, machine_ids))
    if picture:
        metadata["metric_history"] = dg.MetadataValue.md(picture)
    return dg.MaterializeResult(metadata=metadata)


FLEET_MODELS = "fleet_models"
FLEET_JOB = "train_fleet_models"


@dg.asset(
    name=FLEET_MODELS,
    group_name="fleet",
    kinds={"autogluon"},
    description="One pooled failure classifier and RUL regressor per fleet (machines sharing a machine_type), "
    "trained on every member's train rows with the machine as a feature (rows without time order: and each member's "
    "copy of every feature); each machine's own run then chooses, on its val rows, between its own model and the "
    "fleet's (data/fleets/<fleet>/current).",
)
def fleet_models(
    context: dg.AssetExecutionContext, data_root: DataRootResource, training: TrainingResource
) -> dg.MaterializeResult:
    from pdm_pipeline.core.fleet import fleets, train_fleet

    root = data_root.root
    config = training.settings()
    rows = ["| fleet | members | release | pooled | inputs | not pooled (why) |", "|---|---|---|---|---|---|"]
    found = fleets(root)
    if not found:
        context.log.info("no fleet has 2 or more machines: nothing to pool")
    for fleet, members in sorted(found.items()):
        context.log.info(f"fleet {fleet}: pooling {len(members)} machines ({', '.join(members)})")
        result = train_fleet(root, fleet, config, run_id=context.run_id)
        skipped = "; ".join(f"{t}: {r}" for t, r in result.skipped.items()) or "-"
        release = result.release_id or (f"- (withdrew {result.retired})" if result.retired else "-")
        rows.append(f"| {fleet} | {', '.join(result.members)} | {release} | "
                    f"{', '.join(result.models) or '-'} | {result.inputs or '-'} | {skipped} |")
    return dg.MaterializeResult(metadata={"fleets": len(found), "pooled": dg.MetadataValue.md("\n".join(rows))})


fleet_models_job = dg.define_asset_job(
    FLEET_JOB, selection=[FLEET_MODELS],
    executor_def=dg.in_process_executor,  # one step: its process is the run's (the recovery sweep watches its pid)
    description="Train the pooled models of every fleet; machine runs afterwards may adopt them (chosen on val).",
)


FLEET_OVERVIEW_JOB = "fleet_overview_job"
fleet_overview_job = dg.define_asset_job(
    FLEET_OVERVIEW_JOB, selection=[FLEET_OVERVIEW],
    executor_def=dg.in_process_executor,  # one step: its process is the run's (the recovery sweep watches its pid)
    description="Refresh the fleet overview (run by fleet_overview_sensor after new releases, and by `make demo`).",
)
