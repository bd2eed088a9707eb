"""The validating admission webhook against the real API server: `authz webhook` runs as a
process, the API server calls it over HTTPS (a CA made by the test, in the webhook
configuration's caBundle), and an apply is refused with the messages `authz lint` prints,
or accepted with its warnings (kubectl prints the `Warning` headers)."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.policy import crd, schema
from tests.e2e.conftest import REPO_ROOT, child_env
from tests.support import kube_fixtures
from tests.support.kube import ControlPlane
from tests.support.pki import CA, pem_cert, write_pair
from tests.support.procs import Process, free_port
from tests.support.tokens import signing_key

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

API = "authz.io/v1alpha1"
LABEL = {"authz-tests/webhook": "on"}  # the test's webhook sees only the test's objects
CONFIG = "authz-tests-webhook"
NS = "authz-webhook-tests"
GRANTED = "*.wh.example"  # the hosts a HostGrant gives NS (tenancy: cluster policies need one)


@pytest.fixture(scope="module")
def webhook(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    control_plane.apply([crd.crd(kind) for kind in schema.KINDS])
    pki = tmp_path_factory.mktemp("webhook-pki")
    ca = CA.create("authz-webhook-ca")
    key, cert = ca.serving("authz-webhook", dns=["authz-webhook.authz.svc"], ips=["127.0.0.1"])
    write_pair(key, cert, pki / "tls.crt", pki / "tls.key")
    (pki / "ca.crt").write_bytes(pem_cert(ca.cert))
    port = free_port()
    proc = Process(
        [
            sys.executable, "-m", "authz", "webhook",
            "--addr", f"127.0.0.1:{port}",
            "--tls-cert-file", str(pki / "tls.crt"),
            "--tls-key-file", str(pki / "tls.key"),
            "--kubeconfig", str(control_plane.kubeconfig_path),
        ],
        name="authz-webhook",
        env=child_env(),
        cwd=REPO_ROOT,
    ).start()  # fmt: skip
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/readyz", context=context, timeout=2
            ) as response:
                if response.status == 200:
                    break
        except (OSError, urllib.error.HTTPError):
            pass
        assert proc.alive and time.monotonic() < deadline, proc.tail(40)
        time.sleep(0.2)
    rules = [
        {
            "apiGroups": [schema.GROUP],
            "apiVersions": [schema.VERSION],
            "operations": ["CREATE", "UPDATE"],
            "resources": [schema.NAMES[kind][0] for kind in schema.KINDS],
        }
    ]
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIG},
        "webhooks": [
            {
                "name": "policies.authz.io",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate",
                    "caBundle": base64.b64encode(pem_cert(ca.cert)).decode(),
                },
                "rules": rules,
                "objectSelector": {"matchLabels": LABEL},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }
        ],
    }
    control_plane.apply([config])
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    grant = labelled(
        {
            "apiVersion": API,
            "kind": "HostGrant",
            "metadata": {"name": "authz-webhook-tests"},
            "spec": {"hosts": [GRANTED], "namespaces": [NS]},
        }
    )
    status, body, _ = apply(control_plane, grant)
    assert status in (200, 201), body
    try:
        yield proc
    finally:
        control_plane.delete(config)
        control_plane.delete(grant)
        proc.stop()
        proc.print_tail(file=sys.stdout)
        proc.cleanup()


def labelled(doc: dict[str, Any]) -> dict[str, Any]:
    doc["metadata"]["labels"] = LABEL
    return doc


def issuer(name: str, **spec: Any) -> dict[str, Any]:
    return labelled(
        {
            "apiVersion": API,
            "kind": "JWTIssuer",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "issuer": f"https://{name}.example.com",
                "jwks": {"keys": [signing_key("ES256", "k1")[1]]},
                **spec,
            },
        }
    )


def policy(
    name: str, *rules: dict[str, Any], issuer_name: str = "wh-idp", host: str = ""
) -> dict[str, Any]:
    return labelled(
        {
            "apiVersion": API,
            "kind": "AuthzPolicy",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "targets": {"hosts": [host or f"{name}.wh.example"]},
                "issuers": [{"name": issuer_name}],
                "rules": list(rules) or [{"name": "all"}],
            },
        }
    )


def apply(cp: ControlPlane, doc: dict[str, Any]) -> tuple[int, dict[str, Any], list[str]]:
    """Server-side apply as kubectl does; (status, body, Warning headers)."""
    url = cp.url + cp.resource_path(doc) + "?fieldManager=kubectl&force=true"
    request = urllib.request.Request(  # noqa: S310
        url,
        data=json.dumps(doc).encode(),
        method="PATCH",
        headers={
            "Content-Type": "application/apply-patch+yaml",
            "Authorization": f"Bearer {cp.admin.token}",
        },
    )
    try:
        with urllib.request.urlopen(request, context=cp.ssl_context(), timeout=30) as response:  # noqa: S310
            return (
                response.status,
                json.loads(response.read()),
                response.headers.get_all("Warning") or [],
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), exc.headers.get_all("Warning") or []


def lint_messages(tmp_path: Path, *docs: dict[str, Any]) -> list[str]:
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(list(docs)))
    result = subprocess.run(
        [sys.executable, "-m", "authz", "lint", "--output", "json", str(path)],
        capture_output=True, text=True, timeout=60, env=child_env(), cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    return [f["message"] for f in json.loads(result.stdout)["findings"]]


def test_a_valid_object_is_accepted(control_plane: ControlPlane, webhook: Process) -> None:
    status, body, warnings = apply(control_plane, issuer("wh-idp"))
    assert status in (200, 201), body.get("message", body)
    deadline = time.monotonic() + 10
    while True:  # until the webhook's watch has seen wh-idp, the reference is unresolved
        status, body, warnings = apply(control_plane, policy("wh-good"))
        assert status in (200, 201), body.get("message", body)
        if not warnings:
            break
        assert time.monotonic() < deadline, warnings
        assert all("not found or not ready" in w for w in warnings), warnings
        time.sleep(0.3)


def test_what_the_controller_would_refuse_is_refused_with_lint_s_messages(
    control_plane: ControlPlane, webhook: Process, tmp_path: Path
) -> None:
    apply(control_plane, issuer("wh-idp"))
    bad_regex = policy("wh-regex", {"name": "r", "claims": [{"path": "sub", "regex": "(open"}]})
    status, body, _ = apply(control_plane, bad_regex)
    assert status == 422, body
    message = body["message"]
    assert 'admission webhook "policies.authz.io" denied the request' in message
    expected = lint_messages(tmp_path, issuer("wh-idp"), bad_regex)
    assert expected and all(m in message for m in expected), (expected, message)
    assert "spec.rules[0].claims[0].regex: invalid regular expression" in message
    # Key material the CRD schema cannot judge: EC coordinates of the wrong length.
    bad_key = issuer(
        "wh-bad-key", jwks={"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}
    )
    status, body, _ = apply(control_plane, bad_key)
    assert status == 422, body
    assert f"JWTIssuer/{NS}/wh-bad-key: spec.jwks: JWKS has no usable key" in body["message"]
    for name, kind in (("wh-regex", "authzpolicies"), ("wh-bad-key", "jwtissuers")):
        missing, _ = control_plane.request(
            "GET", f"/apis/{API}/namespaces/{NS}/{kind}/{name}", check=False
        )
        assert missing == 404  # nothing was stored


def test_problems_the_controller_serves_through_are_warnings(
    control_plane: ControlPlane, webhook: Process
) -> None:
    apply(control_plane, issuer("wh-idp"))
    dead = policy(
        "wh-dead",
        {"name": "query", "match": {"paths": ["/search?q=1"]}},
        {"name": "all"},
        {"name": "late", "match": {"paths": ["/admin/**"]}},
        issuer_name="wh-nobody",
    )
    status, body, warnings = apply(control_plane, dead)
    assert status in (200, 201), body.get("message", body)
    text = "\n".join(warnings)
    assert f"AuthzPolicy/{NS}/wh-dead: spec.issuers[0]: JWTIssuer/{NS}/wh-nobody not found" in text
    assert "spec.rules[0].match.paths[0]: '/search?q=1' never matches" in text
    assert "spec.rules[2]: never reached: rules[1]" in text


def test_an_update_is_checked_against_the_objects_it_refers_to(
    control_plane: ControlPlane, webhook: Process
) -> None:
    """An issuer whose iss another referenced issuer already has: found only with the
    cluster's other objects, which the webhook watches."""
    apply(control_plane, issuer("wh-idp"))
    apply(control_plane, issuer("wh-twin", issuer="https://wh-idp.example.com"))
    twins = policy("wh-twins")
    twins["spec"]["issuers"] = [{"name": "wh-idp"}, {"name": "wh-twin"}]
    deadline = time.monotonic() + 10
    while True:  # the webhook's watch sees wh-twin within a moment
        status, body, warnings = apply(control_plane, twins)
        assert status in (200, 201), body.get("message", body)
        if any(f"has the same iss as JWTIssuer/{NS}/wh-idp" in w for w in warnings):
            break
        assert time.monotonic() < deadline, warnings
        time.sleep(0.3)


def test_tenancy_conflicts_are_refused_on_apply(
    control_plane: ControlPlane, webhook: Process
) -> None:
    """A host no HostGrant gives the namespace, and a host another policy already serves:
    the controller would refuse both; so does kubectl apply now."""
    apply(control_plane, issuer("wh-idp"))
    first = policy("wh-shop", host="shop.wh.example")
    status, body, _ = apply(control_plane, first)
    assert status in (200, 201), body.get("message", body)
    deadline = time.monotonic() + 10
    while True:  # once the webhook's watch has seen wh-shop
        status, body, _ = apply(control_plane, policy("wh-shop-too", host="shop.wh.example"))
        if status == 422:
            break
        assert time.monotonic() < deadline, body
        control_plane.delete(policy("wh-shop-too"))
        time.sleep(0.3)
    assert f"host 'shop.wh.example' is served by AuthzPolicy/{NS}/wh-shop" in body["message"]
    status, body, _ = apply(control_plane, policy("wh-elsewhere", host="shop.example.org"))
    assert status == 422, body
    assert f"host 'shop.example.org' is not granted to namespace '{NS}'" in body["message"]
