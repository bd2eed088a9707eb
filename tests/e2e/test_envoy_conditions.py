"""Rules on the connection, behind a real Envoy (issue 12): the source address, the client
address from X-Forwarded-For, and the mTLS peer's identity and certificate.

Envoy terminates TLS with client-certificate validation (certificates from
tests.support.pki) and sends authz the peer as it saw it: `source.address`,
`source.principal` (the certificate's first URI SAN) and, with include_peer_certificate,
the certificate itself. Envoy runs with use_remote_address and xff_num_trusted_hops 1, the
policy with xffNumTrustedHops 1: both read X-Forwarded-For the same way.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import STARTUP_TIMEOUT, _stop_and_report, start_authz, start_upstream
from tests.support.envoy import EXT_AUTHZ_FILTER, EnvoyProcess, envoy_bootstrap
from tests.support.pki import CA, pem_cert, pem_key
from tests.support.procs import free_port

TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
WEB = "spiffe://cluster.local/ns/shop/sa/web"
OTHER = "spiffe://cluster.local/ns/other/sa/batch"

POLICY = {
    "apiVersion": "authz.io/v1alpha1",
    "kind": "AuthzPolicy",
    "metadata": {"name": "mesh", "namespace": "default"},
    "spec": {
        "targets": {"hosts": ["*"]},
        "xffNumTrustedHops": 1,
        "rules": [
            {
                "name": "shop-callers",
                "match": {
                    "paths": ["/mesh/**"],
                    "principals": ["spiffe://cluster.local/ns/shop/sa/*"],
                },
                "action": "allowAnonymous",
            },
            {
                "name": "partners",
                "match": {
                    "paths": ["/partner/**"],
                    "clientCertificate": {"dnsSans": ["*.partners.example"]},
                },
                "action": "allowAnonymous",
            },
            {
                "name": "loopback",
                "match": {"paths": ["/local/**"], "ipBlocks": ["127.0.0.0/8", "::1/128"]},
                "action": "allowAnonymous",
            },
            {
                "name": "ten",
                "match": {"paths": ["/ten/**"], "ipBlocks": ["10.0.0.0/8"]},
                "action": "allowAnonymous",
            },
            {
                "name": "forwarded",
                "match": {"paths": ["/fwd/**"], "remoteIpBlocks": ["203.0.113.0/24"]},
                "action": "allowAnonymous",
            },
            {
                "name": "not-from-shop",
                "match": {"paths": ["/public/**"], "notPrincipals": [WEB]},
                "action": "allowAnonymous",
            },
        ],
        "defaultAction": "deny",
    },
}


class Client:
    """HTTPS to Envoy with an optional client certificate; never follows redirects."""

    def __init__(self, port: int, ca: Path, cert: tuple[Path, Path] | None) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            self.context.load_cert_chain(str(cert[0]), str(cert[1]))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        seen = json.loads(body) if response.status == 200 else {}
        return response.status, seen


def _files(directory: Path, name: str, key: Any, cert: Any) -> tuple[Path, Path]:
    (directory / f"{name}.crt").write_bytes(pem_cert(cert))
    (directory / f"{name}.key").write_bytes(pem_key(key))
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Client]]:
    directory = tmp_path_factory.mktemp("mtls")
    ca = CA.create("mesh-ca")
    (directory / "ca.crt").write_bytes(pem_cert(ca.cert))
    server = _files(directory, "server", *ca.serving("localhost", ["localhost"], ["127.0.0.1"]))
    web = _files(directory, "web", *ca.client("web", uris=[WEB]))
    other = _files(directory, "other", *ca.client("batch", uris=[OTHER]))
    partner = _files(directory, "partner", *ca.client("acme", dns=["api.acme.partners.example"]))
    policies = directory / "policies"
    policies.mkdir()
    (policies / "mesh.yaml").write_text(yaml.safe_dump(POLICY))
    with ExitStack() as stack:
        authz = start_authz(stack, policies)
        upstream = start_upstream(stack)
        listen, admin = free_port(), free_port()
        bootstrap = envoy_bootstrap(
            listen_port=listen,
            admin_port=admin,
            authz_grpc=authz.grpc_addr,
            upstream_port=upstream.port,
            timeout_ms=2000,
        )
        chain = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS,
                "common_tls_context": {
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": str(server[0])},
                            "private_key": {"filename": str(server[1])},
                        }
                    ],
                    "validation_context": {"trusted_ca": {"filename": str(directory / "ca.crt")}},
                },
                # a client without a certificate may connect: it has no principal
                "require_client_certificate": False,
            },
        }
        hcm = chain["filters"][0]["typed_config"]
        hcm["use_remote_address"] = True
        hcm["xff_num_trusted_hops"] = 1
        filters = hcm["http_filters"]
        ext_authz = next(f for f in filters if f["name"] == EXT_AUTHZ_FILTER)["typed_config"]
        ext_authz["include_peer_certificate"] = True
        envoy = EnvoyProcess(bootstrap, admin_port=admin, ready_timeout=STARTUP_TIMEOUT)
        stack.callback(_stop_and_report, envoy)
        envoy.start()
        ca_file = directory / "ca.crt"
        yield {
            "web": Client(listen, ca_file, web),
            "other": Client(listen, ca_file, other),
            "partner": Client(listen, ca_file, partner),
            "anonymous": Client(listen, ca_file, None),
        }


@pytest.mark.parametrize(
    ("client", "path", "status"),
    [
        ("web", "/mesh/orders", 200),  # principal spiffe://.../ns/shop/sa/web
        ("other", "/mesh/orders", 403),
        ("anonymous", "/mesh/orders", 403),  # TLS without a client certificate: no principal
        ("partner", "/partner/feed", 200),  # a DNS SAN of the certificate Envoy sent
        ("web", "/partner/feed", 403),
        ("anonymous", "/public/x", 200),  # notPrincipals holds without mTLS
        ("other", "/public/x", 200),
        ("web", "/public/x", 403),
    ],
)
def test_the_mtls_peer_decides(
    clients: dict[str, Client], client: str, path: str, status: int
) -> None:
    assert clients[client].get(path)[0] == status


def test_the_source_address_decides(clients: dict[str, Client]) -> None:
    assert clients["anonymous"].get("/local/x")[0] == 200  # Envoy's peer: 127.0.0.1
    assert clients["anonymous"].get("/ten/x")[0] == 403
    # X-Forwarded-For does not change the connection's source address
    assert clients["anonymous"].get("/ten/x", {"x-forwarded-for": "10.1.1.1"})[0] == 403


def test_the_client_address_from_x_forwarded_for(clients: dict[str, Client]) -> None:
    """One trusted proxy: the address the client's proxy appended counts; what a client
    prepends itself does not."""
    status, seen = clients["anonymous"].get("/fwd/x", {"x-forwarded-for": "203.0.113.9"})
    assert status == 200
    # as authz saw it: Envoy appended the address it saw the connection from
    forwarded = seen["headers"]["x-forwarded-for"].split(",")
    assert len(forwarded) == 2 and forwarded[0] == "203.0.113.9"
    assert clients["anonymous"].get("/fwd/x", {"x-forwarded-for": "198.51.100.1"})[0] == 403
    spoofed = {"x-forwarded-for": "203.0.113.9, 198.51.100.1"}
    assert clients["anonymous"].get("/fwd/x", spoofed)[0] == 403
    assert clients["anonymous"].get("/fwd/x")[0] == 403  # too few entries: the peer
