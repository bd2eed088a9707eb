"""Key and discovery fetches through a forward proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY),
against a real proxy on 127.0.0.1 (tests/support/forward_proxy.py: CONNECT tunnels and
absolute-form requests, as egress proxies do) and real key servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authz.keys.fetch import FetchError, FetchResult, get_json, tls_context
from authz.keys.proxy import bypassed, proxy_for
from tests.support.forward_proxy import ForwardProxy
from tests.support.keyserver import KeyServer, LocalCA, make_ca

PROXY_VARIABLES = ("https_proxy", "http_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return make_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_server(ca: LocalCA) -> Iterator[KeyServer]:
    with KeyServer(ca) as server:
        server.json("/jwks", {"keys": []})
        yield server


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as forward:
        yield forward


def fetch(url: str, ca: LocalCA | None = None) -> object:
    tls = tls_context(ca.ca_file.read_text() if ca else None)
    return get_json(url, timeout=3, tls=tls, allow_http=True).document


def test_https_goes_through_the_proxy_tunnel(
    monkeypatch: pytest.MonkeyPatch, https_server: KeyServer, proxy: ForwardProxy, ca: LocalCA
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert fetch(f"{https_server.url}/jwks", ca) == {"keys": []}
    assert proxy.requests == [f"CONNECT 127.0.0.1:{https_server.port}"]
    # TLS is end to end: the key server's certificate is still verified through the tunnel.
    with pytest.raises(FetchError) as info:
        fetch(f"{https_server.url}/jwks")
    assert info.value.result == FetchResult.TLS_ERROR
    assert f"via proxy 127.0.0.1:{proxy.port}" in info.value.message


def test_plain_http_goes_to_the_proxy_as_an_absolute_url(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy
) -> None:
    with KeyServer() as server:
        server.json("/jwks", {"keys": [1]})
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # not for http URLs
        assert fetch(f"{server.url}/jwks") == {"keys": [1]}
        assert proxy.requests == [f"GET http://127.0.0.1:{server.port}/jwks"]
        assert server.hits("/jwks") == 1


@pytest.mark.parametrize(
    "no_proxy", ["127.0.0.1", "127.0.0.0/8", "*", "localhost,127.0.0.1", "127.0.0.1:{port}"]
)
def test_no_proxy_connects_directly(
    monkeypatch: pytest.MonkeyPatch,
    https_server: KeyServer,
    proxy: ForwardProxy,
    ca: LocalCA,
    no_proxy: str,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=https_server.port))
    assert fetch(f"{https_server.url}/jwks", ca) == {"keys": []}
    assert proxy.requests == []
    assert https_server.hits("/jwks") == 1


def test_proxy_credentials_are_sent_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, https_server: KeyServer, ca: LocalCA
) -> None:
    with ForwardProxy(credentials=("egress", "s3cr:t@")) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with("egress", "s3cr:t@"))
        assert fetch(f"{https_server.url}/jwks", ca) == {"keys": []}
        monkeypatch.setenv("HTTPS_PROXY", proxy.url_with("egress", "wrong"))
        with pytest.raises(FetchError) as info:
            fetch(f"{https_server.url}/jwks", ca)
    assert info.value.result == FetchResult.CONNECT_ERROR
    assert "407" in info.value.message
    assert "wrong" not in info.value.message and "egress" not in info.value.message


def test_a_proxy_that_is_down_fails_the_fetch_naming_it(
    monkeypatch: pytest.MonkeyPatch, https_server: KeyServer, ca: LocalCA
) -> None:
    proxy = ForwardProxy()
    proxy.close()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with pytest.raises(FetchError) as info:
        fetch(f"{https_server.url}/jwks", ca)
    assert info.value.result == FetchResult.CONNECT_ERROR
    assert f"via proxy 127.0.0.1:{proxy.port}" in info.value.message
    assert https_server.hits("/jwks") == 0


def test_unsupported_proxy_schemes_are_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, https_server: KeyServer, ca: LocalCA
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:pw@127.0.0.1:1080")
    with pytest.raises(FetchError) as info:
        fetch(f"{https_server.url}/jwks", ca)
    assert info.value.result == FetchResult.INVALID
    assert "HTTPS_PROXY: socks5:// proxies are not supported, only http://" in info.value.message
    assert "pw" not in info.value.message


def test_lower_case_wins_and_a_bare_host_port_is_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "lower:3128")
    found = proxy_for("https", "idp.example.com", 443)
    assert found is not None and (found.host, found.port) == ("lower", 3128)


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("idp.example.com", 443, "example.com", True),
        ("idp.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("badexample.com", 443, "example.com", False),
        ("idp.example.com", 443, "example.com:8443", False),
        ("idp.example.com", 8443, "example.com:8443", True),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("::1", 443, "::1", True),
        ("::1", 443, "[::1]:443", True),
        ("fd00::5", 443, "fd00::/8", True),
        ("kubernetes.default.svc", 443, ".svc,.cluster.local", True),
        ("idp.example.com", 443, "", False),
        ("IDP.Example.COM.", 443, "example.com", True),
    ],
)
def test_no_proxy_matching(host: str, port: int, no_proxy: str, direct: bool) -> None:
    assert bypassed(host, port, no_proxy) is direct


# -- public-only fetches (namespaced cluster issuers) through a proxy ---------------------------


def test_public_only_cannot_use_the_proxy_to_reach_local_addresses(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy
) -> None:
    """The proxy would connect anywhere it can; the name is resolved and checked here."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    for url in ("https://localhost:9/jwks", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(FetchError) as info:
            get_json(url, timeout=3, tls=tls_context(None), allow_http=True, public_only=True)
        assert info.value.result == FetchResult.CONNECT_ERROR
        assert "may not fetch from" in info.value.message
    assert proxy.requests == []


def test_public_only_through_the_proxy_connects_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.unit.keys.test_fetch import _non_loopback_address

    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    ca = make_ca(tmp_path_factory.mktemp("pki-public"), ips=[address])
    with KeyServer(ca, host=address) as public:
        public.json("/jwks", {"keys": []})
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        tls = tls_context(ca.ca_file.read_text())
        url = f"https://{address}:{public.port}/jwks"
        assert get_json(url, timeout=3, tls=tls, allow_http=False, public_only=True).document == {
            "keys": []
        }
    assert proxy.requests == [f"CONNECT {address}:{public.port}"]
