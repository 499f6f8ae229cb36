"""What an operator sees from the CLI: gate outcomes in the summary, a true last line, exit codes that tell
"published" from "published with warnings" from "blocked", no library warnings, and the fleet overview.

Two real CLI runs over two machines (anomaly model only, for time): one with the latency gate made strict and
unreachable (blocked: exit 4, nothing released), then one with the default gates (exit 3 when a WARN gate fails on
a machine, 0 when none does). The fleet overview asset then lists both machines with what their releases say.
"""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
from helpers import assert_picture
from test_crash_recovery import run_cli, write_home

from pdm_pipeline.core import keys
from pdm_pipeline.core.release import current_release_dir, read_release
from pdm_pipeline.defs.instance_config import open_instance

pytestmark = pytest.mark.slow

MACHINES = ("motor_001", "pump_002")
RUN = ["run", "--machine-id", MACHINES[0], "--machine-id", MACHINES[1], "--models", "anomaly", "--set",
       "time_limit_s=5"]
NOISE = ("BetaWarning", "PreviewWarning", "DeprecationWarning", "FutureWarning", "UserWarning", "torch",
         "Traceback")


@pytest.fixture(scope="module")
def site(tiny_fleet_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("operator")
    root = base / "data"
    shutil.copytree(tiny_fleet_root, root)
    home = write_home(base / "home")
    blocked = run_cli([*RUN, "--set", "strict_quality_gates=anomaly_single_row_latency",
                       "--set", "quality_limits.anomaly_single_row_latency=0.000001",
                       "--set", "horizon=2"], home, root)
    published = run_cli(RUN, home, root)
    return root, home, blocked, published


def test_a_blocked_gate_is_named_with_value_and_limit_and_exits_4(site):
    _, _, blocked, _ = site
    assert blocked.returncode == 4, blocked.stdout + blocked.stderr
    out = blocked.stdout
    for machine in MACHINES:
        assert f"== {machine}: BLOCKED" in out
    assert out.count("gate anomaly_single_row_latency BLOCKED: single_row_latency_ms") == 2
    assert "(needs <= 1e-06)" in out
    assert out.strip().splitlines()[-2] == "2 machine(s): 2 blocked"


def test_the_summary_lists_the_data_checks_of_the_run_that_warned(site):
    """label_balance runs inside the run (on the labels), not in the pre-queue check: it is listed all the same."""
    _, _, blocked, published = site
    for machine in MACHINES:
        section = blocked.stdout.split(f"== {machine}:")[1].split("\n==")[0]
        assert "  data            label_balance warned: train positive rate" in section, section
    assert "label_balance warned" not in published.stdout


def test_the_published_summary_says_which_gates_warned_and_the_exit_code_follows(site):
    root, _, _, published = site
    out = published.stdout
    warned = {}
    for machine in MACHINES:
        release = read_release(current_release_dir(root, machine), keys.local_trust(root))
        gates = [g for g in release["models"]["anomaly"]["gates"] if g["status"] == "failed"]
        warned[machine] = bool(gates)
        word = "PUBLISHED WITH WARNINGS" if gates else "PUBLISHED"
        assert f"== {machine}: {word} -" in out
        for gate in gates:
            assert f"gate {gate['name']} warned: {gate['description']}" in out
    assert published.returncode == (3 if any(warned.values()) else 0), published.stdout + published.stderr
    counts = {w: sum(1 for v in warned.values() if v == w) for w in (True, False)}
    expected = "; ".join(p for p in (f"{counts[True]} published with warnings" if counts[True] else "",
                                     f"{counts[False]} published" if counts[False] else "") if p)
    assert out.strip().splitlines()[-2] == f"2 machine(s): {expected}"


def test_the_terminal_carries_no_library_warning(site):
    _, _, blocked, published = site
    for done in (blocked, published):
        noise = [line for line in (done.stdout + done.stderr).splitlines() if any(n in line for n in NOISE)]
        assert not noise, noise[:5]


def test_the_fleet_overview_lists_every_machine_and_model_with_its_gate_status(site):
    root, home, _, _ = site
    with open_instance(home) as instance:
        record = instance.fetch_materializations(dg.AssetKey("fleet_overview"), limit=1, ascending=False).records[0]
        metadata = record.asset_materialization.metadata
    assert metadata["machines"].value == 2 and metadata["released_models"].value == 2
    table = metadata["overview"].value
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert {(cells[1].strip(), cells[2].strip()) for cells in (line.split("|") for line in lines)} >= {
        (m, t) for m in MACHINES for t in ("classification", "regression", "anomaly", "timeseries")}
    for machine in MACHINES:
        release = read_release(current_release_dir(root, machine), keys.local_trust(root))
        failed = [g["name"] for g in release["models"]["anomaly"]["gates"] if g["status"] == "failed"]
        (row,) = [line for line in lines if line.startswith(f"| {machine} | anomaly |")]
        assert "| released |" in row and (", ".join(failed) if failed else "all passed") in row, row
    assert_picture(metadata["metric_history"].value)


def test_one_machines_damaged_release_does_not_hide_the_rest_of_the_fleet(site, tmp_path):
    """A release.json edited by a byte failed the whole fleet overview (IntegrityError): no machine was shown. That
    machine's row now says its release does not verify, and the others are listed as before."""
    from pdm_pipeline.defs.assets.fleet import fleet_rows, overview_table

    root = tmp_path / "data"
    shutil.copytree(site[0], root, symlinks=True)
    release = current_release_dir(root, MACHINES[0]) / "release.json"
    release.write_bytes(release.read_bytes().replace(b'"machine_id"', b'"machine_iD"', 1))
    rows = fleet_rows(root, list(MACHINES))
    (damaged,) = [r for r in rows if r["machine"] == MACHINES[0]]
    assert damaged["model"] == "-" and "does not verify" in damaged["status"], damaged
    assert {r["model"] for r in rows if r["machine"] == MACHINES[1]} == {
        "classification", "regression", "anomaly", "timeseries"}
    assert "does not verify" in overview_table(rows)
