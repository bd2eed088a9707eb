"""One fetch against a real local server: limits, TLS, and a result code for each fault."""

from __future__ import annotations

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
