"""The production deployment files (pdm_pipeline/deploy) load, are wired together, and cannot drift.

Nothing here starts Docker, Kubernetes or PostgreSQL: every file is checked against the schema of what reads
it (Dagster's instance schema and each configured class's own `config_type()`, dagster-celery's worker config,
the Helm chart's value keys), the cross-references between files are followed (compose -> workspace, celery
config, Dockerfile; instance -> network, volume, environment), and the run queue of every deployment is
compared with the repository's dagster.yaml through Dagster's own RunQueueConfig.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "pdm_pipeline" / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
LOCAL_INSTANCE = REPO / "dagster.yaml"

PIPELINE_SERVICES = ("user_code", "webserver", "daemon", "celery_worker")
COMPOSE_SERVICES = ("postgres", "rabbitmq", *PIPELINE_SERVICES)

# Values the compose file gives the pipeline services (what `env:` references resolve to at run time).
FAKE_ENV = {
    "DAGSTER_POSTGRES_USER": "dagster",
    "DAGSTER_POSTGRES_PASSWORD": "secret",
    "DAGSTER_POSTGRES_HOST": "postgres",
    "DAGSTER_POSTGRES_DB": "dagster",
    "PDM_DATA_DIR": "/data",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "PDM_EXECUTOR": "celery",
    "PDM_CELERY_BROKER": "pyamqp://pdm:pw@rabbitmq:5672//",
    "PDM_CELERY_BACKEND": "rpc://",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def pyproject_dagster() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["dagster"]


def env_refs(node: Any) -> Iterator[str]:
    """Every `{env: NAME}` reference in a Dagster config tree."""
    if isinstance(node, Mapping):
        if set(node) == {"env"} and isinstance(node["env"], str):
            yield node["env"]
        else:
            for value in node.values():
                yield from env_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from env_refs(value)


def class_config(section: Mapping[str, Any]) -> Any:
    """Import a `module`/`class` section's class and process its config with the class's own schema.

    Processing (not only validating) also resolves `env:` references, so the environment must be set.
    """
    from dagster._config import process_config, resolve_to_config_type

    cls = getattr(importlib.import_module(section["module"]), section["class"])
    result = process_config(resolve_to_config_type(cls.config_type()), section.get("config") or {})
    assert result.success, f"{section['module']}.{section['class']}: " + "; ".join(e.message for e in result.errors)
    return result.value


def rehydrate(section: Mapping[str, Any]) -> Any:
    """Build the configured object exactly as the instance does (import, validate, from_config_value)."""
    from dagster._serdes.config_class import ConfigurableClassData

    return ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(section.get("config") or {})).rehydrate()


def run_queue(instance: Mapping[str, Any]):
    """The effective run queue of an instance config: its coordinator's config overridden by `concurrency`,
    the way DagsterInstance.get_concurrency_config combines them."""
    from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator

    coordinator = rehydrate(instance["run_coordinator"])
    assert isinstance(coordinator, QueuedRunCoordinator)
    return coordinator.get_run_queue_config().with_concurrency_settings(instance.get("concurrency") or {})


@pytest.fixture
def instance_env(monkeypatch):
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    return FAKE_ENV


# --- every file ---------------------------------------------------------------------------------------


EXPECTED_FILES = (
    "README.md",
    "docker/Dockerfile",
    "docker/dagster.yaml",
    "docker/docker-compose.yaml",
    "docker/workspace.yaml",
    "docker/celery.yaml",
    "k8s/values.yaml",
    "k8s/pvc.yaml",
)


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_deployment_file_exists(name):
    assert (DEPLOY / name).is_file(), f"pdm_pipeline/deploy/{name} is missing"


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_to_a_mapping(path):
    data = load_yaml(path)
    assert isinstance(data, dict) and data, f"{path.relative_to(REPO)} is empty or not a mapping"


def test_the_pvc_is_a_read_write_many_claim_named_like_the_volumes_that_use_it():
    pvc = load_yaml(K8S / "pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["apiVersion"] == "v1"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "pods on different nodes share the data root"
    assert pvc["spec"]["resources"]["requests"]["storage"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in helm_data_volumes(load_yaml(K8S / "values.yaml"))}
    assert claims == {pvc["metadata"]["name"]}


# --- Docker: the instance -----------------------------------------------------------------------------


def test_docker_instance_validates_against_dagsters_instance_schema(instance_env):
    from dagster._core.instance.config import dagster_instance_config

    config, custom_instance_class = dagster_instance_config(str(DOCKER), "dagster.yaml")
    assert custom_instance_class is None
    assert set(config["storage"]) == {"postgres"}


def test_docker_instance_storage_reads_postgres_from_the_environment(instance_env):
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.storage.config import pg_config

    storage = load_yaml(DOCKER / "dagster.yaml")["storage"]["postgres"]
    db = storage["postgres_db"]
    for key in ("username", "password", "hostname", "db_name"):
        assert set(db[key]) == {"env"}, f"storage.postgres.postgres_db.{key} must come from the environment"
    result = process_config(resolve_to_config_type(pg_config()), storage)
    assert result.success, [e.message for e in result.errors]
    resolved = result.value["postgres_db"]
    assert resolved["hostname"] == instance_env["DAGSTER_POSTGRES_HOST"]
    assert resolved["password"] == instance_env["DAGSTER_POSTGRES_PASSWORD"]


@pytest.mark.parametrize("section", ["run_launcher", "run_coordinator", "compute_logs", "local_artifact_storage"])
def test_docker_instance_classes_import_and_accept_their_config(instance_env, section):
    class_config(load_yaml(DOCKER / "dagster.yaml")[section])


def test_a_typo_in_a_class_config_key_is_caught(instance_env):
    launcher = dict(load_yaml(DOCKER / "dagster.yaml")["run_launcher"])
    launcher["config"] = {**launcher["config"], "env_var": ["PDM_DATA_DIR"]}
    with pytest.raises(AssertionError, match="env_var"):
        class_config(launcher)


def test_docker_run_launcher_builds_and_checks_run_worker_health(instance_env):
    from dagster_docker import DockerRunLauncher

    instance = load_yaml(DOCKER / "dagster.yaml")
    launcher = rehydrate(instance["run_launcher"])
    assert isinstance(launcher, DockerRunLauncher)
    assert instance["run_monitoring"]["enabled"] is True
    assert launcher.supports_check_run_worker_health, "run_monitoring needs a launcher that checks run workers"


def test_every_env_reference_reaches_the_services_and_the_run_containers():
    instance = load_yaml(DOCKER / "dagster.yaml")
    refs = set(env_refs(instance))
    refs |= set(env_refs(load_yaml(DOCKER / "celery.yaml")))
    passed_to_runs = set(instance["run_launcher"]["config"]["env_vars"])
    # What the pipeline reads at run time, besides the instance's own references.
    runtime = {"PDM_DATA_DIR", "MLFLOW_TRACKING_URI", "PDM_EXECUTOR", "PDM_CELERY_BROKER", "PDM_CELERY_BACKEND"}
    assert refs | runtime <= passed_to_runs, f"not passed to run containers: {sorted(refs | runtime - passed_to_runs)}"
    compose = load_yaml(DOCKER / "docker-compose.yaml")
    for name in PIPELINE_SERVICES:
        env = compose["services"][name]["environment"]
        missing = passed_to_runs - set(env)
        assert not missing, f"compose service {name} lacks {sorted(missing)} (the launcher copies them from it)"


# --- Docker: compose, workspace, celery, Dockerfile --------------------------------------------------


def command_args(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def option(args: list[str], *names: str) -> str:
    for i, arg in enumerate(args):
        if arg in names:
            return args[i + 1]
    raise AssertionError(f"none of {names} in {args}")


def bind_mounts(service: Mapping[str, Any]) -> dict[str, Path]:
    """container path -> host path of the service's bind mounts (relative to the compose file)."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (DOCKER / source).resolve() if source.startswith(".") else Path(source)
    return mounts


def named_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """volume name -> container path of the service's named volumes."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if not source.startswith((".", "/")):
            mounts[source] = target
    return mounts


def test_compose_has_the_services_of_the_deployment():
    services = load_yaml(DOCKER / "docker-compose.yaml")["services"]
    assert set(COMPOSE_SERVICES) <= set(services), f"missing: {sorted(set(COMPOSE_SERVICES) - set(services))}"


def test_the_grpc_server_serves_the_projects_code_location_where_the_workspace_looks():
    compose = load_yaml(DOCKER / "docker-compose.yaml")
    args = command_args(compose["services"]["user_code"])
    assert args[:3] == ["dagster", "api", "grpc"]
    module = option(args, "-m", "--module-name")
    assert module == pyproject_dagster()["module_name"]
    assert importlib.util.find_spec(module) is not None, f"{module} is not importable"
    assert option(args, "-h", "--host") == "0.0.0.0"

    (entry,) = load_yaml(DOCKER / "workspace.yaml")["load_from"]
    server = entry["grpc_server"]
    assert server["host"] in compose["services"], "the workspace's host is the code server's compose service"
    assert server["host"] == "user_code"
    assert int(server["port"]) == int(option(args, "-p", "--port"))
    assert server["location_name"] == pyproject_dagster()["code_location_name"]


@pytest.mark.parametrize("name", ["webserver", "daemon"])
def test_webserver_and_daemon_load_the_workspace_file_of_this_folder(name):
    service = load_yaml(DOCKER / "docker-compose.yaml")["services"][name]
    workspace = option(command_args(service), "-w", "--workspace")
    host_file = bind_mounts(service).get(workspace)
    assert host_file == DOCKER / "workspace.yaml", f"{name} reads {workspace}, not bind-mounted from workspace.yaml"
    assert "/var/run/docker.sock" in bind_mounts(service), f"{name} needs the Docker API (DockerRunLauncher)"


def test_every_bind_mounted_file_exists():
    services = load_yaml(DOCKER / "docker-compose.yaml")["services"]
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            if source.is_relative_to(REPO):
                assert source.is_file(), f"{name}: {source} (mounted at {target}) does not exist"


def test_the_celery_worker_starts_with_the_celery_config_of_this_folder(instance_env):
    from dagster_celery.cli import get_validated_config, worker_start_command

    service = load_yaml(DOCKER / "docker-compose.yaml")["services"]["celery_worker"]
    args = command_args(service)
    assert args[:3] == ["dagster-celery", "worker", "start"]
    assert option(args, "-A", "--app") == "dagster_celery.app"
    config_path = option(args, "-y", "--config-yaml")
    host_file = bind_mounts(service).get(config_path)
    assert host_file == DOCKER / "celery.yaml"
    # The same argv, with the container path replaced by the file here, parses with dagster-celery's CLI.
    local_args = [str(host_file) if a == config_path else a for a in args[3:]]
    worker_start_command.make_context("start", local_args)
    config = get_validated_config(str(host_file))
    assert config["broker"] == instance_env["PDM_CELERY_BROKER"]
    assert config["backend"] == instance_env["PDM_CELERY_BACKEND"]


def test_workers_and_the_jobs_celery_executor_use_the_same_broker(instance_env, monkeypatch):
    """pdm_pipeline.defs.jobs builds the Celery executor from the variables celery.yaml reads."""
    import dagster_celery
    from dagster_celery.cli import get_validated_config

    from pdm_pipeline.defs.jobs import executor

    seen = {}

    class RecordingExecutor:
        def configured(self, config):
            seen.update(config)
            return "configured"

    monkeypatch.setattr(dagster_celery, "celery_executor", RecordingExecutor())
    assert executor() == "configured"
    worker = get_validated_config(str(DOCKER / "celery.yaml"))
    assert seen == {"broker": worker["broker"], "backend": worker["backend"]}


def test_every_pipeline_service_and_run_container_mounts_the_data_root_at_pdm_data_dir():
    compose = load_yaml(DOCKER / "docker-compose.yaml")
    instance = load_yaml(DOCKER / "dagster.yaml")
    data_volume = "pdm-data"
    volume_name = compose["volumes"][data_volume]["name"]
    data_dirs = set()
    for name in PIPELINE_SERVICES:
        service = compose["services"][name]
        data_dir = service["environment"]["PDM_DATA_DIR"]
        data_dirs.add(data_dir)
        assert named_mounts(service).get(data_volume) == data_dir, f"{name} must mount {data_volume} at {data_dir}"
    assert len(data_dirs) == 1, f"services disagree on PDM_DATA_DIR: {data_dirs}"
    (data_dir,) = data_dirs
    run_mounts = dict(v.split(":")[:2] for v in instance["run_launcher"]["config"]["container_kwargs"]["volumes"])
    assert run_mounts.get(volume_name) == data_dir, "run containers must mount the same volume at PDM_DATA_DIR"
    # The run containers also share compute logs / artifacts with the webserver.
    storage_dirs = {instance["compute_logs"]["config"]["base_dir"], instance["local_artifact_storage"]["config"]["base_dir"]}
    for name in PIPELINE_SERVICES:
        mounted = named_mounts(compose["services"][name]).values()
        for base_dir in storage_dirs:
            assert any(base_dir.startswith(m + "/") for m in mounted), f"{name} does not mount {base_dir}"
    for base_dir in storage_dirs:
        assert any(base_dir.startswith(m + "/") for m in run_mounts.values()), f"run containers lack {base_dir}"


def test_run_containers_join_the_compose_network_and_use_the_code_servers_image():
    compose = load_yaml(DOCKER / "docker-compose.yaml")
    instance = load_yaml(DOCKER / "dagster.yaml")
    network = compose["networks"]["pdm"]["name"]
    assert instance["run_launcher"]["config"]["network"] == network
    images = {compose["services"][name]["image"] for name in PIPELINE_SERVICES}
    assert len(images) == 1, f"pipeline services use different images: {images}"
    for name in PIPELINE_SERVICES:
        assert "pdm" in compose["services"][name]["networks"]
    assert compose["services"]["user_code"]["environment"]["DAGSTER_CURRENT_IMAGE"] in images


def test_the_image_is_built_from_this_dockerfile_with_sources_that_exist():
    build = load_yaml(DOCKER / "docker-compose.yaml")["services"]["user_code"]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == REPO
    dockerfile = context / build["dockerfile"]
    assert dockerfile == DOCKER / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \"?'?\.\[pipeline\]", text)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = line.split()
        for source in sources:
            assert (context / source).exists(), f"Dockerfile copies {source}, which does not exist"
    # The instance the image carries is this folder's dagster.yaml, at the image's DAGSTER_HOME.
    home = re.search(r"DAGSTER_HOME=(\S+)", text).group(1)
    assert f"COPY pdm_pipeline/deploy/docker/dagster.yaml {home}/dagster.yaml" in text


# --- Kubernetes: Helm values -----------------------------------------------------------------------

ANY = object()  # a free-form subtree (Kubernetes objects, Dagster config copied verbatim)
IMAGE = {"repository": ANY, "tag": ANY, "pullPolicy": ANY}
POD = {k: ANY for k in ("annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
                        "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
                        "labels", "deploymentLabels", "volumeMounts", "volumes", "schedulerName",
                        "env", "envConfigMaps", "envSecrets")}
CONFIGURABLE_CLASS = {"module": ANY, "class": ANY, "config": ANY}

# The keys of the official dagster/dagster chart this deployment may use (from the chart's values schema,
# helm/dagster/schema/schema/charts in dagster-io/dagster, and the instance templates that read them).
CHART_KEYS: dict[str, Any] = {
    "global": {k: ANY for k in ("postgresqlSecretName", "dagsterHome", "serviceAccountName",
                                "celeryConfigSecretName", "dagsterInstanceConfigMap")},
    "generatePostgresqlPasswordSecret": ANY,
    "generateCeleryConfigSecret": ANY,
    "imagePullSecrets": ANY,
    "dagsterWebserver": {**POD, "replicaCount": ANY, "image": IMAGE, "nameOverride": ANY, "pathPrefix": ANY,
                         "service": ANY, "workspace": ANY, "enableReadOnly": ANY, "dbStatementTimeout": ANY,
                         "dbPoolRecycle": ANY, "logLevel": ANY},
    "dagster-user-deployments": {
        "enabled": ANY, "enableSubchart": ANY, "imagePullSecrets": ANY,
        "deployments": [{**POD, "name": ANY, "image": IMAGE, "dagsterApiGrpcArgs": ANY, "codeServerArgs": ANY,
                         "includeConfigInLaunchedRuns": {"enabled": ANY}, "deploymentNamespace": ANY,
                         "port": ANY, "initContainers": ANY, "sidecarContainers": ANY,
                         "deploymentStrategy": ANY}],
    },
    "runLauncher": {
        "type": ANY,
        "config": {
            "k8sRunLauncher": {k: ANY for k in ("image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig",
                                                "kubeconfigFile", "envConfigMaps", "envSecrets", "envVars",
                                                "volumeMounts", "volumes", "labels", "failPodOnRunFailure",
                                                "resources", "schedulerName", "securityContext", "runK8sConfig")},
            "celeryK8sRunLauncher": ANY,
            "customRunLauncher": CONFIGURABLE_CLASS,
        },
    },
    "postgresql": {k: ANY for k in ("postgresqlScheme", "image", "enabled", "postgresqlHost", "postgresqlUsername",
                                    "postgresqlPassword", "postgresqlDatabase", "postgresqlParams")}
    | {"service": {"port": ANY}},
    "rabbitmq": {k: ANY for k in ("enabled", "image", "rabbitmq", "service", "volumePermissions")},
    "redis": ANY,
    "flower": ANY,
    "ingress": ANY,
    "computeLogManager": ANY,
    "scheduler": ANY,
    "busybox": ANY,
    "migrate": ANY,
    "serviceAccount": ANY,
    "retention": ANY,
    "concurrency": ANY,
    "additionalInstanceConfig": ANY,
    "dagsterDaemon": {
        **POD, "enabled": ANY, "image": IMAGE, "heartbeatTolerance": ANY, "runRetries": ANY, "sensors": ANY,
        "schedules": ANY,
        "runCoordinator": {
            "enabled": ANY, "type": ANY,
            "config": {"queuedRunCoordinator": ANY, "customRunCoordinator": CONFIGURABLE_CLASS},
        },
        "runMonitoring": {k: ANY for k in ("enabled", "startTimeoutSeconds", "cancelTimeoutSeconds",
                                           "maxResumeRunAttempts", "pollIntervalSeconds",
                                           "freeSlotsAfterRunEndSeconds")},
    },
    "pythonLogs": {k: ANY for k in ("pythonLogLevel", "managedPythonLoggers", "dagsterHandlerConfig")},
    "telemetry": {"enabled": ANY},
}


def unknown_keys(values: Any, allowed: Any, path: str = "") -> Iterator[str]:
    if allowed is ANY:
        return
    if isinstance(allowed, list):
        assert isinstance(values, list), f"{path} must be a list"
        for i, item in enumerate(values):
            yield from unknown_keys(item, allowed[0], f"{path}[{i}]")
        return
    assert isinstance(values, dict), f"{path} must be a mapping"
    for key, value in values.items():
        here = f"{path}.{key}" if path else key
        if key not in allowed:
            yield here
        else:
            yield from unknown_keys(value, allowed[key], here)


def helm_values() -> dict[str, Any]:
    return load_yaml(K8S / "values.yaml")


def helm_data_volumes(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    pods = [values["dagsterWebserver"], values["dagsterDaemon"], *values["dagster-user-deployments"]["deployments"]]
    return [v for pod in pods for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]


def env_value(env: list[dict[str, str]], name: str) -> str | None:
    return next((e.get("value") for e in env if e["name"] == name), None)


def test_helm_values_use_only_keys_of_the_official_chart():
    assert list(unknown_keys(helm_values(), CHART_KEYS)) == []


def test_the_key_check_catches_a_misspelled_key():
    values = helm_values()
    values["dagsterDaemon"]["runCoordinator"]["config"]["customRunCordinator"] = {}
    assert list(unknown_keys(values, CHART_KEYS)) == ["dagsterDaemon.runCoordinator.config.customRunCordinator"]


def test_helm_user_deployment_serves_the_projects_module_from_the_pdm_image():
    values = helm_values()
    deployments = values["dagster-user-deployments"]
    assert deployments["enabled"] is True
    (deployment,) = deployments["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    module = option(args, "-m", "--module-name")
    assert module == pyproject_dagster()["module_name"]
    assert importlib.util.find_spec(module) is not None
    assert (deployment["image"]["repository"], str(deployment["image"]["tag"])) == ("pdm-pipeline", "latest")
    assert isinstance(deployment["port"], int)


def test_helm_every_pipeline_pod_mounts_the_pvc_at_pdm_data_dir():
    """The code server and run pods train; the webserver and daemon run the coordinator, which reads the data."""
    values = helm_values()
    claim = load_yaml(K8S / "pvc.yaml")["metadata"]["name"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pods = {"user deployment": deployment, "webserver": values["dagsterWebserver"], "daemon": values["dagsterDaemon"]}
    for name, pod in pods.items():
        assert pod["image"]["repository"] == deployment["image"]["repository"], f"{name} must import pdm_pipeline"
        data_dir = env_value(pod["env"], "PDM_DATA_DIR")
        assert data_dir == "/data", f"{name}: PDM_DATA_DIR"
        volumes = {v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
        mounts = {m["name"]: m["mountPath"] for m in pod["volumeMounts"]}
        assert any(mounts.get(v) == data_dir for v in volumes), f"{name} must mount PVC {claim} at {data_dir}"


def test_helm_run_pods_inherit_the_data_volume_and_keep_the_launchers_size():
    """includeConfigInLaunchedRuns hands the deployment's env and volumes to run pods (as the chart renders it);
    the context must be valid for dagster-k8s and must not carry resources that would override the launcher's."""
    from dagster_k8s.container_context import K8sContainerContext

    values = helm_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert "resources" not in deployment, "the code server's resources would size every run pod"
    rendered = {"k8s": {"image_pull_policy": deployment["image"]["pullPolicy"],
                        "env_config_maps": ["pdm-dagster-user-deployments-pdm-pipeline-user-env"],
                        "volume_mounts": deployment["volumeMounts"], "volumes": deployment["volumes"],
                        "namespace": "pdm", "service_account_name": "pdm-dagster-user-deployments-user-deployments",
                        "env": deployment["env"]}}
    run_config = K8sContainerContext.create_from_config(rendered).run_k8s_config  # what run pods get
    container, pod_spec = run_config.container_config, run_config.pod_spec_config
    data_dir = env_value(container["env"], "PDM_DATA_DIR")
    assert data_dir == "/data"
    claim = load_yaml(K8S / "pvc.yaml")["metadata"]["name"]
    volumes = {v["name"] for v in pod_spec["volumes"] if v["persistent_volume_claim"]["claim_name"] == claim}
    assert any(m["name"] in volumes and m["mount_path"] == data_dir for m in container["volume_mounts"])
    assert "resources" not in container
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["requests"], "run pods are sized here"


def render_helm_instance(values: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of the chart's instance ConfigMap this deployment sets, rendered like the chart's templates
    (configmap-instance.yaml, helpers/instance/_run-coordinator.tpl, _run-launcher.tpl)."""
    daemon = values["dagsterDaemon"]
    custom = daemon["runCoordinator"]["config"]["customRunCoordinator"]
    monitoring = daemon["runMonitoring"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    launcher_config = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": "pdm",
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": "pdm-dagster",
        "dagster_home": "/opt/dagster/dagster_home",
        "instance_config_map": "pdm-dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
    }
    for key, name in (("envVars", "env_vars"), ("volumeMounts", "volume_mounts"), ("volumes", "volumes"),
                      ("resources", "resources")):
        if launcher.get(key):
            launcher_config[name] = launcher[key]
    return {
        "run_launcher": {"module": "dagster_k8s", "class": values["runLauncher"]["type"], "config": launcher_config},
        "run_coordinator": {"module": custom["module"], "class": custom["class"], "config": custom["config"]},
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "cancel_timeout_seconds": monitoring["cancelTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"],
            "free_slots_after_run_end_seconds": monitoring["freeSlotsAfterRunEndSeconds"],
        },
        "python_logs": {"python_log_level": values["pythonLogs"]["pythonLogLevel"],
                        "managed_python_loggers": values["pythonLogs"]["managedPythonLoggers"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def test_helm_rendered_instance_validates_with_its_classes(tmp_path):
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    values = helm_values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["enabled"] is True
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "CustomRunCoordinator"
    assert values["postgresql"]["enabled"] is False, "external PostgreSQL"
    instance = render_helm_instance(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance), encoding="utf-8")
    dagster_instance_config(str(tmp_path), "dagster.yaml")
    class_config(instance["run_launcher"])
    assert K8sRunLauncher.supports_check_run_worker_health
    class_config(instance["run_coordinator"])


# --- the run queue cannot drift from the repository's dagster.yaml ----------------------------------


def machine_tag() -> str:
    """pdm_pipeline.defs.launch.TAG_MACHINE (the tag runs carry), read without importing the asset graph."""
    tree = ast.parse((REPO / "pdm_pipeline" / "defs" / "launch.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["TAG_MACHINE"]:
            return ast.literal_eval(node.value)
    raise AssertionError("pdm_pipeline/defs/launch.py no longer defines TAG_MACHINE")


def deployment_instances() -> dict[str, dict[str, Any]]:
    return {"docker": load_yaml(DOCKER / "dagster.yaml"), "k8s": render_helm_instance(helm_values())}


@pytest.mark.parametrize("name", ["docker", "k8s"])
def test_run_queue_agrees_with_the_repositorys_dagster_yaml(instance_env, name):
    local = load_yaml(LOCAL_INSTANCE)
    deployed = deployment_instances()[name]
    # The same coordinator: invalid runs are refused before queueing in production too.
    assert {k: deployed["run_coordinator"][k] for k in ("module", "class")} == {
        k: local["run_coordinator"][k] for k in ("module", "class")
    }
    local_queue, deployed_queue = run_queue(local), run_queue(deployed)
    # One run per machine at a time, keyed on the tag the sensor and schedule put on every run.
    assert deployed_queue.tag_concurrency_limits == local_queue.tag_concurrency_limits
    assert {"key": machine_tag(), "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in list(
        deployed_queue.tag_concurrency_limits
    )
    # A finite, positive cap on runs at once (-1 would lift it, 0 would stop every run); a deployment may
    # allow more than one development host, never fewer.
    assert local_queue.max_concurrent_runs > 0
    assert deployed_queue.max_concurrent_runs >= local_queue.max_concurrent_runs
    # Dead run workers are detected and their runs failed, never resumed; the pipeline's loggers are captured.
    assert deployed["run_monitoring"]["enabled"] is local["run_monitoring"]["enabled"] is True
    assert deployed["run_monitoring"]["max_resume_run_attempts"] == local["run_monitoring"]["max_resume_run_attempts"]
    assert deployed["python_logs"]["managed_python_loggers"] == local["python_logs"]["managed_python_loggers"]


def test_the_drift_check_sees_a_changed_machine_limit(instance_env):
    docker = load_yaml(DOCKER / "dagster.yaml")
    docker["concurrency"]["runs"]["tag_concurrency_limits"][0]["limit"] = 2
    assert run_queue(docker).tag_concurrency_limits != run_queue(load_yaml(LOCAL_INSTANCE)).tag_concurrency_limits
