"""The chart's TLS, mTLS, cert-manager and admission webhook options, with the real helm and
the real kube-apiserver: what they render, that the API server accepts it, that the
arguments parse with the authz CLI, and that the certificate the chart generates for the
webhook is one `authz webhook` serves and the webhook configuration's caBundle verifies."""

from __future__ import annotations

import base64
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from authz.cli import _parser
from tests.e2e.conftest import REPO_ROOT, child_env
from tests.support import helm, kube_fixtures
from tests.support.kube import ControlPlane
from tests.support.procs import Process, free_port

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

NS = "chart-networks"
MTLS = {
    "tls": {
        "enabled": True,
        "certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "mesh-ca"}},
        "clientAuth": {"enabled": True},
    },
    "service": {"headless": True},
}
WEBHOOK = {"webhook": {"enabled": True}, "controller": {"readSecrets": True}}
CERT_MANAGER_KINDS = {"Certificate", "Issuer"}


def render(values: dict[str, Any], release: str = "net") -> list[dict[str, Any]]:
    return helm.template(values, release=release, namespace=NS)


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = helm.find(docs, "Deployment", name)
    return deployment["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def test_mtls_with_cert_manager() -> None:
    docs = render(MTLS)
    serve = container(docs, "net-authz")
    args = serve["args"]
    assert "--tls-cert-file=/etc/authz/tls/tls.crt" in args
    assert "--tls-key-file=/etc/authz/tls/tls.key" in args
    assert "--tls-client-ca-file=/etc/authz/tls/ca.crt" in args
    parsed = _parser().parse_args(["serve", *args])
    assert str(parsed.tls_client_ca_file) == "/etc/authz/tls/ca.crt"
    assert {"name": "tls", "mountPath": "/etc/authz/tls", "readOnly": True} in serve["volumeMounts"]
    pod = helm.find(docs, "Deployment", "net-authz")["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "net-authz-tls"}} in pod["volumes"]
    certificate = helm.find(docs, "Certificate")["spec"]
    assert certificate["secretName"] == "net-authz-tls"
    assert certificate["issuerRef"] == {"kind": "ClusterIssuer", "name": "mesh-ca"}
    assert f"net-authz.{NS}.svc" in certificate["dnsNames"]
    assert f"net-authz-headless.{NS}.svc" in certificate["dnsNames"]
    assert set(certificate["usages"]) >= {"server auth", "client auth"}
    # helm test verifies the server and, with mTLS, presents the serving certificate.
    hook = helm.find(docs, "Pod")["spec"]["containers"][0]["args"]
    assert f"--tls-server-name=net-authz.{NS}.svc" in hook
    assert "--tls-cert-file=/etc/authz/tls/tls.crt" in hook
    parsed = _parser().parse_args(hook)
    assert str(parsed.tls_ca_file) == "/etc/authz/tls/ca.crt"


def test_a_client_ca_from_a_config_map() -> None:
    values = {
        "tls": {
            "enabled": True,
            "secretName": "my-cert",
            "clientAuth": {"enabled": True, "caConfigMap": "mesh-roots", "caKey": "roots.pem"},
        }
    }
    docs = render(values)
    serve = container(docs, "net-authz")
    assert "--tls-client-ca-file=/etc/authz/client-ca/roots.pem" in serve["args"]
    pod = helm.find(docs, "Deployment", "net-authz")["spec"]["template"]["spec"]
    assert {"name": "client-ca", "configMap": {"name": "mesh-roots"}} in pod["volumes"]
    assert {"name": "tls", "secret": {"secretName": "my-cert"}} in pod["volumes"]
    assert not [d for d in docs if d["kind"] == "Certificate"]


def test_cert_manager_needs_an_issuer() -> None:
    result = helm.template_text(
        {"tls": {"enabled": True, "certManager": {"enabled": True}}}, check=False
    )
    assert result.returncode != 0
    assert "tls.certManager.enabled needs tls.certManager.issuerRef" in result.stderr


def test_webhook_renders_apart_from_the_check_pods() -> None:
    docs = render(WEBHOOK)
    config = helm.find(docs, "ValidatingWebhookConfiguration")
    (hook,) = config["webhooks"]
    assert (hook["failurePolicy"], hook["sideEffects"], hook["timeoutSeconds"]) == (
        "Fail",
        "None",
        10,
    )
    assert hook["clientConfig"]["service"] == {
        "name": "net-authz-webhook",
        "namespace": NS,
        "path": "/validate",
        "port": 443,
    }
    (rule,) = hook["rules"]
    crds = sorted(p.name.split(".")[0] for p in (helm.CHART / "crds").glob("*.yaml"))
    assert sorted(rule["resources"]) == crds  # every kind the chart installs
    assert rule["operations"] == ["CREATE", "UPDATE"]
    webhook = container(docs, "net-authz-webhook")
    parsed = _parser().parse_args(webhook["args"])
    assert parsed.command == "webhook"
    # The Check Service must not route to webhook pods (nor the webhook Service to Checks).
    check_selector = helm.find(docs, "Service", "net-authz")["spec"]["selector"]
    webhook_labels = helm.find(docs, "Deployment", "net-authz-webhook")["spec"]["template"][
        "metadata"
    ]["labels"]
    assert not all(webhook_labels.get(k) == v for k, v in check_selector.items())
    role = helm.find(docs, "ClusterRole", "net-authz-webhook")
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    assert verbs == {"list", "watch", "get"}  # get: Secrets, as controller.readSecrets allows


@pytest.mark.parametrize(
    ("certificate", "expected"),
    [
        ({"certificate": "certManager"}, "inject"),
        ({"certificate": "secret", "secretName": "s", "caBundle": "Q0E="}, "Q0E="),
    ],
)
def test_webhook_certificate_sources(certificate: dict[str, Any], expected: str) -> None:
    docs = render({"webhook": {"enabled": True, **certificate}})
    config = helm.find(docs, "ValidatingWebhookConfiguration")
    client = config["webhooks"][0]["clientConfig"]
    if expected == "inject":
        annotation = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == f"{NS}/net-authz-webhook"
        assert "caBundle" not in client
        assert helm.find(docs, "Issuer")["spec"] == {"selfSigned": {}}
        assert helm.find(docs, "Certificate")["spec"]["secretName"] == "net-authz-webhook-tls"
    else:
        assert client["caBundle"] == expected
        assert not [d for d in docs if d["kind"] == "Secret"]


def test_webhook_with_a_secret_needs_its_ca() -> None:
    result = helm.template_text(
        {"webhook": {"enabled": True, "certificate": "secret"}}, check=False
    )
    assert result.returncode != 0
    assert "needs webhook.secretName and webhook.caBundle" in result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook": {"failurePolicy": "Maybe"}}, "at '/webhook/failurePolicy'"),
        ({"webhook": {"timeoutSeconds": 60}}, "at '/webhook/timeoutSeconds'"),
        ({"tls": {"clientAuth": {"enabled": "yes"}}}, "at '/tls/clientAuth/enabled'"),
        ({"tls": {"cert": "x"}}, "additional properties 'cert' not allowed"),
    ],
)
def test_schema_rejects_bad_network_values(values: dict[str, Any], message: str) -> None:
    result = helm.template_text(values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_renderings_are_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    """cert-manager's kinds aside (no cert-manager here), every object is validated and
    admitted by the API server (dry run: a registered webhook with no pods behind it would
    refuse the other tests' applies)."""
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    for values in (MTLS, WEBHOOK, {**MTLS, **WEBHOOK}):
        docs = [d for d in render(values) if d["kind"] not in CERT_MANAGER_KINDS]
        control_plane.apply(docs, dry_run=True)


def test_the_chart_s_webhook_certificate_is_served_and_verified(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """What `certificate: helm` generates: `authz webhook` serves it, and the caBundle in
    the webhook configuration verifies it for the Service's DNS name."""
    docs = render(WEBHOOK)
    secret = helm.find(docs, "Secret", "net-authz-webhook-tls")["data"]
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(secret[name]))
    ca_bundle = helm.find(docs, "ValidatingWebhookConfiguration")["webhooks"][0]["clientConfig"][
        "caBundle"
    ]
    assert ca_bundle == secret["ca.crt"]
    port = free_port()
    proc = Process(
        [
            sys.executable, "-m", "authz", "webhook", "--addr", f"127.0.0.1:{port}",
            "--tls-cert-file", str(tmp_path / "tls.crt"), "--tls-key-file", str(tmp_path / "tls.key"),
            "--kubeconfig", str(control_plane.kubeconfig_path),
        ],
        name="chart-webhook", env=child_env(), cwd=REPO_ROOT,
    ).start()  # fmt: skip
    try:
        context = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
        service_name = f"net-authz-webhook.{NS}.svc"  # what the API server expects
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(
                    f"https://127.0.0.1:{port}/healthz", headers={"Host": service_name}
                )
                opener = urllib.request.build_opener(_SNIHandler(context, service_name))
                with opener.open(request, timeout=3) as response:
                    assert response.status == 200
                    break
            except OSError as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "match" in str(exc):
                    raise
                assert proc.alive and time.monotonic() < deadline, proc.tail(30)
                time.sleep(0.2)
    finally:
        proc.stop()
        proc.cleanup()


class _SNIHandler(urllib.request.HTTPSHandler):
    """Connect to 127.0.0.1 but verify the certificate for `server_name`, as the API server
    does when it calls a Service (it dials the endpoint, expects the Service's name)."""

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__(context=context)
        self._server_name = server_name

    def https_open(self, req: Any) -> Any:
        import http.client

        server_name = self._server_name
        context = self._context  # type: ignore[attr-defined]

        class Connection(http.client.HTTPSConnection):
            def connect(self) -> None:
                import socket

                sock = socket.create_connection((self.host, self.port), self.timeout)
                self.sock = context.wrap_socket(sock, server_hostname=server_name)

        return self.do_open(Connection, req)
