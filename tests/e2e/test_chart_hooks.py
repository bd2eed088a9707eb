"""The chart's `helm test` hook and its monitoring objects, each checked by the real thing.

- `helm test`: there is no kubelet here, so the hook pod cannot run in a cluster. Instead
  (1) the rendered pod is server-side applied with dryRun=All to the real kube-apiserver,
  which validates and admits it exactly as `helm test` would create it, and (2) the pod's
  exact command (`authz check --grpc SERVICE ...`) runs here against a real `authz serve`,
  with only the Service address replaced by the local one.
- PrometheusRule: the real promtool parses every expression (`check rules`) and fires every
  alert on synthetic series (`test rules`), with the labels Alertmanager would route on.
- Every metric the alerts and the Grafana dashboard query is one a running authz (with
  `--workers 2`, so the supervisor's metrics are there too) exposes on /metrics.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO_ROOT, AuthzFactory, authz_command, child_env
from tests.support import helm, kube_fixtures, testbin, upstream_crds
from tests.support.kube import ControlPlane
from tests.support.manifests import install_crds

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

RELEASE, NAMESPACE = "authz-hooks", "chart-hooks"
MONITORED = {
    "prometheusRule": {"enabled": True, "alertLabels": {"team": "platform"}},
    "grafanaDashboard": {"enabled": True},
}


@pytest.fixture(scope="module", autouse=True)
def _prebuilt() -> None:
    """Build helm and promtool before the first test, outside the per-test time budget."""
    with kube_fixtures.alarm_paused():
        helm.binary()
        testbin.path("promtool")
        upstream_crds.module_dir(*upstream_crds.PROMETHEUS_OPERATOR)


def _render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return helm.template(values or {}, release=RELEASE, namespace=NAMESPACE)


def _hook_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pods = [d for d in docs if d["kind"] == "Pod"]
    assert len(pods) == 1, helm.kinds(docs)
    return pods[0]


# -- helm test -------------------------------------------------------------------------------


def test_hook_pod_calls_check_through_the_service() -> None:
    docs = _render()
    pod = _hook_pod(docs)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = helm.find(docs, "Service")
    # The Service must never send Checks to the test pod.
    selector = service["spec"]["selector"].items()
    assert not selector <= pod["metadata"]["labels"].items()
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False  # no API access at all
    (container,) = spec["containers"]
    assert container["image"] == _container_image(docs)
    assert container["command"] == ["authz"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    target = f"{service['metadata']['name']}.{NAMESPACE}.svc:{grpc_port}"
    assert container["args"][:2] == ["check", f"--grpc={target}"]
    assert "--expect-status=403" in container["args"]


def _container_image(docs: list[dict[str, Any]]) -> str:
    image: str = helm.find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def test_sidecar_mode_has_no_hook() -> None:
    docs = helm.template({"mode": "sidecar", "policies": {"p.yaml": "{}"}})
    assert not [d for d in docs if d["kind"] == "Pod"]


def test_network_policy_admits_the_hook_pod() -> None:
    docs = _render({"networkPolicy": {"enabled": True}})
    pod_labels = _hook_pod(docs)["metadata"]["labels"]
    grpc_rule = helm.find(docs, "NetworkPolicy")["spec"]["ingress"][0]
    selectors = [
        peer["podSelector"]["matchLabels"] for peer in grpc_rule["from"] if "podSelector" in peer
    ]
    assert any(s.items() <= pod_labels.items() for s in selectors), selectors


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    install_crds(control_plane, [upstream_crds.prometheusrule_crd()])
    control_plane.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    )
    yield control_plane


def test_hook_pod_and_monitoring_objects_are_accepted_by_the_api_server(
    cluster: ControlPlane,
) -> None:
    """What `helm test` creates (the pod) and the optional PrometheusRule and dashboard
    ConfigMap, validated and admitted by the real API server (dryRun=All: nothing stored)."""
    docs = _render(MONITORED)
    wanted = [_hook_pod(docs), helm.find(docs, "PrometheusRule"), helm.find(docs, "ConfigMap")]
    accepted = cluster.apply(wanted, dry_run=True)
    assert [(d["kind"], d["metadata"]["name"]) for d in accepted] == [
        (d["kind"], d["metadata"]["name"]) for d in wanted
    ]


def _hook_argv(pod: dict[str, Any], addr: str | None) -> list[str]:
    """The pod's command and arguments, with the Service address replaced by ``addr`` (gRPC
    or HTTP checks, whichever the pod calls) and the image's `authz` by this checkout's."""
    (container,) = pod["spec"]["containers"]
    assert addr is not None
    args = [re.sub(r"^--(grpc|http)=.*$", rf"--\1={addr}", a) for a in container["args"]]
    assert container["command"] == ["authz"]
    return [*authz_command(), *args]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


def test_hook_command_passes_against_a_real_authz(
    authz_server: AuthzFactory, tmp_path: Path
) -> None:
    server = authz_server(tmp_path)  # no policy: the deny by default answers
    result = _run(_hook_argv(_hook_pod(_render()), server.grpc_addr))
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert (answer["decision"], answer["status"], answer["reason"]) == ("deny", 403, "no_policy")


def test_hook_command_fails_on_another_answer_or_no_answer(
    authz_server: AuthzFactory, tmp_path: Path
) -> None:
    server = authz_server(tmp_path, extra_args=["--default-action", "allow"])
    pod = _hook_pod(_render())
    wrong = _run(_hook_argv(pod, server.grpc_addr))
    assert wrong.returncode == 1  # an answer, but not the expected one: the hook fails
    assert json.loads(wrong.stdout)["status"] == 200
    allowed = _run(
        _hook_argv(_hook_pod(_render({"test": {"expectStatus": 200}})), server.grpc_addr)
    )
    assert allowed.returncode == 0
    server.process.stop()
    down = _run(_hook_argv(pod, server.grpc_addr))
    assert down.returncode == 2 and "UNAVAILABLE" in down.stderr


def test_http_only_hook_command_passes_against_a_real_authz(
    authz_server: AuthzFactory, tmp_path: Path
) -> None:
    """With `transport: http` the hook sends an HTTP check (`authz check --http`)."""
    server = authz_server(tmp_path, grpc=False)
    result = _run(_hook_argv(_hook_pod(_render({"transport": "http"})), server.http_check_addr))
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert (answer["decision"], answer["status"]) == ("deny", 403)
    assert json.loads(answer["body"])["error"] == "access_denied"


# -- PrometheusRule and dashboard ---------------------------------------------------------------


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(testbin.path("promtool")), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rule = helm.find(_render(MONITORED), "PrometheusRule")
    path = tmp_path_factory.mktemp("rules") / "authz-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_accepts_every_rule(rules_file: Path) -> None:
    result = _promtool("check", "rules", rules_file.name, cwd=rules_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


SEL = f'namespace="{NAMESPACE}", job="{RELEASE}"'
ISSUER = 'issuer="JWTIssuer/shop/idp"'
# alert -> (series and values, the alert's labels, what on-call reads: summary, description)
ALERT_CASES: dict[str, tuple[list[tuple[str, str]], dict[str, str], tuple[str, str]]] = {
    "AuthzIssuerKeysUnavailable": (
        [(f"authz_issuer_keys_ready{{{SEL}, {ISSUER}, worker='1'}}", "0x40")],
        {"severity": "critical", "namespace": NAMESPACE, "issuer": "JWTIssuer/shop/idp"},
        (
            "Issuer JWTIssuer/shop/idp has no verification keys",
            "authz has no keys for issuer JWTIssuer/shop/idp: every token it signs is denied "
            "with 401 keys_unavailable. Check the issuer's key URL and `kubectl get "
            "jwtissuers,clusterjwtissuers -A` (KeysReady condition).",
        ),
    ),
    "AuthzInternalErrors": (
        [
            (
                f'authz_decisions_total{{{SEL}, decision="deny", reason="internal_error", policy=""}}',
                "0+30x40",
            )
        ],
        {"severity": "critical", "namespace": NAMESPACE},
        (
            "authz fails Checks with internal_error",
            "0.50 Checks per second end in internal_error (denied with 403: authz fails "
            "closed). This is a bug: the audit log has the traceback.",
        ),
    ),
    "AuthzKeyRefreshFailing": (
        [
            (f'authz_issuer_key_fetches_total{{{SEL}, {ISSUER}, result="timeout"}}', "0+10x80"),
            (f'authz_issuer_key_fetches_total{{{SEL}, {ISSUER}, result="ok"}}', "0+1x80"),
        ],
        {"severity": "warning", "namespace": NAMESPACE, "issuer": "JWTIssuer/shop/idp"},
        (
            "Key refreshes for issuer JWTIssuer/shop/idp keep failing",
            "90.91% of the key refreshes for JWTIssuer/shop/idp fail. The last good keys "
            "serve for maxStaleSeconds, then its tokens are denied (keys_unavailable).",
        ),
    ),
    "AuthzCheckLatencyHigh": (
        [
            (f'authz_check_duration_seconds_bucket{{{SEL}, le="0.025"}}', "0+0x40"),
            (f'authz_check_duration_seconds_bucket{{{SEL}, le="0.1"}}', "0+600x40"),
            (f'authz_check_duration_seconds_bucket{{{SEL}, le="+Inf"}}', "0+600x40"),
        ],
        {"severity": "warning", "namespace": NAMESPACE},
        (
            "authz Checks are slow",
            "The 99th percentile of the time in the Check handler is 99.25ms, over 0.025s. "
            "authz is short of CPU: raise the CPU limit (workers follow it) or the replicas.",
        ),
    ),
    "AuthzPolicyNotReady": (
        [(f"authz_policy_objects_rejected{{{SEL}}}", "2x40")],
        {"severity": "warning", "namespace": NAMESPACE},
        (
            "Policy objects are not serving",
            "2 JWTIssuer, ClusterJWTIssuer or AuthzPolicy objects are rejected (their last "
            "good version, if any, still serves). `kubectl get "
            "jwtissuers,clusterjwtissuers,authzpolicies -A` shows which (READY False), and "
            "`kubectl describe` why.",
        ),
    ),
}
EVAL_TIME = "60m"
HEALTHY = [
    (f"authz_issuer_keys_ready{{{SEL}, {ISSUER}}}", "1x80"),
    (f'authz_decisions_total{{{SEL}, decision="allow", reason="allowed", policy="p"}}', "0+50x80"),
    (f'authz_issuer_key_fetches_total{{{SEL}, {ISSUER}, result="ok"}}', "0+1x80"),
    (f'authz_check_duration_seconds_bucket{{{SEL}, le="0.001"}}', "0+600x80"),
    (f'authz_check_duration_seconds_bucket{{{SEL}, le="+Inf"}}', "0+600x80"),
    (f"authz_policy_objects_rejected{{{SEL}}}", "0x80"),
]


def test_every_alert_fires_on_its_symptom_and_not_on_a_healthy_authz(rules_file: Path) -> None:
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in HEALTHY],
            "alert_rule_test": [
                {"eval_time": EVAL_TIME, "alertname": name, "exp_alerts": []}
                for name in ALERT_CASES
            ],
        }
    ]
    for name, (series, labels, (summary, description)) in ALERT_CASES.items():
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s.replace("'", '"'), "values": v} for s, v in series],
                "alert_rule_test": [
                    {
                        "eval_time": "40m" if name != "AuthzKeyRefreshFailing" else EVAL_TIME,
                        "alertname": name,
                        "exp_alerts": [
                            {
                                "exp_labels": {**labels, "team": "platform"},
                                "exp_annotations": {
                                    "summary": summary,
                                    "description": description,
                                },
                            }
                        ],
                    }
                ],
            }
        )
    unit = rules_file.parent / "authz-rules.test.yaml"
    unit.write_text(
        yaml.safe_dump(
            {"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
        )
    )
    result = _promtool("test", "rules", unit.name, cwd=rules_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard() -> dict[str, Any]:
    configmap = helm.find(_render(MONITORED), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard: dict[str, Any] = json.loads(configmap["data"]["authz.json"])
    return dashboard


def _dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    assert len(queries) >= 10
    return queries


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel query (Grafana's variables filled in) as a recording rule for promtool."""
    rules = [
        {"record": f"authz:dashboard_query_{i}", "expr": _grafana_filled(q)}
        for i, q in enumerate(_dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _grafana_filled(query: str) -> str:
    return (
        query.replace("$__rate_interval", "5m")
        .replace("$namespace", NAMESPACE)
        .replace("$job", RELEASE)
    )


def _exposed_series(metrics_text: str) -> set[str]:
    """Sample names a scrape can contain, from its `# TYPE` lines (families without samples
    yet, such as labelled counters never incremented, are listed too)."""
    names: set[str] = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, re.M):
        if kind == "counter":
            names.add(family if family.endswith("_total") else f"{family}_total")
        elif kind == "histogram":
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
        else:
            names.add(family)
    return names


def test_alerts_and_dashboard_query_only_metrics_authz_exposes(
    authz_server: AuthzFactory, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    for path in (REPO_ROOT / "examples" / "policies").glob("*.yaml"):
        (policies / path.name).write_text(path.read_text())
    server = authz_server(policies, extra_args=["--workers", "2"], wait_ready=False)
    exposed = _exposed_series(server.metrics())
    rule = helm.find(_render(MONITORED), "PrometheusRule")
    queries = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    queries += _dashboard_queries()
    used = {m for q in queries for m in re.findall(r"\b(authz_[a-z_]+)\b", q)}
    used -= {m for m in used if m.startswith("authz_dashboard")}
    assert used, queries
    assert used <= exposed, f"not exposed by authz: {sorted(used - exposed)}"
