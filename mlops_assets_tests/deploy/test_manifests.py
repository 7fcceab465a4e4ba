"""Every manifest in deploy/ is valid Kubernetes (K8S_VERSION, strict), the Helm values keep
to the Dagster chart's schema and carry valid Kubernetes pieces, and the pieces agree with
each other: names of Secrets, the image, the registry, MLflow's allowed hosts, the kind ports."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from mlops_assets.variables import all_settings
from mlops_assets_tests import helm_chart
from mlops_assets_tests.deploy import skip_loudly
from mlops_assets_tests.deploy.k8s_schema import K8S_VERSION, validate, validate_fragment

DEPLOY = helm_chart.ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "manifests").glob("*.yaml"))
# The Secrets deploy/README.md tells a user to create; nothing else may be referenced.
SECRETS = {
    "dagster-postgresql",
    "mlops-s3",
    "mlops-s3-config",
    "mlops-alerts",
    "mlops-registry-pull",
}


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in MANIFESTS
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


DOCUMENTS = documents()


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] == kind]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, doc["spec"]["template"]["spec"])
        for name, doc in DOCUMENTS
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


@pytest.mark.parametrize(("name", "manifest"), DOCUMENTS, ids=[n for n, _ in DOCUMENTS])
def test_manifest_is_valid_kubernetes(name: str, manifest: dict[str, Any]) -> None:
    assert validate(manifest) == [], f"{name} is not valid Kubernetes {K8S_VERSION}"


def _credential_places(value: Any, where: str = "") -> list[str]:
    found = []
    if isinstance(value, dict):
        sensitive = any(
            w in str(value.get("name", "")).upper() for w in ("PASSWORD", "SECRET", "TOKEN")
        )
        if sensitive and "value" in value:
            found.append(f"{where}: env {value['name']} has a literal value")
        for key, inner in value.items():
            if key.lower() in ("password", "token", "secretkey", "accesskey"):
                found.append(f"{where}/{key}")
            found += _credential_places(inner, f"{where}/{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _credential_places(inner, f"{where}/{i}")
    return found


def test_no_manifest_or_value_carries_a_credential() -> None:
    assert by_kind("Secret") == [], "Secrets are created from the README commands, not committed"
    places = _credential_places([doc for _, doc in DOCUMENTS]) + _credential_places(
        helm_chart.load_values()
    )
    assert places == []


def test_every_container_is_pinned_non_root_and_sized() -> None:
    for name, pod in pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, f"{name} needs no API token"
        for container in pod.get("initContainers", []) + pod["containers"]:
            image = container["image"]
            tag = image.rsplit(":", 1)[-1]
            assert ":" in image, f"{name}: {image} has no tag"
            assert tag not in ("latest", ""), f"{name}: {image} is not pinned"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


def _secret_refs(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for key in ("secretRef", "secretKeyRef"):
            if key in value:
                found.add(value[key]["name"])
        if "secret" in value and isinstance(value["secret"], dict):
            found.add(value["secret"]["secretName"])
        for inner in value.values():
            found |= _secret_refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _secret_refs(inner)
    return found


def test_only_documented_secrets_are_referenced() -> None:
    referenced = _secret_refs([doc for _, doc in DOCUMENTS]) | _secret_refs(
        helm_chart.load_values()
    )
    assert referenced <= SECRETS, referenced - SECRETS
    readme = (DEPLOY / "README.md").read_text()
    for secret in SECRETS:
        assert secret in readme, f"deploy/README.md does not say how to create {secret}"


def test_rbac_grants_only_what_the_launcher_kaniko_and_rollout_need() -> None:
    assert not by_kind("ClusterRole")
    assert not by_kind("ClusterRoleBinding")
    rules = {
        (role["metadata"]["namespace"], group, resource): set(rule["verbs"])
        for role in by_kind("Role")
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    read = {"get", "list", "watch"}
    allowed = {
        ("mlops", "batch", "jobs"): read | {"create", "delete"},
        ("mlops", "batch", "jobs/status"): read,
        ("mlops", "", "pods"): read,
        ("mlops", "", "pods/log"): {"get"},
        ("mlops", "", "events"): read,
        ("mlops-serving", "apps", "deployments"): read | {"create", "patch"},
        ("mlops-serving", "", "services"): read | {"create", "patch"},
        ("mlops-serving", "", "pods"): read,
        ("mlops-serving", "serving.kserve.io", "inferenceservices"): read | {"create", "patch"},
    }
    for key, verbs in rules.items():
        assert key in allowed, f"{key} is granted but nothing needs it"
        assert verbs <= allowed[key], f"{key}: {verbs - allowed[key]} is more than needed"
    assert rules[("mlops", "batch", "jobs")] >= {"create", "get", "delete"}
    subjects = {
        (s["name"], binding["roleRef"]["name"])
        for binding in by_kind("RoleBinding")
        for s in binding["subjects"]
    }
    assert all(name == "mlops-dagster" for name, _ in subjects)
    builder = next(
        a for a in by_kind("ServiceAccount") if a["metadata"]["name"] == "mlops-image-builder"
    )
    assert builder["automountServiceAccountToken"] is False


def test_no_secret_reaches_a_command_line() -> None:
    """A container's command and args are visible to every user of the node (ps); a value
    from a Secret goes in the environment only, never expanded into an argument."""
    for name, pod in pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            secret_vars = {
                e["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            argv = " ".join(container.get("command", []) + container.get("args", []))
            leaked = sorted(v for v in secret_vars if f"$({v})" in argv)
            assert not leaked, f"{name}/{container['name']}: {leaked} expanded into its argv"


def test_mlflow_admits_every_dns_name_of_its_service_with_and_without_port() -> None:
    (service,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "mlflow"]
    (deployment,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    option = next(a for a in container["command"] if a.startswith("--allowed-hosts="))
    allowed = set(option.split("=", 1)[1].split(","))
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    port = service["spec"]["ports"][0]["port"]
    for host in (
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
    ):
        assert {host, f"{host}:{port}"} <= allowed, host
    # kubelet probes send the pod IP as Host unless told otherwise: MLflow would answer 403.
    for probe in ("readinessProbe", "livenessProbe"):
        headers = {h["name"]: h["value"] for h in container[probe]["httpGet"]["httpHeaders"]}
        assert headers["Host"] in allowed
    (settings,) = [c for c in by_kind("ConfigMap") if c["metadata"]["name"] == "mlops-settings"]
    assert (
        settings["data"]["MLFLOW_TRACKING_URI"]
        == f"http://{name}.{namespace}.svc.cluster.local:{port}"
    )


def test_settings_config_map_sets_only_project_settings() -> None:
    (settings,) = [c for c in by_kind("ConfigMap") if c["metadata"]["name"] == "mlops-settings"]
    known = {s.name for s in all_settings()} | {"MLFLOW_TRACKING_URI"}
    assert set(settings["data"]) <= known, set(settings["data"]) - known
    assert settings["data"]["MLOPS_AUTOMATION"] == "running", (
        "the daemon runs schedules and sensors"
    )
    registry_host = settings["data"]["MLOPS_IMAGE_REGISTRY"].split("/")[0]
    kind = yaml.safe_load((DEPLOY / "kind" / "cluster.yaml").read_text())
    assert f'mirrors."{registry_host}"' in kind["containerdConfigPatches"][0]


def test_one_user_code_image_everywhere() -> None:
    values = helm_chart.load_values()
    image = helm_chart.image(helm_chart.user_deployment(values))
    registry = next(c for c in by_kind("ConfigMap") if c["metadata"]["name"] == "mlops-settings")
    assert image.startswith(registry["data"]["MLOPS_IMAGE_REGISTRY"].split("/")[0] + "/")
    ours = [
        c["image"]
        for _, pod in pod_specs()
        for c in pod.get("initContainers", []) + pod["containers"]
        if "mlops-assets" in c["image"]
    ]
    assert ours
    assert set(ours) == {image}


def test_values_keep_to_the_dagster_chart_schema_and_carry_valid_kubernetes() -> None:
    values = helm_chart.load_values()
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert set(launcher) <= helm_chart.K8S_RUN_LAUNCHER_KEYS, (
        set(launcher) - helm_chart.K8S_RUN_LAUNCHER_KEYS
    )
    run_k8s = launcher["runK8sConfig"]
    assert set(run_k8s) <= helm_chart.RUN_K8S_CONFIG_KEYS
    assert values["postgresql"]["enabled"] is False
    assert values["global"]["postgresqlSecretName"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    deployment = helm_chart.user_deployment(values)
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True

    fragments = [
        (run_k8s["containerConfig"]["securityContext"], "securitycontext-v1.json"),
        (run_k8s["podSpecConfig"]["securityContext"], "podsecuritycontext-v1.json"),
        (deployment["resources"], "resourcerequirements-v1.json"),
        (deployment["securityContext"], "securitycontext-v1.json"),
        (deployment["podSecurityContext"], "podsecuritycontext-v1.json"),
        (values["dagsterWebserver"]["resources"], "resourcerequirements-v1.json"),
        (values["dagsterWebserver"]["securityContext"], "securitycontext-v1.json"),
        (values["dagsterDaemon"]["resources"], "resourcerequirements-v1.json"),
        (values["dagsterDaemon"]["securityContext"], "securitycontext-v1.json"),
        *[(s, "localobjectreference-v1.json") for s in values["imagePullSecrets"]],
        *[(s, "secretenvsource-v1.json") for s in launcher["envSecrets"]],
        *[(c, "configmapenvsource-v1.json") for c in launcher["envConfigMaps"]],
    ]
    for value, schema in fragments:
        assert validate_fragment(value, schema) == [], (value, schema)
    job_spec = {
        "template": {"spec": {"containers": [{"name": "x", "image": "x"}]}},
        **run_k8s["jobSpecConfig"],
    }
    assert validate_fragment(job_spec, "jobspec-batch-v1.json") == []


def test_helm_template_renders_valid_kubernetes() -> None:
    """Renders the official chart with these values when helm and the chart are here.

    Set MLOPS_DAGSTER_CHART to the chart (a directory or .tgz, e.g. from `helm pull
    dagster/dagster --version 1.13.27`); this machine cannot download it."""
    import os

    chart = os.environ.get("MLOPS_DAGSTER_CHART", "")
    helm = shutil.which("helm")
    if not chart or helm is None:
        skip_loudly(
            "the official Dagster chart is not on this machine (set MLOPS_DAGSTER_CHART and "
            "install helm to render it); values are checked against the chart's schema keys "
            "and Kubernetes fragments instead"
        )
    rendered = subprocess.run(
        [helm, "template", "dagster", chart, "--namespace", "mlops", "-f", str(helm_chart.VALUES)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert docs
    for doc in docs:
        assert validate(doc) == [], f"{doc['kind']}/{doc['metadata']['name']}"
    instance = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-instance")
    )
    launcher = yaml.safe_load(instance["data"]["dagster.yaml"])["run_launcher"]["config"]
    expected = helm_chart.run_launcher_config(helm_chart.load_values())
    for key, value in expected.items():
        assert launcher[key] == value, key


def test_kind_recipe_maps_the_ports_the_services_use() -> None:
    kind = yaml.safe_load((DEPLOY / "kind" / "cluster.yaml").read_text())
    ports = {m["containerPort"]: m["hostPort"] for m in kind["nodes"][0]["extraPortMappings"]}
    (registry,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "registry"]
    node_port = registry["spec"]["ports"][0]["nodePort"]
    assert node_port in ports
    assert f"http://localhost:{node_port}" in kind["containerdConfigPatches"][0]
    script = (DEPLOY / "kind" / "up.sh").read_text()
    assert f"localhost:{ports[node_port]}/mlops-assets" in script
    assert 'nodePort":30080' in script
    assert ports[30080] == 8080
    order = [script.index(f"deploy/manifests/{p.name}") for p in MANIFESTS]
    assert order == sorted(order), "up.sh applies the manifests in their numbered order"
    assert script.index("60-mlflow.yaml") > script.index("docker push"), (
        "MLflow runs the pushed image"
    )
    checked = subprocess.run(
        ["bash", "-n", str(DEPLOY / "kind" / "up.sh")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    if shutil.which("shellcheck"):
        linted = subprocess.run(
            ["shellcheck", str(DEPLOY / "kind" / "up.sh")], capture_output=True, text=True
        )
        assert linted.returncode == 0, linted.stdout


def test_dockerfile_is_pinned_and_runs_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    base = next(
        line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ARG BASE_IMAGE=")
    )
    assert base.count(".") >= 2, f"base image {base} is not pinned to a release"
    assert "latest" not in base
    assert "-c /opt/dagster/project/constraints.txt" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user
    assert user[-1] != "USER root"
    assert "UID=10001" in text


def test_each_model_has_its_share_of_the_run_queue() -> None:
    """The daemon's run queue holds each model (the tag every run of a model carries) to its
    share of the slots: the values, as the chart writes them into dagster.yaml, are a config
    Dagster's QueuedRunCoordinator accepts."""
    from dagster._config import process_config
    from dagster._core.run_coordinator import QueuedRunCoordinator

    from mlops_assets.components.lifecycle.automation.constants import MODEL_TAG

    queue = helm_chart.load_values()["dagsterDaemon"]["runCoordinator"]["config"]
    queue = queue["queuedRunCoordinator"]
    [per_model] = queue["tagConcurrencyLimits"]
    assert per_model["key"] == MODEL_TAG
    assert per_model["value"] == {"applyLimitPerUniqueValue": True}
    assert 0 < per_model["limit"] < queue["maxConcurrentRuns"]
    config = {
        "max_concurrent_runs": queue["maxConcurrentRuns"],
        "tag_concurrency_limits": queue["tagConcurrencyLimits"],
    }
    checked = process_config(QueuedRunCoordinator.config_type(), config)
    assert checked.success, checked.errors
