"""One fetch against a real local server: limits, TLS, and a result code for each fault."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from authz.keys.fetch import MAX_BYTES, FetchError, FetchResult, get_json, tls_context
from tests.support.keyserver import KeyServer, LocalCA, make_ca

SYSTEM = tls_context(None)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server() -> Iterator[KeyServer]:
    with KeyServer() as srv:
        yield srv


def get(url: str, *, timeout: float = 2, allow_http: bool = True, tls: object = SYSTEM) -> object:
    return get_json(url, timeout=timeout, tls=tls, allow_http=allow_http)  # type: ignore[arg-type]


def failure(url: str, **kwargs: object) -> FetchError:
    with pytest.raises(FetchError) as info:
        get(url, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_json_and_max_age(server: KeyServer) -> None:
    server.json("/jwks", {"keys": []}, cache_control="public, max-age=3600, must-revalidate")
    fetched = get_json(f"{server.url}/jwks", timeout=2, tls=SYSTEM, allow_http=True)
    assert fetched.document == {"keys": []}
    assert fetched.max_age == 3600
    server.json("/plain", {"a": 1})
    assert get_json(f"{server.url}/plain", timeout=2, tls=SYSTEM, allow_http=True).max_age is None


def test_plain_http_needs_permission(server: KeyServer) -> None:
    server.json("/jwks", {"keys": []})
    error = failure(f"{server.url}/jwks", allow_http=False)
    assert error.result == FetchResult.INVALID and "plain http" in error.message
    assert server.hits("/jwks") == 0


@pytest.mark.parametrize(
    ("status", "body", "result"),
    [
        (500, b"oops", FetchResult.HTTP_STATUS),
        (404, b"{}", FetchResult.HTTP_STATUS),
        (200, b"<html>not json</html>", FetchResult.INVALID),
        (200, b"\xff\xfe", FetchResult.INVALID),
    ],
)
def test_http_faults(server: KeyServer, status: int, body: bytes, result: FetchResult) -> None:
    server.fault("/jwks", status=status, body=body)
    assert failure(f"{server.url}/jwks").result == result


def test_redirects_are_not_followed(server: KeyServer) -> None:
    server.json("/moved", {"keys": []})
    server.fault("/jwks", status=302, headers={"Location": f"{server.url}/moved"})
    error = failure(f"{server.url}/jwks")
    assert error.result == FetchResult.REDIRECT and "/moved" in error.message
    assert server.hits("/moved") == 0


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_bodies_over_one_mib_are_refused(server: KeyServer, length: bool) -> None:
    server.fault("/jwks", body=b" " * (MAX_BYTES + 1), length=length)
    assert failure(f"{server.url}/jwks").result == FetchResult.TOO_LARGE
    server.fault("/jwks", body=b" " * (MAX_BYTES - 2) + b"{}", length=length)
    assert get(f"{server.url}/jwks") is not None


def test_a_slow_server_times_out_on_time(server: KeyServer) -> None:
    server.fault("/jwks", body=b"{}", delay=3)
    started = time.monotonic()
    assert failure(f"{server.url}/jwks", timeout=0.5).result == FetchResult.TIMEOUT
    assert time.monotonic() - started < 1.0


def test_a_dripping_body_cannot_stretch_the_deadline(server: KeyServer) -> None:
    server.fault("/jwks", body=b'{"keys": []}' + b" " * 100, drip=0.05)
    started = time.monotonic()
    assert failure(f"{server.url}/jwks", timeout=0.5).result == FetchResult.TIMEOUT
    assert time.monotonic() - started < 1.0


def test_down(server: KeyServer) -> None:
    server.down()
    assert failure(f"{server.url}/jwks").result == FetchResult.CONNECT_ERROR


def test_https_with_the_configured_ca(tmp_path: Path, ca: LocalCA) -> None:
    with KeyServer(ca) as server:
        server.json("/jwks", {"keys": []})
        url = f"{server.url}/jwks"
        tls = tls_context(ca.ca_file.read_text())
        assert get_json(url, timeout=2, tls=tls, allow_http=False).document == {"keys": []}
        # The system CAs do not know the test CA: verification fails, nothing is read.
        assert failure(url, tls=SYSTEM, allow_http=False).result == FetchResult.TLS_ERROR


# -- public-only fetches (namespaced cluster issuers, issue 11 item 3) -------------------------


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("169.254.169.254", "link-local"),
        ("[fe80::1]", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
    ],
)
def test_public_only_refuses_local_addresses(server: KeyServer, host: str, why: str) -> None:
    server.json("/jwks", {"keys": []})
    url = f"http://{host}:{server.port}/jwks"
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        get_json(url, timeout=2, tls=SYSTEM, allow_http=True, public_only=True)
    assert info.value.result == FetchResult.CONNECT_ERROR
    assert f"({why})" in info.value.message, info.value.message
    assert server.hits("/jwks") == 0
    assert time.monotonic() - started < 1  # refused before any connection attempt


def test_public_only_fetches_from_other_addresses() -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    with KeyServer(host=address) as public:
        public.json("/jwks", {"keys": []})
        fetched = get_json(
            f"{public.url}/jwks", timeout=2, tls=SYSTEM, allow_http=True, public_only=True
        )
    assert fetched.document == {"keys": []}


def test_without_public_only_loopback_is_fetched(server: KeyServer) -> None:
    """Policy files and ClusterJWTIssuers keep today's abilities (in-cluster IdPs, tests)."""
    server.json("/jwks", {"keys": []})
    assert get(f"{server.url}/jwks") is not None and server.hits("/jwks") == 1
