"""The Helm chart (charts/authz) with the real helm and the real kube-apiserver.

- ``helm lint`` and ``helm template`` for the default, sidecar, HA and everything-on values;
  ``values.schema.json`` rejects wrong types and unknown keys with a message naming the key.
- Every rendering is server-side applied with ``dryRun=All`` and then for real (pods never
  start: there is no kubelet); ``helm install``/``upgrade``/``uninstall`` run too.
- RBAC: as the chart's ServiceAccount (a TokenRequest token, so the API server authenticates
  it exactly as it would the pod) the controller's API calls succeed, and everything beyond
  them is forbidden, checked by SelfSubjectAccessReview and by real requests.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from tests.support import helm, kube_fixtures, upstream_crds
from tests.support.kube import ControlPlane
from tests.support.manifests import install_crds

# The session's shared control plane (a conftest may provide these instead; both share one).
control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users


@pytest.fixture(scope="module", autouse=True)
def _prebuilt() -> None:
    """Build helm and fetch the upstream CRD modules before the first test, outside
    pytest-timeout's per-test budget (a cold machine needs minutes, once)."""
    with kube_fixtures.alarm_paused():
        helm.binary()
        upstream_crds.module_dir(*upstream_crds.PROMETHEUS_OPERATOR)


GROUP = "authz.io"
# Namespaces of the objects the tests create (the control plane is shared by the session).
SHOP, PAYMENTS, OTHER = "chart-shop", "chart-payments", "chart-other"
CRDS = sorted((helm.CHART / "crds").glob("*.yaml"))

ISSUER = {
    "apiVersion": "authz.io/v1alpha1",
    "kind": "JWTIssuer",
    "metadata": {"name": "demo", "namespace": SHOP},
    "spec": {
        "issuer": "https://demo.authz.local",
        "jwks": {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "kid": "k1",
                    "alg": "ES256",
                    "x": "mXTey1LPI0MR1foFkK-tnN7rY7KZa0UYb-qEtcgRYjs",
                    "y": "jX4YIOTrGox6C5PCBfMpkR2OrxgoeDQpudGMxavvnQM",
                }
            ]
        },
    },
}
POLICY = {
    "apiVersion": "authz.io/v1alpha1",
    "kind": "AuthzPolicy",
    "metadata": {"name": "orders", "namespace": SHOP},
    "spec": {
        "targets": {"workloadSelector": {"matchLabels": {"app": "orders"}}},
        "issuers": [{"name": "demo"}],
        "rules": [{"name": "all", "match": {"paths": ["/**"]}}],
    },
}

# Passes the CRD schema, but its regex does not compile: Ready=False and a Warning event.
BROKEN_POLICY = {
    "apiVersion": "authz.io/v1alpha1",
    "kind": "AuthzPolicy",
    "metadata": {"name": "broken", "namespace": SHOP},
    "spec": {
        "targets": {"hosts": ["broken.example.com"]},
        "issuers": [{"name": "demo"}],
        "rules": [{"match": {"paths": ["/**"]}, "claims": [{"path": "email", "regex": "("}]}],
    },
}

SIDECAR = {
    "mode": "sidecar",
    "policies": {
        "issuer.yaml": yaml.safe_dump(ISSUER, sort_keys=False),
        "orders.yaml": POLICY,  # an object is rendered as YAML
    },
}
HA = {
    "replicaCount": 3,
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
    "podDisruptionBudget": {"minAvailable": 2},
    "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": 2}},
}
EVERYTHING = {
    **HA,
    "controller": {
        "watchNamespaces": [SHOP, PAYMENTS],
        "leaseName": "everything-lease",
        "readSecrets": True,
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "alertLabels": {"team": "platform"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Security"}},
    "networkPolicy": {"enabled": True},
    "policies": {"extra.yaml": yaml.safe_dump(ISSUER, sort_keys=False)},
    "priorityClassName": "authz-critical",
    "podAnnotations": {"example.com/team": "platform"},
    "podLabels": {"tier": "auth"},
    "commonLabels": {"owner": "platform"},
    "serviceAccount": {"annotations": {"example.com/role": "authz"}},
    "service": {"annotations": {"example.com/lb": "internal"}, "headless": True},
    "extraVolumes": [{"name": "idp-ca", "configMap": {"name": "idp-ca"}}],
    "extraVolumeMounts": [{"name": "idp-ca", "mountPath": "/etc/authz/ca", "readOnly": True}],
    "extraArgs": ["--default-action", "deny"],
    "extraEnv": [{"name": "EXTRA", "value": "1"}],
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "auth"}],
    "image": {"repository": "registry.example.com/authz", "tag": "0.1.0"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "sidecar": SIDECAR,
    "ha": HA,
    "everything": EVERYTHING,
}


def _render(name: str, *, release: str | None = None, namespace: str | None = None) -> list[Any]:
    return helm.template(
        VALUE_SETS[name], release=release or f"authz-{name}", namespace=namespace or f"chart-{name}"
    )


def _container(docs: list[Any]) -> dict[str, Any]:
    deployment = helm.find(docs, "Deployment")
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["authz"]
    return containers[0]


def _sidecar_patch(docs: list[Any]) -> dict[str, Any]:
    configmap = next(d for d in docs if d["metadata"]["name"].endswith("-sidecar"))
    patch: dict[str, Any] = yaml.safe_load(configmap["data"]["patch.yaml"])
    return patch


def _flag(args: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given twice: {args}"
    return values[0] if values else None


# -- helm lint / template ---------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict(name: str, tmp_path: Path) -> None:
    values = helm.values_file(VALUE_SETS[name], tmp_path)
    result = helm.run("lint", "--strict", str(helm.CHART), "--values", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_default_is_central_mode_with_secure_defaults() -> None:
    docs = _render("default")
    assert {d["kind"] for d in docs} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "Pod",  # the `helm test` hook (helm install skips it; `helm test` creates it)
    }
    chart = yaml.safe_load((helm.CHART / "Chart.yaml").read_text())
    deployment = helm.find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["serviceAccountName"] == "authz-default"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = _container(docs)
    assert c["image"] == f"authz:{chart['appVersion']}"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # the only writable path
    args = c["args"]
    assert args[0] == "--kubernetes"
    assert _flag(args, "grpc-addr") == "0.0.0.0:9001"
    assert _flag(args, "http-check-addr") == "0.0.0.0:9003"
    assert _flag(args, "http-addr") == "0.0.0.0:9002"
    assert _flag(args, "leader-election-namespace") == "chart-default"
    assert _flag(args, "leader-election-id") == "authz-default-status"
    assert _flag(args, "policy-dir") is None  # only the CRDs
    assert _flag(args, "watch-namespaces") is None  # all namespaces
    assert _flag(args, "workers") is None  # no CPU limit by default
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "grpc": 9001,
        "http-check": 9003,
        "http": 9002,
    }
    spread = pod["topologySpreadConstraints"]
    assert {s["topologyKey"] for s in spread} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert all(s["labelSelector"] == {"matchLabels": selector} for s in spread)

    service = helm.find(docs, "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == 9001 and ports["grpc"]["appProtocol"] == "grpc"
    assert ports["http-check"]["port"] == 9003 and ports["http-check"]["targetPort"] == "http-check"
    assert ports["http"]["port"] == 9002
    assert service["spec"]["selector"] == selector
    pdb = helm.find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert helm.find(docs, "ServiceAccount")["automountServiceAccountToken"] is False


def test_sidecar_renders_policies_and_a_patch_but_no_workload_or_rbac() -> None:
    docs = _render("sidecar")
    assert helm.kinds(docs) == [
        "ConfigMap/chart-sidecar/authz-sidecar-policies",
        "ConfigMap/chart-sidecar/authz-sidecar-sidecar",
    ]
    policies = next(d for d in docs if d["metadata"]["name"].endswith("-policies"))["data"]
    assert yaml.safe_load(policies["issuer.yaml"]) == ISSUER
    assert yaml.safe_load(policies["orders.yaml"]) == POLICY

    spec = _sidecar_patch(docs)["spec"]["template"]["spec"]
    assert "containers" not in spec  # a native sidecar by default
    (c,) = spec["initContainers"]
    assert c["name"] == "authz" and c["restartPolicy"] == "Always"
    args = c["args"]
    assert _flag(args, "grpc-addr") == "127.0.0.1:9001"  # Check on loopback only
    assert _flag(args, "http-check-addr") == "127.0.0.1:9003"
    assert _flag(args, "policy-dir") == "/etc/authz/policies"
    assert _flag(args, "workload-labels") == "@/etc/podinfo/labels"
    assert "--kubernetes" not in args  # reads the ConfigMap, needs no API access
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 9002}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["authz-policies"]["configMap"]["name"] == "authz-sidecar-policies"
    assert volumes["authz-podinfo"]["downwardAPI"]["items"] == [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
    ]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["authz-podinfo"] == "/etc/podinfo"
    assert mounts["authz-policies"] == "/etc/authz/policies"


def test_sidecar_on_a_unix_socket_as_a_regular_container() -> None:
    values = {**SIDECAR, "sidecar": {"listen": "unix", "native": False}}
    spec = _sidecar_patch(helm.template(values))["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    (c,) = spec["containers"]
    assert "restartPolicy" not in c
    assert _flag(c["args"], "grpc-addr") == "unix:/run/authz/grpc.sock"
    assert {"name": "authz-socket", "mountPath": "/run/authz"} in c["volumeMounts"]
    assert {v["name"] for v in spec["volumes"]} >= {"authz-socket"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize(
    ("transport", "ports", "hook"),
    [
        ("grpc", {"grpc": 9001}, "--grpc=authz-t.chart-t.svc:9001"),
        ("http", {"http-check": 9003}, "--http=authz-t.chart-t.svc:9003"),
        ("both", {"grpc": 9001, "http-check": 9003}, "--grpc=authz-t.chart-t.svc:9001"),
    ],
)
def test_transport_chooses_the_check_ports(
    transport: str, ports: dict[str, int], hook: str
) -> None:
    values = {
        "transport": transport,
        "networkPolicy": {"enabled": True},
        "service": {"headless": True},
    }
    docs = helm.template(values, release="authz-t", namespace="chart-t")
    c = _container(docs)
    served = {"grpc-addr": "0.0.0.0:9001", "http-check-addr": "0.0.0.0:9003"}
    assert _flag(c["args"], "grpc-addr") == (served["grpc-addr"] if "grpc" in ports else "off")
    assert _flag(c["args"], "http-check-addr") == (
        served["http-check-addr"] if "http-check" in ports else "off"
    )
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {**ports, "http": 9002}
    service = helm.find(docs, "Service", "authz-t")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {**ports, "http": 9002}
    headless = helm.find(docs, "Service", "authz-t-headless")
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == ports
    policy = helm.find(docs, "NetworkPolicy")
    allowed = [rule["ports"][0]["port"] for rule in policy["spec"]["ingress"]]
    assert allowed == [*ports.values(), 9002]
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert hook in pod["spec"]["containers"][0]["args"]


def test_http_only_sidecar_answers_http_checks_on_loopback() -> None:
    values = {**SIDECAR, "transport": "http"}
    spec = _sidecar_patch(helm.template(values))["spec"]["template"]["spec"]
    args = spec["initContainers"][0]["args"]
    assert _flag(args, "grpc-addr") == "off"
    assert _flag(args, "http-check-addr") == "127.0.0.1:9003"


def test_ha_values_scale_with_an_hpa_and_keep_a_quorum() -> None:
    docs = _render("ha")
    deployment = helm.find(docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns the replica count
    hpa = helm.find(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 70,
    }
    pdb = helm.find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2 and "maxUnavailable" not in pdb["spec"]
    assert _flag(_container(docs)["args"], "workers") == "2"  # limits.cpu: 2


def test_everything_on() -> None:
    docs = _render("everything")
    kinds = {d["kind"] for d in docs}
    assert {
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "ConfigMap",
    } <= kinds
    c = _container(docs)
    args = c["args"]
    assert _flag(args, "watch-namespaces") == f"{SHOP},{PAYMENTS}"
    assert _flag(args, "leader-election-id") == "everything-lease"
    assert _flag(args, "policy-dir") == "/etc/authz/policies"
    assert args[-2:] == ["--default-action", "deny"]
    assert c["image"] == "registry.example.com/authz:0.1.0"
    assert {"name": "EXTRA", "value": "1"} in c["env"]
    assert {"name": "idp-ca", "mountPath": "/etc/authz/ca", "readOnly": True} in c["volumeMounts"]
    pod = helm.find(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "idp-ca", "configMap": {"name": "idp-ca"}} in pod["volumes"]
    headless = helm.find(docs, "Service", "authz-everything-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert [p["name"] for p in headless["ports"]] == ["grpc", "http-check"]
    assert headless["selector"] == helm.find(docs, "Deployment")["spec"]["selector"]["matchLabels"]

    # Namespaced permissions move from the ClusterRole into a Role per watched namespace,
    # plus `default` for events about ClusterJWTIssuers.
    cluster_role = helm.find(docs, "ClusterRole")
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {
        "clusterjwtissuers",
        "clusterjwtissuers/status",
        "hostgrants",
        "hostgrants/status",
        "tokenrevocations",
        "tokenrevocations/status",
    }
    roles = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "authz-everything"
    }
    assert set(roles) == {SHOP, PAYMENTS, "default"}
    assert {r for rule in roles["default"]["rules"] for r in rule["resources"]} == {"events"}
    # readSecrets: a Role of its own in each watched namespace, nothing cluster-wide.
    secret_roles = {
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "Role" and d["metadata"]["name"] == "authz-everything-secrets"
    }
    assert secret_roles == {SHOP, PAYMENTS}

    monitor = helm.find(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    policy = helm.find(docs, "NetworkPolicy")
    grpc_rule, check_rule, metrics_rule = policy["spec"]["ingress"]
    assert grpc_rule["ports"] == [{"port": 9001, "protocol": "TCP"}]
    assert check_rule["ports"] == [{"port": 9003, "protocol": "TCP"}]
    assert check_rule["from"] == grpc_rule["from"]  # the proxies, and the helm test pod
    assert metrics_rule["ports"] == [{"port": 9002, "protocol": "TCP"}]
    selectors = [
        peer["namespaceSelector"] for peer in grpc_rule["from"] if "namespaceSelector" in peer
    ]
    assert {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}} in selectors
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert all(d["metadata"]["labels"]["owner"] == "platform" for d in docs)


@pytest.mark.parametrize(
    ("cpu", "workers"),
    [("2", "2"), (3, "3"), (1.5, "1"), ("2500m", "2"), ("500m", "1"), ("250m", "1"), (None, None)],
)
def test_workers_follow_the_cpu_limit(cpu: Any, workers: str | None) -> None:
    limits = {"memory": "512Mi"} if cpu is None else {"cpu": cpu, "memory": "512Mi"}
    docs = helm.template({"resources": {"limits": limits}})
    assert _flag(_container(docs)["args"], "workers") == workers


def test_explicit_workers_win_over_the_cpu_limit() -> None:
    docs = helm.template({"workers": 4, "resources": {"limits": {"cpu": 1}}})
    assert _flag(_container(docs)["args"], "workers") == "4"


@pytest.mark.parametrize(
    ("values", "request_memory", "limit_memory"),
    [
        ({}, "192Mi", "512Mi"),  # one worker
        ({"resources": {"limits": {"cpu": 2}}}, "448Mi", "1088Mi"),  # 2 x per worker + supervisor
        ({"workers": 4}, "832Mi", "2112Mi"),
        ({"workers": 2, "resources": {"limits": {"memory": "3Gi"}}}, "448Mi", "3Gi"),  # given wins
        (
            {
                "memory": {
                    "requestPerWorker": "100Mi",
                    "limitPerWorker": "300Mi",
                    "supervisor": "50Mi",
                },
                "workers": 3,
            },
            "350Mi",
            "950Mi",
        ),
    ],
)
def test_memory_follows_the_worker_count(
    values: dict[str, Any], request_memory: str, limit_memory: str
) -> None:
    central = _container(helm.template(values))
    patch = _sidecar_patch(helm.template({**values, **SIDECAR}))
    sidecar = patch["spec"]["template"]["spec"]["initContainers"][0]
    for container in (central, sidecar):
        assert container["resources"]["requests"]["memory"] == request_memory
        assert container["resources"]["limits"]["memory"] == limit_memory


# -- values.schema.json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"image": {"tga": "1"}}, "at '/image': additional properties 'tga' not allowed"),
        ({"mode": "daemonset"}, "at '/mode': value must be one of 'central', 'sidecar'"),
        ({"ports": {"grpc": 70000}}, "at '/ports/grpc'"),
        ({"controller": {"watchNamespaces": SHOP}}, "at '/controller/watchNamespaces'"),
        ({"controller": {"watchNamespaces": ["Shop_1"]}}, "at '/controller/watchNamespaces/0'"),
        ({"securityContext": {"readOnlyRootFileSystem": True}}, "'readOnlyRootFileSystem'"),
        ({"resources": {"limit": {"cpu": 1}}}, "additional properties 'limit' not allowed"),
        ({"autoscaling": {"enabled": "yes"}}, "at '/autoscaling/enabled': got string"),
        ({"sidecar": {"listen": "udp"}}, "at '/sidecar/listen'"),
        ({"workers": 0}, "at '/workers'"),
        ({"logLevel": "verbose"}, "at '/logLevel'"),
        ({"image": {"digest": "latest"}}, "at '/image/digest'"),
        ({"memory": {"limitPerWorker": "1Gi"}}, "at '/memory/limitPerWorker'"),
        ({"test": {"expectStatus": 99}}, "at '/test/expectStatus'"),
        ({"service": {"headless": "yes"}}, "at '/service/headless'"),
        ({"policies": {"a/b.yaml": "x: 1"}}, "invalid propertyName 'a/b.yaml'"),
        (
            {"podDisruptionBudget": {"minAvailable": "half"}},
            "at '/podDisruptionBudget/minAvailable'",
        ),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    result = helm.template_text(values, check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"autoscaling": {"enabled": True}, "resources": {"requests": None}},
            "set resources.requests.cpu",
        ),
        ({"terminationGracePeriodSeconds": 10}, "must be longer than shutdownDelaySeconds"),
        ({"controller": {"enabled": False}}, "set policies or enable the controller"),
        ({"mode": "sidecar"}, "mode=sidecar reads its policies"),
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
    ],
)
def test_inconsistent_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    result = helm.template_text(values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def _values_keys(text: str) -> dict[str, bool]:
    """Every key path in values.yaml -> whether a `# --` comment documents it."""
    out: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    documented = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            documented = True
            continue
        if not stripped or stripped.startswith("#") or stripped.startswith("-"):
            continue
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack and stack[-1][0] < 0:  # inside a documented free-form value
            continue
        path = ".".join([*(k for _, k in stack), key])
        out[path] = documented
        documented = False
        stack.append((indent, key))
    return out


def _schema_keys(node: Mapping[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if node.get("additionalProperties") is not False:
        return keys
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        keys.add(path)
        keys |= _schema_keys(child, f"{path}.")
    return keys


# Values that mirror a Kubernetes type: the schema lists every field Kubernetes has (checked
# against the API server below), values.yaml only the ones with a default.
KUBERNETES_MIRRORS = ("podSecurityContext.", "securityContext.", "resources.", "probes.")


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (helm.CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((helm.CHART / "values.schema.json").read_text())
    documented = _values_keys(text)
    schema_keys = _schema_keys(schema) - {"global"}

    def tree(node: Mapping[str, Any], schema_node: Mapping[str, Any], prefix: str) -> set[str]:
        keys = set()
        for key, value in node.items():
            path = f"{prefix}{key}"
            keys.add(path)
            child = schema_node.get("properties", {}).get(key, {})
            if isinstance(value, dict) and child.get("additionalProperties") is False:
                keys |= tree(value, child, f"{path}.")
        return keys

    value_keys = tree(values, schema, "")
    assert not value_keys - schema_keys, f"not in the schema: {sorted(value_keys - schema_keys)}"
    missing = {k for k in schema_keys - value_keys if not k.startswith(KUBERNETES_MIRRORS)}
    assert not missing, f"in the schema but not in values.yaml: {sorted(missing)}"
    # A group (`image:`) may be documented by its keys; every leaf needs its own `# --`.
    leaves = {k for k in value_keys if not any(o.startswith(f"{k}.") for o in value_keys)}
    undocumented = sorted(k for k in leaves if not documented.get(k, False))
    top_level = [k for k in leaves if "." not in k or not k.startswith(KUBERNETES_MIRRORS)]
    assert not [k for k in undocumented if k in top_level], f"no `# --` comment: {undocumented}"


# -- against the real kube-apiserver ------------------------------------------------------------


def _namespace(cp: ControlPlane, *names: str) -> None:
    cp.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names])


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The control plane with the authz CRDs and the Prometheus Operator's ServiceMonitor and
    PrometheusRule CRDs installed; the authz.io objects this module creates are deleted
    afterwards (namespaces cannot be: without a controller-manager they stay Terminating)."""
    docs = [yaml.safe_load(p.read_text()) for p in CRDS]
    monitoring = [upstream_crds.servicemonitor_crd(), upstream_crds.prometheusrule_crd()]
    install_crds(control_plane, [*docs, *monitoring])
    _namespace(control_plane, SHOP, PAYMENTS, OTHER)
    yield control_plane
    for doc in (POLICY, BROKEN_POLICY, ISSUER):
        control_plane.delete(doc)


def test_schema_security_context_fields_are_kubernetes_fields(cluster: ControlPlane) -> None:
    """The schema's closed securityContext objects list only fields Kubernetes has."""
    _, openapi = cluster.request("GET", "/openapi/v3/api/v1")
    k8s_schemas = openapi["components"]["schemas"]
    schema = json.loads((helm.CHART / "values.schema.json").read_text())["properties"]
    for key, k8s_name in (
        ("podSecurityContext", "io.k8s.api.core.v1.PodSecurityContext"),
        ("securityContext", "io.k8s.api.core.v1.SecurityContext"),
        ("resources", "io.k8s.api.core.v1.ResourceRequirements"),
    ):
        ours = set(schema[key]["properties"])
        theirs = set(k8s_schemas[k8s_name]["properties"])
        assert ours <= theirs, f"{key}: not Kubernetes fields: {sorted(ours - theirs)}"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_chart_applies_to_the_api_server(name: str, cluster: ControlPlane) -> None:
    namespace = f"chart-{name}"
    _namespace(cluster, namespace)
    docs = _render(name)
    cluster.apply(docs, dry_run=True)  # every object validated, admission run, nothing stored
    applied = cluster.apply(docs)
    assert {(d["kind"], d["metadata"]["name"]) for d in applied} == {
        (d["kind"], d["metadata"]["name"]) for d in docs
    }


def test_sidecar_patch_merges_into_a_workload(cluster: ControlPlane) -> None:
    """The rendered patch is a valid strategic merge patch; applying it twice changes nothing."""
    namespace = "chart-sidecar-patch"
    _namespace(cluster, namespace)
    docs = _render("sidecar", namespace=namespace)
    cluster.apply(docs)
    labels = {"app": "orders"}
    app = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "orders", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example/orders:1"}]},
            },
        },
    }
    cluster.apply([app])
    path = cluster.resource_path(app)
    patch = _sidecar_patch(docs)
    content_type = "application/strategic-merge-patch+json"
    _, first = cluster.request("PATCH", path, patch, content_type=content_type)
    _, second = cluster.request("PATCH", path, patch, content_type=content_type)
    assert first["metadata"]["generation"] == second["metadata"]["generation"]
    pod = second["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["app"]
    assert [c["name"] for c in pod["initContainers"]] == ["authz"]
    assert pod["initContainers"][0]["restartPolicy"] == "Always"
    assert {v["name"] for v in pod["volumes"]} == {"authz-policies", "authz-podinfo", "authz-tmp"}


def test_helm_install_upgrade_uninstall(cluster: ControlPlane, tmp_path: Path) -> None:
    """`helm install` itself against the API server (no --wait: pods never start here)."""
    namespace, release = "helm-install", "authz-helm"
    kube = ["--kubeconfig", str(cluster.kubeconfig_path), "--namespace", namespace]
    env = {"KUBECONFIG": str(cluster.kubeconfig_path)}
    helm.run("install", release, str(helm.CHART), *kube, "--create-namespace", env=env)
    status = json.loads(helm.run("status", release, *kube, "-o", "json", env=env).stdout)
    assert status["info"]["status"] == "deployed"
    assert "meshConfig" in status["info"]["notes"]  # NOTES tell how to wire Istio
    deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/{release}"
    assert cluster.request("GET", deployment)[1]["spec"]["replicas"] == 2

    ha = helm.values_file(HA, tmp_path)
    helm.run("upgrade", release, str(helm.CHART), *kube, "--values", str(ha), env=env)
    hpa = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{release}"
    assert cluster.request("GET", hpa)[1]["spec"]["minReplicas"] == 3

    helm.run("uninstall", release, *kube, env=env)
    assert cluster.request("GET", deployment, check=False)[0] == 404
    cluster_role = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{release}"
    assert cluster.request("GET", cluster_role, check=False)[0] == 404
    # CRDs in crds/ are never deleted by Helm: users' policies survive an uninstall.
    assert cluster.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/authzpolicies.authz.io"
    )


# -- RBAC: the controller's whole job, and nothing more ---------------------------------------


def _sa_token(cp: ControlPlane, namespace: str, name: str) -> str:
    """A TokenRequest token: the API server authenticates it as the pod's own token."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
    _, out = cp.request("POST", path, body)
    token: str = out["status"]["token"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == f"system:serviceaccount:{namespace}:{name}"
    return token


def _can(cp: ControlPlane, token: str, **attributes: str) -> bool:
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    _, review = cp.request("POST", path, body, token=token)
    allowed: bool = review["status"]["allowed"]
    return allowed


def _authz(verb: str, resource: str, namespace: str = "", **extra: str) -> dict[str, str]:
    return {"verb": verb, "group": GROUP, "resource": resource, "namespace": namespace, **extra}


def _core(verb: str, resource: str, namespace: str = "", **extra: str) -> dict[str, str]:
    return {"verb": verb, "group": "", "resource": resource, "namespace": namespace, **extra}


def _lease(verb: str, namespace: str, name: str = "") -> dict[str, str]:
    return {
        "verb": verb,
        "group": "coordination.k8s.io",
        "resource": "leases",
        "namespace": namespace,
        "name": name,
    }


@pytest.fixture(scope="module")
def installed(cluster: ControlPlane) -> Iterator[dict[str, Any]]:
    """The default rendering applied as release `authz-rbac` in `authz-rbac`, with a
    JWTIssuer and an AuthzPolicy in SHOP; yields the SA's token and an ApiClient for it."""
    namespace, release = "authz-rbac", "authz-rbac"
    _namespace(cluster, namespace)
    cluster.apply(helm.template({}, release=release, namespace=namespace))
    cluster.apply([ISSUER, POLICY])
    token = _sa_token(cluster, namespace, release)
    api = cluster.client_with_token(token)
    try:
        yield {
            "namespace": namespace,
            "release": release,
            "lease": f"{release}-status",
            "token": token,
            "api": api,
        }
    finally:
        api.close()


ALLOWED_CLUSTER_WIDE = [
    _authz("list", "jwtissuers"),
    _authz("watch", "jwtissuers"),
    _authz("list", "authzpolicies"),
    _authz("watch", "authzpolicies"),
    _authz("list", "clusterjwtissuers"),
    _authz("watch", "clusterjwtissuers"),
    _authz("list", "hostgrants"),
    _authz("watch", "hostgrants"),
    _authz("patch", "hostgrants", subresource="status"),
    _authz("patch", "jwtissuers", SHOP, subresource="status"),
    _authz("patch", "authzpolicies", SHOP, subresource="status"),
    _authz("patch", "clusterjwtissuers", subresource="status"),
    _authz("list", "tokenrevocations"),
    _authz("watch", "tokenrevocations"),
    _authz("patch", "tokenrevocations", subresource="status"),
    _core("create", "events", SHOP),
    _core("create", "events", "default"),
    {"verb": "create", "group": "events.k8s.io", "resource": "events", "namespace": SHOP},
]
DENIED_ALWAYS = [
    _core("get", "secrets", SHOP, name="hs-key"),  # controller.readSecrets is off by default
    _core("get", "configmaps", SHOP, name="idp-ca"),  # so is controller.readConfigMaps
    _core("list", "configmaps", SHOP),
    _core("list", "secrets", SHOP),
    _core("watch", "secrets", SHOP),
    _core("list", "secrets"),
    _core("create", "secrets", SHOP),
    _authz("get", "authzpolicies", SHOP, name="orders"),  # the controller lists, never gets
    _authz("create", "authzpolicies", SHOP),
    _authz("update", "authzpolicies", SHOP, name="orders"),
    _authz("patch", "authzpolicies", SHOP, name="orders"),  # spec: the user's, not ours
    _authz("delete", "authzpolicies", SHOP, name="orders"),
    _authz("delete", "jwtissuers", SHOP, name="demo"),
    _authz("deletecollection", "clusterjwtissuers"),
    _authz("create", "tokenrevocations"),  # revoking is for admins, not the controller
    _authz("update", "tokenrevocations", name="incident"),
    _authz("update", "authzpolicies", SHOP, subresource="status"),  # patch only
    _core("list", "pods", SHOP),
    _core("list", "configmaps", SHOP),
    _core("watch", "configmaps", SHOP),
    _authz("create", "hostgrants"),  # granting hosts is for cluster admins
    _authz("update", "hostgrants", name="shop"),
    _authz("patch", "hostgrants", name="shop"),
    _core("list", "events", SHOP),
    _core("delete", "events", SHOP),
    _core("impersonate", "serviceaccounts"),
    {"verb": "create", "group": "rbac.authorization.k8s.io", "resource": "rolebindings"},
    {"verb": "update", "group": "apiextensions.k8s.io", "resource": "customresourcedefinitions"},
]


@pytest.mark.parametrize("attributes", ALLOWED_CLUSTER_WIDE, ids=lambda a: "-".join(a.values()))
def test_service_account_may(
    installed: dict[str, Any], cluster: ControlPlane, attributes: dict[str, str]
) -> None:
    assert _can(cluster, installed["token"], **attributes)


@pytest.mark.parametrize("attributes", DENIED_ALWAYS, ids=lambda a: "-".join(a.values()))
def test_service_account_may_not(
    installed: dict[str, Any], cluster: ControlPlane, attributes: dict[str, str]
) -> None:
    assert not _can(cluster, installed["token"], **attributes)


def test_lease_permissions_are_its_own_lease_in_its_own_namespace(
    installed: dict[str, Any], cluster: ControlPlane
) -> None:
    token, ns, lease = installed["token"], installed["namespace"], installed["lease"]
    assert _can(cluster, token, **_lease("get", ns, lease))
    assert _can(cluster, token, **_lease("update", ns, lease))
    assert _can(cluster, token, **_lease("create", ns))
    assert not _can(cluster, token, **_lease("get", ns, "someone-elses-lease"))
    assert not _can(cluster, token, **_lease("update", ns, "someone-elses-lease"))
    assert not _can(cluster, token, **_lease("delete", ns, lease))
    assert not _can(cluster, token, **_lease("list", ns))
    for other in ("kube-system", SHOP):
        assert not _can(cluster, token, **_lease("create", other))
        assert not _can(cluster, token, **_lease("update", other, lease))


def _forbidden(call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 403, caught.value


def test_controller_api_calls_succeed_as_the_service_account(
    installed: dict[str, Any], cluster: ControlPlane
) -> None:
    """The calls authz/policy/{kube,status,lease}.py make, made with the SA's token."""
    api, ns, lease_name = installed["api"], installed["namespace"], installed["lease"]
    custom = k8s.CustomObjectsApi(api)
    core = k8s.CoreV1Api(api)
    leases = k8s.CoordinationV1Api(api)

    # kube.py: list all namespaces, then watch from the list's resourceVersion.
    listed = {}
    for plural in (
        "jwtissuers",
        "authzpolicies",
        "clusterjwtissuers",
        "hostgrants",
        "tokenrevocations",
    ):
        result = custom.list_cluster_custom_object(GROUP, "v1alpha1", plural)
        listed[plural] = [o["metadata"]["name"] for o in result["items"]]
        version = result["metadata"]["resourceVersion"]
        stream = k8s_watch.Watch().stream(
            custom.list_cluster_custom_object,
            GROUP,
            "v1alpha1",
            plural,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=1,  # the server ends the watch after a second
        )
        for event in stream:
            assert event["type"] != "ERROR", event
    assert "orders" in listed["authzpolicies"] and "demo" in listed["jwtissuers"]

    # status.py: merge-patch the status subresource, and create a Warning event.
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Serving",
        "message": "serving this generation",
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    patched = custom.patch_namespaced_custom_object_status(
        GROUP, "v1alpha1", SHOP, "authzpolicies", "orders", {"status": {"conditions": [condition]}}
    )
    assert patched["status"]["conditions"][0]["reason"] == "Serving"
    event = k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(generate_name="orders.", namespace=SHOP),
        involved_object=k8s.V1ObjectReference(
            api_version="authz.io/v1alpha1", kind="AuthzPolicy", name="orders", namespace=SHOP
        ),
        reason="Rejected",
        message="test event from the chart's service account",
        type="Warning",
        source=k8s.V1EventSource(component="authz"),
    )
    assert core.create_namespaced_event(SHOP, event).metadata.name.startswith("orders.")

    # lease.py: get (404), create, get, update; then only our own lease.
    body = k8s.V1Lease(
        metadata=k8s.V1ObjectMeta(name=lease_name, namespace=ns),
        spec=k8s.V1LeaseSpec(holder_identity="authz-0", lease_duration_seconds=15),
    )
    try:
        leases.create_namespaced_lease(ns, body)
    except ApiException as exc:  # created by an earlier run of this module's fixture
        assert exc.status == 409
    current = leases.read_namespaced_lease(lease_name, ns)
    current.spec.holder_identity = "authz-1"
    assert (
        leases.replace_namespaced_lease(lease_name, ns, current).spec.holder_identity == "authz-1"
    )

    # ...and the forbidden neighbours, for real.
    _forbidden(core.list_namespaced_secret, SHOP)
    _forbidden(
        custom.delete_namespaced_custom_object, GROUP, "v1alpha1", SHOP, "authzpolicies", "orders"
    )
    _forbidden(
        custom.patch_namespaced_custom_object,
        GROUP,
        "v1alpha1",
        SHOP,
        "authzpolicies",
        "orders",
        {"spec": {"defaultAction": "allowAnonymous"}},
    )
    other = copy.deepcopy(body)
    other.metadata.namespace = "kube-system"
    _forbidden(leases.create_namespaced_lease, "kube-system", other)
    _forbidden(leases.read_namespaced_lease, "kube-node-lease-of-someone", ns)


def test_watch_namespaces_scope_namespaced_access(cluster: ControlPlane) -> None:
    """With controller.watchNamespaces the SA reads policies, Secrets and ConfigMaps only
    there."""
    namespace, release = "authz-scoped", "authz-scoped"
    _namespace(cluster, namespace)
    values = {
        "controller": {
            "watchNamespaces": [SHOP, PAYMENTS],
            "readSecrets": True,
            "readConfigMaps": True,
        }
    }
    cluster.apply(helm.template(values, release=release, namespace=namespace))
    token = _sa_token(cluster, namespace, release)
    for ns in (SHOP, PAYMENTS):
        assert _can(cluster, token, **_authz("list", "authzpolicies", ns))
        assert _can(cluster, token, **_authz("watch", "jwtissuers", ns))
        assert _can(cluster, token, **_authz("patch", "authzpolicies", ns, subresource="status"))
        assert _can(cluster, token, **_core("get", "secrets", ns, name="hs-key"))
        assert _can(cluster, token, **_core("get", "configmaps", ns, name="idp-ca"))
        assert _can(cluster, token, **_core("create", "events", ns))
    assert _can(cluster, token, **_core("create", "events", "default"))  # ClusterJWTIssuer events
    assert _can(cluster, token, **_authz("list", "clusterjwtissuers"))
    assert not _can(cluster, token, **_authz("list", "authzpolicies"))  # all namespaces
    assert not _can(cluster, token, **_authz("list", "authzpolicies", OTHER))
    assert not _can(cluster, token, **_core("get", "secrets", OTHER, name="hs-key"))
    assert not _can(cluster, token, **_core("get", "configmaps", OTHER, name="idp-ca"))
    assert not _can(cluster, token, **_core("get", "secrets", "default", name="hs-key"))
    assert not _can(cluster, token, **_core("create", "events", OTHER))
    with cluster.client_with_token(token) as api:
        custom = k8s.CustomObjectsApi(api)
        assert custom.list_namespaced_custom_object(GROUP, "v1alpha1", SHOP, "authzpolicies")
        _forbidden(custom.list_cluster_custom_object, GROUP, "v1alpha1", "authzpolicies")


@pytest.mark.parametrize(
    ("kind", "switch", "namespaces"),
    [
        ("secrets", "readSecrets", "secretNamespaces"),
        ("configmaps", "readConfigMaps", "configMapNamespaces"),
    ],
)
@pytest.mark.parametrize(
    ("enabled", "listed", "readable", "unreadable"),
    [
        (True, None, [SHOP, PAYMENTS, OTHER], []),  # watching all: cluster-wide
        (True, [SHOP], [SHOP], [PAYMENTS, OTHER]),
        (False, [SHOP], [], [SHOP, PAYMENTS]),
    ],
    ids=["cluster-wide", "listed-namespaces", "off"],
)
def test_references_are_readable_only_where_configured(
    cluster: ControlPlane,
    kind: str,
    switch: str,
    namespaces: str,
    enabled: bool,
    listed: list[str] | None,
    readable: list[str],
    unreadable: list[str],
) -> None:
    """Secrets (hmacSecretRef) and ConfigMaps (fetch.caBundleRef) are never readable by
    default; switched on, `get` (never list) only in the listed namespaces when given, even
    though every namespace is watched."""
    controller: dict[str, Any] = {switch: enabled}
    if listed is not None:
        controller[namespaces] = listed
    suffix = "-".join(listed or []) or "all"
    namespace = release = f"authz-{kind[:6]}-{str(enabled).lower()}-{suffix}"[:50]
    _namespace(cluster, namespace)
    cluster.apply(helm.template({"controller": controller}, release=release, namespace=namespace))
    token = _sa_token(cluster, namespace, release)
    name = "hs-key" if kind == "secrets" else "idp-ca"
    for ns in readable:
        assert _can(cluster, token, **_core("get", kind, ns, name=name)), ns
        assert not _can(cluster, token, **_core("list", kind, ns)), ns
    for ns in unreadable:
        assert not _can(cluster, token, **_core("get", kind, ns, name=name)), ns
    assert _can(cluster, token, **_authz("list", "authzpolicies"))


# -- the real controller, started with the chart's arguments, as the chart's SA ---------------


@pytest.mark.parametrize("name", ["default", "everything", "sidecar"])
def test_rendered_arguments_parse_with_the_authz_cli(name: str) -> None:
    from authz.cli import _parser

    docs = _render(name)
    if name == "sidecar":
        spec = _sidecar_patch(docs)["spec"]["template"]["spec"]
        args = spec["initContainers"][0]["args"]
    else:
        args = _container(docs)["args"]
    args = [a.replace("@/etc/podinfo/labels", "app=orders") for a in args]
    parsed = _parser().parse_args(["serve", *args])
    assert parsed.grpc_addr == _flag(args, "grpc-addr")
    assert parsed.http_check_addr == _flag(args, "http-check-addr")


def test_controller_runs_with_the_chart_arguments_as_the_service_account(
    installed: dict[str, Any], cluster: ControlPlane, tmp_path: Path
) -> None:
    """`authz serve` with the Deployment's own arguments, authenticated with the SA's token:
    it syncs (ready), wins its lease, writes status and a Warning event for a rejected
    policy, with no request forbidden."""
    from tests.e2e.conftest import authz_command, child_env
    from tests.support.procs import Process, free_port, wait_for_http

    ns, release = installed["namespace"], installed["release"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": cluster.url,
                            "certificate-authority": str(cluster.ca_path),
                        },
                    }
                ],
                "users": [{"name": "sa", "user": {"token": installed["token"]}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
                "current-context": "c",
            }
        )
    )
    docs = helm.template({}, release=release, namespace=ns)
    args = _container(docs)["args"]
    grpc_port, http_port, check_port = free_port(), free_port(), free_port()
    args = [
        a.replace("0.0.0.0:9001", f"127.0.0.1:{grpc_port}")
        .replace("0.0.0.0:9002", f"127.0.0.1:{http_port}")
        .replace("0.0.0.0:9003", f"127.0.0.1:{check_port}")
        for a in args
    ]
    argv = [*authz_command(), "serve", *args, f"--kubeconfig={kubeconfig}"]
    pod = f"{release}-7d9f-abcde"
    env = child_env(POD_NAME=pod, POD_NAMESPACE=ns)
    cluster.apply([BROKEN_POLICY])
    policies = f"/apis/{GROUP}/v1alpha1/namespaces/{SHOP}/authzpolicies"
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{installed['lease']}"
    events_path = f"/api/v1/namespaces/{SHOP}/events"
    with Process(argv, name="authz-as-sa", env=env) as proc:
        wait_for_http(f"http://127.0.0.1:{http_port}/readyz", 60, proc=proc)
        deadline = time.monotonic() + 30
        while True:
            _, lease = cluster.request("GET", lease_path, check=False)
            holder = (
                lease.get("spec", {}).get("holderIdentity") if isinstance(lease, dict) else None
            )
            ready = {
                name: _ready(cluster.request("GET", f"{policies}/{name}")[1])
                for name in ("orders", "broken")
            }
            _, events = cluster.request(
                "GET", events_path, query={"fieldSelector": "involvedObject.name=broken"}
            )
            warned = any(e["type"] == "Warning" for e in events["items"])
            if holder == pod and ready == {"orders": "True", "broken": "False"} and warned:
                break
            assert time.monotonic() < deadline, f"lease {holder}, ready {ready}, event {warned}"
            time.sleep(0.5)
        log = proc.output()
    for failure in (
        "Forbidden",
        "status write failed",
        "event write failed",
        "lease renewal failed",
    ):
        assert failure not in log, log


def _ready(obj: Mapping[str, Any]) -> str | None:
    """The Ready condition's status, if written for the object's current generation."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    return ready[0]["status"] if ready else None


def test_helm_is_the_pinned_version() -> None:
    assert helm.run("version", "--short").stdout.startswith("v3.21.")
