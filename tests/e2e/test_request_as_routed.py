"""authz decides on exactly the request the proxy routes (issue 11, items 4 and 5).

A real Envoy in front of authz and an echo upstream. Envoy's route table has a public
virtual host and a catch-all (`*`) for everything else; each stamps `x-vhost` on what it
forwards, so a test sees where a request was routed as well as what authz decided.
Behind an Envoy that normalises nothing, authz must still judge the path a later
normaliser will produce and the host the router matched; behind the shipped
configuration both agree by construction. The normaliser itself is held to Envoy's path
by path (`test_paths_normalise_as_envoy_does`).
"""

from __future__ import annotations

import copy
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.request.paths import normalize_path
from tests.support.authz import CheckClient, check_server
from tests.support.docs import issuer, policy, rule, write
from tests.support.envoy import EnvoyProcess, envoy_bootstrap
from tests.support.procs import free_port, wait_for_tcp
from tests.support.snapshots import bearer_token

PUBLIC = "public.example.com"
OPEN = "open.example.com"  # anonymous everywhere, stripAuthorization on
COOKIE_ISS = "https://cookies.test"
ROOT = Path(__file__).resolve().parents[2]


def raw_get(
    port: int, path: str, host: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET with the request target exactly as given (no client cleans it up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "upstream.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_tcp("127.0.0.1", port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    """The public site: /public/** needs no token, the rest is denied; every other host
    (the catch-all backend) requires a token."""
    directory = tmp_path_factory.mktemp("routed")
    write(
        directory / "policies.yaml",
        issuer(),
        policy(
            "public",
            hosts=[PUBLIC],
            rules=[rule("open", paths=["/public/**"], action="allowAnonymous")],
            defaultAction="deny",
        ),
        policy("internal", hosts=["*"]),
        issuer(
            "cookies",
            COOKIE_ISS,
            tokenSources=[{"cookie": {"name": "session"}}, {"query": {"name": "access_token"}}],
        ),
        policy(
            "open",
            hosts=[OPEN],
            issuers=["idp", "cookies"],
            rules=[rule("all", action="allowAnonymous")],
            response={"stripAuthorization": True},
        ),
    )
    with check_server(directory) as client:
        assert all(s.accepted for s in client.store.statuses.values())
        yield client


def _two_vhosts(hcm: dict[str, Any]) -> None:
    """The public site and a catch-all, each marking what it forwards."""
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    hcm["route_config"]["virtual_hosts"] = [
        {
            "name": name,
            "domains": domains,
            "request_headers_to_add": [{"header": {"key": "x-vhost", "value": name}}],
            "routes": copy.deepcopy(routes),
        }
        for name, domains in (("public", [PUBLIC]), ("internal", ["*"]))
    ]


def _envoy(authz: CheckClient, upstream: int, *, normalising: bool) -> dict[str, Any]:
    port = authz.grpc_port
    bootstrap = envoy_bootstrap(
        listen_port=free_port(),
        admin_port=free_port(),
        authz_grpc=f"127.0.0.1:{port}",
        upstream_port=upstream,
    )
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    config = hcm["typed_config"]
    _two_vhosts(config)
    if not normalising:  # an Envoy configured with none of the settings authz relies on
        for key in ("normalize_path", "merge_slashes", "strip_any_host_port"):
            config.pop(key, None)
        config.pop("strip_trailing_host_dot", None)
        config["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
    return bootstrap


def _listen_port(bootstrap: dict[str, Any]) -> int:
    address = bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]
    return int(address["port_value"])


@pytest.fixture(scope="module")
def bare(authz: CheckClient, upstream: int) -> Iterator[int]:
    bootstrap = _envoy(authz, upstream, normalising=False)
    with EnvoyProcess(bootstrap):
        yield _listen_port(bootstrap)


@pytest.fixture(scope="module")
def shipped(authz: CheckClient, upstream: int) -> Iterator[int]:
    bootstrap = _envoy(authz, upstream, normalising=True)
    with EnvoyProcess(bootstrap):
        yield _listen_port(bootstrap)


def _routed(headers: dict[str, str], body: bytes, status: int) -> str | None:
    return json.loads(body)["headers"].get("x-vhost") if status == 200 else None


@pytest.mark.parametrize(
    ("path", "host", "status"),
    [
        ("/public/x", PUBLIC, 200),
        # Dot segments before merged slashes, as Envoy does: this is /admin/public/x.
        ("/admin//../public/x", PUBLIC, 403),
        # A backslash is a slash to the next normaliser: this is /admin/x.
        ("/public/..\\admin/x", PUBLIC, 403),
        ("/public/..;/admin/x", PUBLIC, 403),
        # An encoded slash this proxy leaves encoded: another hop may decode it.
        ("/public/a%2Fb", PUBLIC, 400),
        ("/public/a%5cb", PUBLIC, 400),
        # The router matches the Host with its port and trailing dot: the catch-all.
        ("/public/x", f"{PUBLIC}:9999", 401),
        ("/public/x", f"{PUBLIC}.", 401),
        ("/public/x", PUBLIC.upper(), 200),  # case-insensitive, as Envoy's domains
    ],
)
def test_behind_a_proxy_that_normalises_nothing(
    bare: int, path: str, host: str, status: int
) -> None:
    got, headers, body = raw_get(bare, path, host)
    assert got == status, body[:300]
    if status == 200:
        assert _routed(headers, body, got) == "public"


@pytest.mark.parametrize(
    ("path", "host", "status", "vhost"),
    [
        ("/public/x", f"{PUBLIC}:9999", 200, "public"),  # stripped before routing and authz
        ("/public/x", f"{PUBLIC}.", 200, "public"),
        ("/admin//../public/x", PUBLIC, 403, None),
        ("/public/..\\admin/x", PUBLIC, 403, None),
        ("/public/x", "other.example.com", 401, None),
    ],
)
def test_behind_the_shipped_configuration(
    shipped: int, path: str, host: str, status: int, vhost: str | None
) -> None:
    got, headers, body = raw_get(shipped, path, host)
    assert got == status, body[:300]
    assert _routed(headers, body, got) == vhost


def test_an_encoded_slash_is_redirected_by_the_shipped_configuration(shipped: int) -> None:
    status, headers, _ = raw_get(shipped, "/public/a%2Fb", PUBLIC)
    assert status in (301, 307) and headers["location"].endswith("/public/a/b")


# -- the normaliser, path by path, against Envoy's --------------------------------------------

_CASES = [
    "/admin//../public/x", "/public/..\\admin/x", "/a/./b", "/a/b/..", "/a/%2e%2e/b",
    "/a/.%2E/b", "//a///b", "/%61dmin", "/a%2fb", "/a%7eb", "/a%3A", '/a"b', "/a<b>",
    "/a`b", "/a{b}", "/a|b", "/a^b", "/a'b", "/a;b", "/a%zzb", "/a%", "/..", "/a/...",
    "/a/..b/c", "/a\\\\b", "/a/.//b", "/a/b/../../..//c", "/%c3%a9", "/a/%2e", "/a;/../b",
    "/a/.;/b", "/a/b/..;/c", "/a/b/.;x/c", "/a/b/%2e;/c", "/a/b/.%2e;/c", "/a\\..;/b",
    "/.;%zz0\\%5c.;%30\\%7e\\|%3b/0", "/%%30", "/%%%30%30", "/a/%%2e/b", "/x//..//y",
]  # fmt: skip
_PIECES = [
    "/", "//", ".", "..", ".;", "..;", "%2e", "%2E", "\\", ";", "%", "%%", "%2", "%3",
    "0", "a", "A", "%30", "%41", "%61", "%25", "%2f", "%5C", "~", "%7E", "%c3", "-", '"',
    "^", "|", "x;",
]  # fmt: skip


@pytest.fixture(scope="module")
def normalising_envoy(upstream: int) -> Iterator[int]:
    """Envoy with normalize_path and merge_slashes and nothing else: no authz, no redirects."""
    listen = free_port()
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "paths",
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream}}}
    bootstrap = {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "paths",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
                    },
                }
            ],
        },
    }
    with EnvoyProcess(bootstrap):
        yield listen


def test_paths_normalise_as_envoy_does(normalising_envoy: int) -> None:
    """Every path Envoy forwards reaches the upstream exactly as authz normalises it:
    the hand-picked cases (each one a difference found while building this), then 600
    random ones from the pieces that matter (seeded, so a failure reproduces)."""
    rng = random.Random(20261202)
    generated = [
        "/" + "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 16))) for _ in range(600)
    ]
    compared = 0
    for path in [*_CASES, *generated]:
        status, _, body = raw_get(normalising_envoy, path, "paths.test")
        if status != 200:  # Envoy refused it (400): there is nothing to compare
            continue
        assert json.loads(body)["path"] == normalize_path(path), path
        compared += 1
    assert compared >= 600


# -- what authz did not verify never reaches the upstream (issue 11, item 6) -----------------


def _upstream_saw(port: int, path: str, headers: dict[str, str]) -> dict[str, Any]:
    status, _, body = raw_get(port, path, OPEN, headers)
    assert status == 200, body[:300]
    seen: dict[str, Any] = json.loads(body)
    return seen


@pytest.mark.parametrize(
    "authorization", ["Bearer\tabc", "Bearerabc", "Basic dXNlcg==, Bearer abc"]
)
def test_an_unparsed_bearer_credential_is_removed(shipped: int, authorization: str) -> None:
    seen = _upstream_saw(shipped, "/", {"authorization": authorization})
    assert "authorization" not in seen["headers"]


def test_basic_credentials_for_the_upstream_stay(shipped: int) -> None:
    seen = _upstream_saw(shipped, "/", {"authorization": "Basic dXNlcg=="})
    assert seen["headers"]["authorization"] == "Basic dXNlcg=="


def test_strip_authorization_removes_cookie_and_query_tokens(shipped: int) -> None:
    token = bearer_token(iss=COOKIE_ISS, exp=int(time.time()) + 300, iat=int(time.time()))
    seen = _upstream_saw(shipped, "/", {"cookie": f"theme=dark; session={token}"})
    assert seen["headers"]["cookie"] == "theme=dark"
    assert seen["headers"]["x-auth-issuer"] == COOKIE_ISS  # it was verified, then stripped
    seen = _upstream_saw(shipped, f"/list?page=2&access_token={token}", {})
    assert seen["path"] == "/list?page=2"
