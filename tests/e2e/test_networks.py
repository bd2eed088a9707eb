"""Networks as they are (issue 16), with a real `authz serve`:

- Envoy reaches authz over mTLS (its client certificate signed by the CA authz was given);
  the serving certificate is rotated in place, as cert-manager does, and new connections
  get the new one with no restart while Envoy's requests keep being decided.
- Keys behind an egress proxy: `HTTPS_PROXY` sends discovery and JWKS fetches through the
  CONNECT proxy started by the test (tests/support/forward_proxy.py); `NO_PROXY` skips it.
"""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.client import call, check_request
from authz.devtools import mint_token
from tests.e2e.conftest import (
    _stop_and_report,
    authz_command,
    child_env,
    start_authz,
    start_upstream,
)
from tests.support.envoy import EnvoyProcess, envoy_bootstrap
from tests.support.forward_proxy import ForwardProxy
from tests.support.keyserver import KeyServer, make_ca
from tests.support.pki import CA, pem_cert, write_pair
from tests.support.procs import free_port, http_request
from tests.support.tokens import signing_key
from tests.unit.test_tls import served_certificate

AUDIENCE = "orders"


def _policies(directory: Path, issuer: dict[str, Any]) -> Path:
    policy = {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": {
            "targets": {"hosts": ["*"]},
            "issuers": [{"name": issuer["metadata"]["name"]}],
            "audiences": [AUDIENCE],
            "rules": [{"name": "orders", "match": {"paths": ["/orders/**"]}}],
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policies.yaml").write_text(yaml.safe_dump_all([issuer, policy]))
    return directory


def _issuer(iss: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": "idp", "namespace": "default"},
        "spec": {"issuer": iss, "algorithms": ["ES256"], **spec},
    }


def _token(iss: str) -> str:
    now = int(time.time())
    claims = {"iss": iss, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 300}
    return mint_token(signing_key("ES256", "k1")[0], claims)


def test_envoy_over_mtls_while_the_certificate_rotates(tmp_path: Path) -> None:
    server_ca, clients = CA.create("authz-serving"), CA.create("mesh-clients")
    pki = tmp_path / "pki"
    pki.mkdir()
    key, cert = server_ca.serving("authz", dns=["authz.authz.svc"], ips=["127.0.0.1"])
    write_pair(key, cert, pki / "tls.crt", pki / "tls.key")
    (pki / "ca.crt").write_bytes(pem_cert(clients.cert))
    (pki / "server-ca.crt").write_bytes(pem_cert(server_ca.cert))
    envoy_key, envoy_cert = clients.client("envoy", uris=["spiffe://cluster.local/ns/gw/sa/envoy"])
    write_pair(envoy_key, envoy_cert, pki / "envoy.crt", pki / "envoy.key")
    iss = "https://static.example"
    issuer = _issuer(iss, jwks={"keys": [signing_key("ES256", "k1")[1]]})
    policies = _policies(tmp_path / "policies", issuer)
    with ExitStack() as stack:
        authz = start_authz(
            stack,
            policies,
            extra_args=[
                "--tls-cert-file", str(pki / "tls.crt"),
                "--tls-key-file", str(pki / "tls.key"),
                "--tls-client-ca-file", str(pki / "ca.crt"),
            ],
        )  # fmt: skip
        upstream = start_upstream(stack)
        listen, admin = free_port(), free_port()
        bootstrap = envoy_bootstrap(
            listen_port=listen,
            admin_port=admin,
            authz_grpc=authz.grpc_addr,
            upstream_port=upstream.port,
            timeout_ms=2000,
        )
        cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "authz")
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "authz.authz.svc",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": str(pki / "envoy.crt")},
                            "private_key": {"filename": str(pki / "envoy.key")},
                        }
                    ],
                    "validation_context": {
                        "trusted_ca": {"filename": str(pki / "server-ca.crt")},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": "authz.authz.svc"}}
                        ],
                    },
                },
            },
        }
        envoy = EnvoyProcess(bootstrap, admin_port=admin, ready_timeout=20)
        stack.callback(_stop_and_report, envoy)
        envoy.start()
        base = f"http://127.0.0.1:{listen}"

        def get(token: str | None) -> int:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return http_request(base, "GET", "/orders/1", headers).status

        assert get(_token(iss)) == 200
        assert get(None) == 401  # authz answered: a denial, not Envoy's 503 for an error
        port = int(authz.grpc_addr.rpartition(":")[2])
        assert served_certificate(port).serial_number == cert.serial_number

        # A plaintext or certificate-less client is refused at the handshake.
        request = check_request(
            method="GET", host="h", path="/", headers={}, context={}, token=None
        )
        with pytest.raises(OSError, match="UNAVAILABLE"):
            call(authz.grpc_addr, request, timeout=2)
        # `authz check --grpc` over mTLS, as the chart's helm test hook runs it.
        hook = subprocess.run(
            [
                *authz_command(), "check", "--grpc", authz.grpc_addr, "--path", "/orders/1",
                "--tls-ca-file", str(pki / "server-ca.crt"),
                "--tls-cert-file", str(pki / "envoy.crt"), "--tls-key-file", str(pki / "envoy.key"),
                "--tls-server-name", "authz.authz.svc", "--expect-status", "401",
            ],
            capture_output=True, text=True, timeout=30, env=child_env(), check=False,
        )  # fmt: skip
        assert hook.returncode == 0, hook.stdout + hook.stderr
        # The HTTP check port serves the same certificate, with the same client CA.
        assert authz.http_check_addr is not None
        http_port = int(authz.http_check_addr.rpartition(":")[2])
        over_http = subprocess.run(
            [
                *authz_command(), "check", "--http", authz.http_check_addr, "--path", "/orders/1",
                "--tls-ca-file", str(pki / "server-ca.crt"),
                "--tls-cert-file", str(pki / "envoy.crt"), "--tls-key-file", str(pki / "envoy.key"),
                "--tls-server-name", "authz.authz.svc", "--expect-status", "401",
            ],
            capture_output=True, text=True, timeout=30, env=child_env(), check=False,
        )  # fmt: skip
        assert over_http.returncode == 0, over_http.stdout + over_http.stderr
        no_client_cert = subprocess.run(
            [
                *authz_command(), "check", "--http", authz.http_check_addr,
                "--tls-ca-file", str(pki / "server-ca.crt"), "--tls-server-name", "authz.authz.svc",
            ],
            capture_output=True, text=True, timeout=30, env=child_env(), check=False,
        )  # fmt: skip
        assert no_client_cert.returncode == 2, no_client_cert.stdout

        # cert-manager renews: a new key pair is written over the files.
        new_key, new_cert = server_ca.serving("authz", dns=["authz.authz.svc"], ips=["127.0.0.1"])
        write_pair(new_key, new_cert, pki / "tls.crt", pki / "tls.key")
        deadline = time.monotonic() + 5
        for rotated_port in (port, http_port):
            while served_certificate(rotated_port).serial_number != new_cert.serial_number:
                assert time.monotonic() < deadline, f"port {rotated_port}: not rotated"
                time.sleep(0.2)
        assert get(_token(iss)) == 200  # Envoy's connection made before the rotation lives on
        assert authz.process.alive
        deadline = time.monotonic() + 2  # the log is flushed every 200 ms
        while "tls certificate reloaded" not in authz.process.tail(200):
            assert time.monotonic() < deadline, "no log line for the reload"
            time.sleep(0.1)


def test_key_fetches_go_through_the_egress_proxy(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    with ExitStack() as stack:
        server = stack.enter_context(KeyServer(ca))
        proxy = stack.enter_context(ForwardProxy(credentials=("egress", "proxy-pass-7f3")))
        server.discovery(server.url)
        server.json("/jwks", {"keys": [signing_key("ES256", "k1")[1]]})
        issuer = _issuer(server.url, discovery=True, fetch={"caFile": str(ca.ca_file)})
        policies = _policies(tmp_path / "policies", issuer)
        authz = start_authz(
            stack,
            policies,
            env={
                "HTTPS_PROXY": proxy.url_with("egress", "proxy-pass-7f3"),
                "NO_PROXY": "localhost",
            },
        )
        answer = _allowed(authz.grpc_addr, _token(server.url))
        assert answer == 200, answer
        assert proxy.requests[:2] == [f"CONNECT 127.0.0.1:{server.port}"] * 2
        assert server.hits("/.well-known/openid-configuration") == 1
        assert server.hits("/jwks") == 1
        assert "proxy-pass-7f3" not in authz.process.tail(400)


def test_no_proxy_fetches_keys_directly(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    with ExitStack() as stack:
        server = stack.enter_context(KeyServer(ca))
        proxy = stack.enter_context(ForwardProxy())
        server.discovery(server.url)
        server.json("/jwks", {"keys": [signing_key("ES256", "k1")[1]]})
        issuer = _issuer(server.url, discovery=True, fetch={"caFile": str(ca.ca_file)})
        policies = _policies(tmp_path / "policies", issuer)
        authz = start_authz(
            stack, policies, env={"HTTPS_PROXY": proxy.url, "NO_PROXY": "10.0.0.0/8,127.0.0.0/8"}
        )
        assert _allowed(authz.grpc_addr, _token(server.url)) == 200
        assert proxy.requests == []


def _allowed(addr: str, token: str, timeout: float = 15) -> int:
    """The status of a Check with the token, once the issuer's keys are in (or the deadline)."""
    request = check_request(
        method="GET", host="api", path="/orders/1", headers={}, context={}, token=token
    )
    deadline = time.monotonic() + timeout
    while True:
        answer = call(addr, request, timeout=5)
        status = int(answer["status"])
        if status == 200 or time.monotonic() > deadline:
            return status
        time.sleep(0.2)
