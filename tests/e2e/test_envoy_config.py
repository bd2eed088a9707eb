"""The Envoy config we ship and test with is valid and wired the way we document.

* ``examples/envoy/envoy.yaml`` passes ``envoy --mode validate`` and is exactly what
  ``envoy_bootstrap()`` builds for its ports (so the e2e tests exercise the shipped file).
* Bootstraps for TCP, DNS-name and ``unix:`` authz addresses (and with jwt_authn) validate.
* Against a stub Authorization server (no product code involved) a real Envoy: fails
  closed with 503, passes denials through, injects allowed headers, strips spoofed
  ``x-auth-*`` headers, sends ``context_extensions`` for bound routes, redirects ``%2F``,
  drops a Host's port and trailing dot before routing and the check.
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from tests.support.envoy import EnvoyProcess, envoy_bootstrap, validate_config
from tests.support.procs import HttpResponse, free_port, http_request

if TYPE_CHECKING:
    from tests.e2e.conftest import Upstream

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "envoy" / "envoy.yaml"


def _assert_valid(path: Path) -> None:
    result = validate_config(path)
    assert result.returncode == 0, f"envoy rejected {path}:\n{result.stdout}\n{result.stderr}"
    assert "OK" in result.stdout


# -- static validation ---------------------------------------------------------------------


def test_example_config_validates() -> None:
    _assert_valid(EXAMPLE)


def test_example_config_is_the_bootstrap_with_fixed_ports() -> None:
    shipped = yaml.safe_load(EXAMPLE.read_text())
    built = envoy_bootstrap(
        listen_port=8080, admin_port=9901, authz_grpc="127.0.0.1:9001", upstream_port=8081
    )
    assert shipped == built


@pytest.mark.parametrize(
    "authz_grpc", ["127.0.0.1:9001", "localhost:9001", "[::1]:9001", "unix:/run/authz/grpc.sock"]
)
def test_bootstrap_validates(tmp_path: Path, authz_grpc: str) -> None:
    cfg = envoy_bootstrap(
        listen_port=10000, admin_port=10001, authz_grpc=authz_grpc, upstream_port=10002
    )
    cluster = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "authz")
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    if authz_grpc.startswith("unix:"):
        assert address == {"pipe": {"path": "/run/authz/grpc.sock"}}
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    _assert_valid(path)


def test_bootstrap_with_jwt_authn_validates(tmp_path: Path) -> None:
    _, jwks = _rsa_key_and_jwks(tmp_path)
    cfg = envoy_bootstrap(
        listen_port=10000,
        admin_port=10001,
        authz_grpc="127.0.0.1:9001",
        upstream_port=10002,
        with_jwt_authn=_jwt_authn_config(jwks),
    )
    names = [f["name"] for f in _hcm(cfg)["http_filters"]]
    assert names == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    _assert_valid(path)


def test_bootstrap_rejects_bad_address() -> None:
    with pytest.raises(ValueError, match="host:port"):
        envoy_bootstrap(listen_port=1, admin_port=2, authz_grpc="nowhere", upstream_port=3)


def _hcm(cfg: dict[str, Any]) -> dict[str, Any]:
    listener = cfg["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def _rsa_key_and_jwks(directory: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    """A fresh RS256 key (kid ``k1``) and ``directory/jwks.json`` holding its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    jwk = {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig"}
    jwk |= {"n": b64(numbers.n), "e": b64(numbers.e)}
    path = directory / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


def _jwt_authn_config(jwks_file: Path) -> dict[str, Any]:
    return {
        "providers": {
            "demo": {
                "issuer": "https://demo.authz.local",
                "audiences": ["orders-api"],
                "local_jwks": {"filename": str(jwks_file)},
                "forward": True,
                "payload_in_metadata": "demo",
            }
        },
        # Verify when present, but leave the allow/deny decision to ext_authz.
        "rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing_or_failed": {}}}],
    }


# -- a live Envoy against a stub Authorization server ---------------------------------------


@dataclass
class StubAuthz(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Allows ``Bearer ok`` (adding x-auth-subject), sleeps on ``Bearer slow``, else 401."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        with self.lock:
            self.requests.append(json_format.MessageToDict(request))
        auth = request.attributes.request.http.headers.get("authorization", "")
        if auth == "Bearer slow":
            time.sleep(2)
        if auth in ("Bearer ok", "Bearer slow") or auth.count(".") == 2:
            header = base_pb2.HeaderValue(key="x-auth-subject", value="alice")
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers=[
                        base_pb2.HeaderValueOption(
                            header=header,
                            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                        )
                    ]
                ),
            )
        challenge = base_pb2.HeaderValue(key="www-authenticate", value='Bearer realm="stub"')
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status={"code": 401},
                headers=[base_pb2.HeaderValueOption(header=challenge)],
                body="stub says no",
            ),
        )


@dataclass
class StubStack:
    stub: StubAuthz
    envoy: EnvoyProcess
    listen_port: int

    def get(self, path: str, token: str | None = None, **headers: str) -> HttpResponse:
        return _get(self.listen_port, path, token, **headers)


def _get(port: int, path: str, token: str | None = None, **headers: str) -> HttpResponse:
    hdrs: Mapping[str, str] = {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        hdrs = {**hdrs, "authorization": f"Bearer {token}"}
    return http_request(f"http://127.0.0.1:{port}", "GET", path, hdrs)


@pytest.fixture(params=["tcp", "unix"])
def stub_stack(request: pytest.FixtureRequest, echo_upstream: Upstream) -> Iterator[StubStack]:
    stub = StubAuthz()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(stub, server)
    sock_dir = None
    if request.param == "unix":
        # Not tmp_path: unix socket paths must stay short (~104 bytes).
        sock_dir = Path(tempfile.mkdtemp(prefix="stub-authz-", dir="/tmp"))
        addr = f"unix:{sock_dir / 'grpc.sock'}"
        server.add_insecure_port(addr)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
        addr = f"127.0.0.1:{port}"
    server.start()
    listen_port, admin_port = free_port(), free_port()
    cfg = envoy_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        authz_grpc=addr,
        upstream_port=echo_upstream.port,
        timeout_ms=500,
    )
    try:
        with EnvoyProcess(cfg, admin_port=admin_port) as envoy:
            yield StubStack(stub, envoy, listen_port)
    finally:
        server.stop(grace=None)
        if sock_dir is not None:
            (sock_dir / "grpc.sock").unlink(missing_ok=True)
            sock_dir.rmdir()


def test_denial_passes_through_with_challenge(stub_stack: StubStack) -> None:
    resp = stub_stack.get("/orders/1")
    assert resp.status == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="stub"'
    assert resp.body == b"stub says no"


def test_allowed_request_reaches_upstream_with_identity_header(stub_stack: StubStack) -> None:
    resp = stub_stack.get(
        "/orders/1?x=1", token="ok", x_auth_subject="mallory", x_auth_scopes="admin"
    )
    assert resp.status == 200
    body = resp.json()
    assert body["method"] == "GET"
    assert body["path"] == "/orders/1?x=1"
    seen = resp.upstream_headers
    assert seen["x-auth-subject"] == "alice"  # authz's value, not the client's
    assert "x-auth-scopes" not in seen  # spoofed x-auth-* stripped before ext_authz
    assert seen["authorization"] == "Bearer ok"


def test_check_request_contents(stub_stack: StubStack) -> None:
    stub_stack.get("/a/../orders//1?q=1", token="ok", x_auth_subject="mallory")
    stub_stack.get("/bound/thing", token="ok")
    plain, bound = stub_stack.stub.requests[-2:]
    http = plain["attributes"]["request"]["http"]
    assert http["method"] == "GET"
    assert http["path"] == "/orders/1?q=1"  # normalized, merged, query kept
    assert http["host"] == "127.0.0.1"  # strip_any_host_port: the host routing uses too
    assert http["headers"][":path"] == "/orders/1?q=1"
    assert http["headers"]["authorization"] == "Bearer ok"
    assert "x-auth-subject" not in http["headers"]
    assert {":authority", ":method", ":scheme", "x-request-id"} <= http["headers"].keys()
    assert "contextExtensions" not in plain["attributes"]
    assert bound["attributes"]["contextExtensions"] == {"policy": "bound"}


def test_host_port_and_trailing_dot_are_gone_before_routing_and_check(
    stub_stack: StubStack,
) -> None:
    """authz ignores a Host's port and trailing dot; so must Envoy's routing (issue 11, 4)."""
    for host in ("orders.example.com.", "orders.example.com:9999", "orders.example.com.:8443"):
        assert stub_stack.get("/orders/1", token="ok", host=host).status == 200
        http = stub_stack.stub.requests[-1]["attributes"]["request"]["http"]
        assert http["host"] == "orders.example.com", host
        assert http["headers"][":authority"] == "orders.example.com", host


def test_escaped_slash_is_redirected_not_forwarded(stub_stack: StubStack) -> None:
    before = len(stub_stack.stub.requests)
    resp = stub_stack.get("/orders%2F..%2Fadmin", token="ok")
    assert resp.status == 307
    # Unescaped, then normalized: the client is sent to the path the upstream would
    # have resolved, and that path goes through ext_authz on the next request.
    assert resp.headers["location"] == "/admin"
    assert len(stub_stack.stub.requests) == before  # authz never saw the ambiguous path


def test_authz_timeout_fails_closed_with_503(stub_stack: StubStack) -> None:
    resp = stub_stack.get("/orders/1", token="slow")
    assert resp.status == 503
    assert "x-auth-subject" not in resp.body.decode()


def test_authz_unreachable_fails_closed_with_503(echo_upstream: Upstream) -> None:
    listen_port, admin_port = free_port(), free_port()
    cfg = envoy_bootstrap(
        listen_port=listen_port,
        admin_port=admin_port,
        authz_grpc=f"127.0.0.1:{free_port()}",  # nothing listens here
        upstream_port=echo_upstream.port,
    )
    with EnvoyProcess(cfg, admin_port=admin_port) as envoy:
        assert _get(listen_port, "/orders/1", token="ok").status == 503
        stats = envoy.stats(r"http\.ingress_http\.ext_authz\.")
        assert stats["http.ingress_http.ext_authz.error"] >= 1
        assert stats["http.ingress_http.ext_authz.failure_mode_allowed"] == 0


def test_jwt_authn_payload_reaches_authz_metadata(tmp_path: Path, echo_upstream: Upstream) -> None:
    """With ``with_jwt_authn`` the verified claims arrive in CheckRequest.metadata_context."""
    key, jwks = _rsa_key_and_jwks(tmp_path)
    now = int(time.time())
    claims = {"iss": "https://demo.authz.local", "aud": "orders-api", "sub": "alice"}
    token = jwt.encode(
        {**claims, "iat": now, "exp": now + 300}, key, algorithm="RS256", headers={"kid": "k1"}
    )

    stub = StubAuthz()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(stub, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        listen_port, admin_port = free_port(), free_port()
        cfg = envoy_bootstrap(
            listen_port=listen_port,
            admin_port=admin_port,
            authz_grpc=f"127.0.0.1:{grpc_port}",
            upstream_port=echo_upstream.port,
            with_jwt_authn=_jwt_authn_config(jwks),
        )
        with EnvoyProcess(cfg, admin_port=admin_port):
            assert _get(listen_port, "/orders/1", token=token).status == 200
            assert _get(listen_port, "/orders/1", token="not-a-jwt").status == 401  # stub denies
    finally:
        server.stop(grace=None)
    good, _bad = stub.requests[-2:]
    metadata = good["attributes"]["metadataContext"]["filterMetadata"]
    assert metadata["envoy.filters.http.jwt_authn"]["demo"]["sub"] == "alice"
