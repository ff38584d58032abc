"""The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk embeds Helm v4).

Each test renders the chart offline with a set of values and asserts on the Kubernetes objects.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from router.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "falco-router"
SIDECAR = {"mode": "sidecar"}


@pytest.fixture(scope="module")
def chart() -> Any:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None, namespace: str = "monitoring") -> list[dict[str, Any]]:
    manifests = chart.render(values=values or {}, name="falco-router", namespace=namespace)
    objects = []
    for text in manifests.values():
        objects.extend(document for document in yaml.safe_load_all(text) if document)
    return objects


def render_sidecar(chart: Any, **sidecar: Any) -> list[dict[str, Any]]:
    return render(chart, {"mode": "sidecar", "sidecar": sidecar}, namespace="falco")


def find(objects: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"expected one {kind} named *{suffix}, found {len(matches)}"
    return matches[0]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def router_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    statefulset = find(objects, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def falco_values(objects: list[dict[str, Any]]) -> dict[str, Any]:
    data = find(objects, "ConfigMap", "-falco-values")["data"]
    values: dict[str, Any] = yaml.safe_load(data["falco-values.yaml"])
    return values


def sidecar_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = falco_values(objects)["extra"]["initContainers"]
    return container


def router_config_text(objects: list[dict[str, Any]]) -> str:
    text: str = find(objects, "ConfigMap", "falco-router")["data"]["config.yaml"]
    return text


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}


# Lint


@pytest.mark.parametrize(
    ("values", "namespace"), [({}, "monitoring"), (SIDECAR, "falco")], ids=["standalone", "sidecar"]
)
def test_lint_reports_no_warning(values: dict[str, Any], namespace: str) -> None:
    report = helm_python.lint(CHART, values, strict=True, namespace=namespace)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_schema_file_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "helm" / "gen_schema.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_falco_values_examples_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "helm" / "gen_falco_values.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# Schema


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"outputs": {"pager": {"type": "pagerduty"}}}}, "/config/outputs/pager"),
        ({"config": {"log": {"levle": "debug"}}}, "'levle' not allowed"),
        ({"config": {"outputs": {"s": {"type": "slack", "token": "xoxb-1", "channel": "c"}}}}, "/config/outputs/s"),
        ({"config": {"routes": []}}, "/config/routes"),
        ({"mode": "daemonset"}, "/mode"),
        ({"replicas": 3}, "'replicas' not allowed"),
        ({"sidecar": {"ingest": "nats"}}, "/sidecar/ingest"),
    ],
    ids=[
        "unknown-output-type",
        "misspelt-key",
        "literal-secret",
        "no-routes",
        "unknown-mode",
        "unknown-top-key",
        "unknown-ingest",
    ],
)
def test_schema_rejects_bad_values(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values=values, name="falco-router", namespace="monitoring")
    assert message in str(caught.value)


def test_schema_accepts_a_kafka_and_slack_config(chart: Any) -> None:
    config = {
        "outputs": {
            "stdout": None,
            "kafka": {
                "type": "kafka",
                "brokers": ["kafka:9092"],
                "topic": "falco",
                "sasl": {"mechanism": "PLAIN", "username": "router", "password": {"env": "KAFKA_PASSWORD"}},
            },
            "slack": {"type": "slack", "token": {"env": "SLACK_BOT_TOKEN"}, "channel": "#alerts"},
        },
        "routes": [
            {"name": "all", "outputs": ["kafka"]},
            {"name": "loud", "outputs": ["slack"], "min_priority": "error"},
        ],
    }
    secrets = {
        "existingSecret": "router",
        "env": [{"name": "KAFKA_PASSWORD", "key": "kafka"}, {"name": "SLACK_BOT_TOKEN", "key": "slack"}],
    }
    objects = render(chart, {"config": config, "secrets": secrets})
    parsed = parse_config(router_config_text(objects), "config.yaml")
    assert sorted(parsed.outputs) == ["kafka", "slack"]


# Router config


def test_rendered_config_is_valid_for_the_router(chart: Any) -> None:
    config = parse_config(router_config_text(render(chart)), "config.yaml")
    assert config.ingest.http.listen == "0.0.0.0:2801"


def test_listen_follows_port(chart: Any) -> None:
    config = parse_config(router_config_text(render(chart, {"port": 9000})), "config.yaml")
    assert config.ingest.http.listen == "0.0.0.0:9000"


def test_listen_on_another_port_fails(chart: Any) -> None:
    with pytest.raises(helm_python.HelmError, match="use the same port"):
        render(chart, {"config": {"ingest": {"http": {"listen": "0.0.0.0:8080"}}}})


# Secrets


def test_secret_env_comes_from_existing_secret(chart: Any) -> None:
    objects = render(
        chart,
        {"secrets": {"existingSecret": "router-secrets", "env": [{"name": "SLACK_BOT_TOKEN", "key": "slack-token"}]}},
    )
    env = {item["name"]: item for item in router_container(objects)["env"]}
    assert env["SLACK_BOT_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "router-secrets", "key": "slack-token"}


def test_chart_creates_no_secret(chart: Any) -> None:
    objects = render(
        chart,
        {
            "secrets": {
                "existingSecret": "router-secrets",
                "env": [{"name": "T", "key": "t"}],
                "mountPath": "/etc/falco-router/secrets",
            }
        },
    )
    assert "Secret" not in kinds(objects)


def test_secret_mount_is_read_only(chart: Any) -> None:
    objects = render(chart, {"secrets": {"existingSecret": "router-secrets", "mountPath": "/etc/falco-router/secrets"}})
    (mount,) = [m for m in router_container(objects)["volumeMounts"] if m["name"] == "falco-router-secrets"]
    assert mount["readOnly"] is True


def test_secret_env_without_secret_name_fails(chart: Any) -> None:
    with pytest.raises(helm_python.HelmError, match=r"secrets\.existingSecret is required"):
        render(chart, {"secrets": {"env": [{"name": "SLACK_BOT_TOKEN", "key": "slack-token"}]}})


# Standalone


def test_standalone_renders_statefulset_service_and_pdb(chart: Any) -> None:
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "ServiceAccount", "ConfigMap"} <= kinds(render(chart))


def test_standalone_service_targets_ingest_port(chart: Any) -> None:
    service = find(render(chart), "Service", "falco-router")
    assert service["spec"]["ports"] == [
        {"name": "router-http", "port": 2801, "targetPort": "router-http", "protocol": "TCP"}
    ]


def test_each_replica_gets_its_own_spool_claim(chart: Any) -> None:
    statefulset = find(render(chart, {"standalone": {"replicas": 3}}), "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert statefulset["spec"]["replicas"] == 3
    assert claim["metadata"]["name"] == "falco-router-state"
    assert mounts(router_container([statefulset]))["falco-router-state"] == "/var/lib/falco-router"


def test_spool_is_emptydir_without_persistence(chart: Any) -> None:
    statefulset = find(render(chart, {"standalone": {"persistence": {"enabled": False}}}), "StatefulSet")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert volumes["falco-router-state"]["emptyDir"] == {}


def test_pdb_selects_router_pods(chart: Any) -> None:
    objects = render(chart)
    pdb = find(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == find(objects, "StatefulSet")["spec"]["selector"]["matchLabels"]


def test_probes_hit_healthz_and_readyz(chart: Any) -> None:
    container = router_container(render(chart))
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "router-http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "router-http"}


def test_standalone_security_context_is_restricted(chart: Any) -> None:
    objects = render(chart)
    context = router_container(objects)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert find(objects, "StatefulSet")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_only_state_and_tmp_are_writable(chart: Any) -> None:
    writable = {m["mountPath"] for m in router_container(render(chart))["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/falco-router", "/tmp"}


def test_node_name_comes_from_downward_api(chart: Any) -> None:
    env = {item["name"]: item for item in router_container(render(chart))["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_config_change_rolls_the_pods(chart: Any) -> None:
    def checksum(values: dict[str, Any]) -> str:
        statefulset = find(render(chart, values), "StatefulSet")
        value: str = statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum({}) != checksum({"config": {"log": {"level": "debug"}}})


# RBAC


def test_rbac_grants_only_read_verbs(chart: Any) -> None:
    role = find(render(chart), "ClusterRole")
    grants = {
        (group, resource): rule["verbs"]
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert grants == {
        ("", "pods"): ["get", "list", "watch"],
        ("", "namespaces"): ["get", "list", "watch"],
        ("apps", "replicasets"): ["get"],
        ("batch", "jobs"): ["get"],
    }


def test_standalone_binds_its_own_service_account(chart: Any) -> None:
    objects = render(chart)
    (subject,) = find(objects, "ClusterRoleBinding")["subjects"]
    assert subject == {
        "kind": "ServiceAccount",
        "name": find(objects, "ServiceAccount")["metadata"]["name"],
        "namespace": "monitoring",
    }


def test_sidecar_binds_falco_service_account(chart: Any) -> None:
    (subject,) = find(render_sidecar(chart), "ClusterRoleBinding")["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": "falco", "namespace": "falco"}


# Sidecar


def test_sidecar_renders_no_workload(chart: Any) -> None:
    assert kinds(render_sidecar(chart)).isdisjoint(
        {"StatefulSet", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}
    )


def test_sidecar_outside_falco_namespace_fails(chart: Any) -> None:
    with pytest.raises(helm_python.HelmError, match="install this release in Falco's namespace"):
        render(chart, SIDECAR, namespace="monitoring")


def test_sidecar_is_a_native_sidecar(chart: Any) -> None:
    assert sidecar_container(render_sidecar(chart))["restartPolicy"] == "Always"


def test_sidecar_posts_falco_http_output_to_localhost(chart: Any) -> None:
    falco = falco_values(render_sidecar(chart))["falco"]
    assert falco["http_output"] == {"enabled": True, "url": "http://127.0.0.1:2801/"}
    assert falco["json_output"] is True


def test_sidecar_shares_rules_folder_with_falco(chart: Any) -> None:
    objects = render_sidecar(chart)
    values = falco_values(objects)
    falco_mount = {m["name"]: m for m in values["mounts"]["volumeMounts"]}["falco-router-rules"]
    assert mounts(sidecar_container(objects))["falco-router-rules"] == falco_mount["mountPath"]
    assert falco_mount["readOnly"] is True
    assert falco_mount["mountPath"] in values["falco"]["rules_files"]


def test_sidecar_rules_source_comes_from_configmap(chart: Any) -> None:
    objects = render(
        chart, {"mode": "sidecar", "rules": {"custom.yaml": "- list: shells\n  items: [bash]\n"}}, namespace="falco"
    )
    volumes = {v["name"]: v for v in falco_values(objects)["mounts"]["volumes"]}
    rules = find(objects, "ConfigMap", "-rules")
    assert volumes["falco-router-rules-source"]["configMap"]["name"] == rules["metadata"]["name"]
    assert rules["data"] == {"custom.yaml": "- list: shells\n  items: [bash]\n"}


def test_sidecar_shares_run_folder_as_emptydir(chart: Any) -> None:
    values = falco_values(render_sidecar(chart))
    volumes = {v["name"]: v for v in values["mounts"]["volumes"]}
    falco_mounts = {m["name"]: m["mountPath"] for m in values["mounts"]["volumeMounts"]}
    assert volumes["falco-router-run"] == {"name": "falco-router-run", "emptyDir": {}}
    assert falco_mounts["falco-router-run"] == "/run/falco"


def test_sidecar_grpc_uses_falco_socket_volume(chart: Any) -> None:
    objects = render_sidecar(chart, ingest="grpc")
    values = falco_values(objects)
    config = parse_config(router_config_text(objects), "config.yaml")
    assert mounts(sidecar_container(objects))["grpc-socket-dir"] == "/run/falco"
    assert values["falco"]["grpc"]["bind_address"] == config.ingest.grpc.address
    assert config.ingest.grpc.enabled is True


def test_sidecar_default_stays_non_root_without_capabilities(chart: Any) -> None:
    objects = render_sidecar(chart)
    context = sidecar_container(objects)["securityContext"]
    data = find(objects, "ConfigMap", "-falco-values")["data"]
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "falco-daemonset-patch.yaml" not in data


def test_signalling_sidecar_adds_only_cap_kill(chart: Any) -> None:
    context = sidecar_container(render_sidecar(chart, signalFalco=True))["securityContext"]
    assert context["runAsUser"] == 0
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["KILL"]}
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True


def test_signalling_sidecar_shares_process_namespace(chart: Any) -> None:
    data = find(render_sidecar(chart, signalFalco=True), "ConfigMap", "-falco-values")["data"]
    patch = yaml.safe_load(data["falco-daemonset-patch.yaml"])
    assert patch["kind"] == "DaemonSet"
    assert patch["spec"]["template"]["spec"]["shareProcessNamespace"] is True


def test_signalling_sidecar_has_falco_write_pid_file(chart: Any) -> None:
    values = falco_values(render_sidecar(chart, signalFalco=True))
    assert values["extra"]["args"] == ["--pidfile", "/run/falco/falco.pid"]


# Monitoring


def test_service_monitor_in_standalone(chart: Any) -> None:
    monitor = find(render(chart, {"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_pod_monitor_in_sidecar(chart: Any) -> None:
    objects = render(chart, {"mode": "sidecar", "serviceMonitor": {"enabled": True}}, namespace="falco")
    monitor = find(objects, "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "falco"}


def test_no_monitor_by_default(chart: Any) -> None:
    assert kinds(render(chart)).isdisjoint({"ServiceMonitor", "PodMonitor"})
