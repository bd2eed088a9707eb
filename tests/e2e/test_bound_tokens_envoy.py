"""Key-bound tokens behind a real Envoy that terminates TLS and validates client
certificates: a certificate-bound token (RFC 8705) passes only on a connection with its
certificate, which Envoy hands to authz (`include_peer_certificate`); a DPoP proof
(RFC 9449) is checked against the scheme, Host and path Envoy reports. Both over the gRPC
and the HTTP ext_authz transport (there Envoy reports the scheme in x-forwarded-proto and
the certificate in x-forwarded-client-cert)."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from authz.keys.thumbprint import b64url
from tests.e2e.conftest import STARTUP_TIMEOUT, start_authz, start_upstream
from tests.support.docs import issuer, policy, write
from tests.support.dpop import DPoPClient
from tests.support.envoy import EnvoyProcess, envoy_bootstrap, with_client_tls
from tests.support.pki import CA, pem_cert, pem_key
from tests.support.procs import free_port
from tests.support.snapshots import bearer_token

SERVER_CA = CA.create("envoy-ca")
CLIENT_CA = CA.create("client-ca")
CLIENT = DPoPClient()


@dataclass
class Client:
    """A TLS client with (or without) a client certificate."""

    port: int
    context: ssl.SSLContext

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=10)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            head = {k.lower(): v for k, v in resp.getheaders()}
            data = (
                json.loads(body)
                if head.get("content-type", "").startswith("application/json")
                else body
            )
            return resp.status, head, data
        finally:
            conn.close()


def _context(tmp: Path, name: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=pem_cert(SERVER_CA.cert).decode())
    if name is not None:
        key, cert = CLIENT_CA.client(name)
        (tmp / f"{name}.pem").write_bytes(pem_cert(cert) + pem_key(key))
        context.load_cert_chain(tmp / f"{name}.pem")
    return context


@pytest.fixture(scope="module", params=["grpc", "http"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path]]:
    transport: str = request.param
    tmp = tmp_path_factory.mktemp("bound")
    # Over HTTP the certificate comes in x-forwarded-client-cert, which this Envoy sets
    # (replacing a client's): the policy trusts it there.
    forwarded = {"clientCertificate": {"trustForwardedClientCert": True}}
    spec = forwarded if transport == "http" else {}
    write(tmp / "policy.yaml", issuer(), policy(hosts=["127.0.0.1"], dpop={}, **spec))
    with ExitStack() as stack:
        authz = start_authz(stack, tmp)
        upstream = start_upstream(stack)
        listen, admin = free_port(), free_port()
        key, cert = SERVER_CA.serving("envoy", dns=["localhost"], ips=["127.0.0.1"])
        bootstrap = envoy_bootstrap(
            listen_port=listen,
            admin_port=admin,
            authz_grpc=authz.grpc_addr if transport == "grpc" else str(authz.http_check_addr),
            upstream_port=upstream.port,
            timeout_ms=2000,
            peer_certificates=True,
            transport=transport,
            policy_routes={},  # the policy is chosen by host
        )
        with_client_tls(
            bootstrap,
            pem_cert(cert).decode(),
            pem_key(key).decode(),
            pem_cert(CLIENT_CA.cert).decode(),
        )
        envoy = EnvoyProcess(bootstrap, admin_port=admin, ready_timeout=STARTUP_TIMEOUT)
        stack.enter_context(envoy)
        yield listen, tmp


def test_a_certificate_bound_token_passes_only_with_its_certificate(
    stack: tuple[int, Path],
) -> None:
    port, tmp = stack
    alice_key, alice = CLIENT_CA.client("alice-bound")
    (tmp / "alice-bound.pem").write_bytes(pem_cert(alice) + pem_key(alice_key))
    alice_ctx = ssl.create_default_context(cadata=pem_cert(SERVER_CA.cert).decode())
    alice_ctx.load_cert_chain(tmp / "alice-bound.pem")
    now = int(time.time())
    token = bearer_token(
        cnf={"x5t#S256": b64url(alice.fingerprint(hashes.SHA256()))}, iat=now, exp=now + 300
    )
    status, _, seen = Client(port, alice_ctx).get("/orders", {"authorization": f"Bearer {token}"})
    assert status == 200 and seen["headers"]["x-auth-subject"] == "alice"
    mallory = Client(port, _context(tmp, "mallory"))
    status, head, body = mallory.get("/orders", {"authorization": f"Bearer {token}"})
    assert status == 401 and body["error"] == "invalid_token"
    assert head["www-authenticate"].startswith('Bearer realm="authz", error="invalid_token"')
    # A forged x-forwarded-client-cert naming alice's certificate changes nothing.
    forged = {"x-forwarded-client-cert": f"Hash={alice.fingerprint(hashes.SHA256()).hex()}"}
    status, _, _ = mallory.get("/orders", {"authorization": f"Bearer {token}", **forged})
    assert status == 401


def test_a_connection_without_a_client_certificate_is_refused_by_envoy(
    stack: tuple[int, Path],
) -> None:
    port, tmp = stack
    with pytest.raises((ssl.SSLError, ConnectionError)):
        Client(port, _context(tmp, None)).get("/orders", {})


def test_a_dpop_proof_is_checked_against_what_envoy_received(stack: tuple[int, Path]) -> None:
    port, tmp = stack
    client = Client(port, _context(tmp, "dpop-client"))
    now = int(time.time())
    token = bearer_token(cnf={"jkt": CLIENT.jkt}, iat=now, exp=now + 300)
    # The client signs the URI it calls, port and all; Envoy strips the port from the Host.
    htu = f"https://127.0.0.1:{port}/orders/7"
    status, _, seen = client.get("/orders/7?x=1", CLIENT.headers(token, htu=htu, iat=time.time()))
    assert status == 200 and seen["headers"]["x-auth-subject"] == "alice"
    assert "dpop" in seen["headers"]  # the proof goes on unless stripAuthorization says no
    headers = CLIENT.headers(token, htu=f"https://127.0.0.1:{port}/orders/8", iat=time.time())
    status, head, body = client.get("/orders/7", headers)
    assert (status, body["error"]) == (401, "invalid_dpop_proof")
    assert head["www-authenticate"].startswith('DPoP realm="authz", error="invalid_dpop_proof"')
    assert 'algs="ES256' in head["www-authenticate"]
    headers = CLIENT.headers(token, htu=f"http://127.0.0.1:{port}/orders/7", iat=time.time())
    assert client.get("/orders/7", headers)[0] == 401  # Envoy says https
    replayed = CLIENT.headers(token, htu=htu, iat=time.time())
    assert client.get("/orders/7", replayed)[0] == 200
    assert client.get("/orders/7", replayed)[0] == 401
