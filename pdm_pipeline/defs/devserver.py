"""`dagster dev` (webserver, daemon, code server) as a context manager over a given Dagster home and data root.

Used by `pdm-pipeline bench-fleet` (the real daemon path: sensor -> queue -> runs) and by the tests that need
the queue, the daemon or the webserver's GraphQL API.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from pdm_pipeline.defs.launch import PreQueueError, server_client

DEFINITIONS_MODULE = "pdm_pipeline.defs.definitions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """Start `dagster dev` on a free port with DAGSTER_HOME=home and PDM_DATA_DIR=data_root; stop it on exit."""

    def __init__(self, home: Path, data_root: Path, *, log_path: Path | None = None, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 180.0) -> None:
        self.home, self.data_root = Path(home), Path(data_root)
        self.log_path = Path(log_path) if log_path else self.home / "dagster_dev.log"
        self.port = free_port()
        self.env = dict(os.environ, DAGSTER_HOME=str(self.home), PDM_DATA_DIR=str(self.data_root), **(env or {}))
        if "MLFLOW_TRACKING_URI" not in (env or {}):
            self.env.pop("MLFLOW_TRACKING_URI", None)
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.client: Any = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DagsterDev:
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(self.port),
             "-m", DEFINITIONS_MODULE],
            cwd=self.home, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + self.startup_timeout_s
        while self.client is None:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.time() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"dagster dev did not answer within {self.startup_timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(1)
            try:
                self.client = server_client(self.address)
            except PreQueueError:
                self.client = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(f"http://{self.address}/graphql",
                                         data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop_sensor(self, name: str) -> None:
        """Stop a sensor the way the UI's toggle does."""
        found = self.graphql("""query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
            __typename ... on Sensor { id } } }""", {"s": {
            "repositoryLocationName": self.client.pdm_location, "repositoryName": "__repository__", "sensorName": name}})
        sensor_id = found["data"]["sensorOrError"]["id"]
        stopped = self.graphql("""mutation($id: String) { stopSensor(id: $id) { __typename
            ... on StopSensorMutationResult { instigationState { status } } } }""", {"id": sensor_id})
        status = ((stopped.get("data") or {}).get("stopSensor") or {}).get("instigationState", {}).get("status")
        if status != "STOPPED":
            raise RuntimeError(f"could not stop sensor {name}: {stopped}")

    def process_tree_rss_bytes(self) -> int:
        """Resident memory of dagster dev and every process under it (run workers included)."""
        if self.proc is None:
            return 0
        return tree_rss_bytes(self.proc.pid)


def tree_rss_bytes(root_pid: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * page
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total
