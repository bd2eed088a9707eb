"""Paths as Envoy forwards them with normalize_path and merge_slashes on. Every expectation
here was observed on a real Envoy 1.40 (tests/e2e/test_request_as_routed.py compares the
two on hundreds of paths); these keep the cases readable and fast."""

from __future__ import annotations

import pytest

from authz.request.paths import normalize_path
from authz.request.view import RequestError, request_view


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("/admin//../public/x", "/admin/public/x"),  # dot segments first, then slashes
        ("/x//..//y", "/x/y"),
        ("/public/..\\admin/x", "/admin/x"),  # a backslash is a slash
        ("/a/%2e%2e/b", "/b"),
        ("/a/.%2E/b", "/b"),
        ("/a/%2e%2E%2e/b", "/a/.../b"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/..", "/"),
        ("/%61dmin", "/admin"),  # unreserved escapes decoded
        ("/a%7eb", "/a~b"),
        ("/a%2eb", "/a.b"),
        ("/a%2fb", "/a%2fb"),  # others kept exactly, hex case included
        ("/a%3A", "/a%3A"),
        ('/a"b', "/a%22b"),  # escaped as Chromium's URL library does
        ("/a<b>", "/a%3Cb%3E"),
        ("/a{b}|c^", "/a%7Bb%7D%7Cc%5E"),
        ("/a;b'c", "/a;b'c"),
        ("/a%zzb", "/a%zzb"),
        ("/a/b/..;/c", "/a/c"),  # literal dots and parameters: a dot segment
        ("/a/b/.;x/c", "/a/b/c"),
        ("/a/b/%2e;/c", "/a/b/.;/c"),  # escaped dots and parameters: not
        ("/a\\..;/b", "/a/..;/b"),  # nor after a backslash
        ("/%%30", "/%0"),
        ("/%%%30%30", "/%%2500"),  # a nested escape cannot become a new one
        ("//a///b", "/a/b"),
    ],
)
def test_normalise_as_envoy(raw: str, normalised: str) -> None:
    assert normalize_path(raw) == normalised


def test_envoy_output_may_normalise_further() -> None:
    """Envoy's normaliser is not idempotent: it forwards `/a/b/%2e;/c` as `/a/b/.;/c`, which
    the next normaliser (authz's own pass on what Envoy forwards, or Tomcat) reads as
    `/a/b/c`. authz decides on that second reading: the path a `;`-aware upstream serves."""
    assert normalize_path(normalize_path("/a/b/%2e;/c")) == "/a/b/c"
    assert normalize_path(normalize_path("/a/./b//c")) == normalize_path("/a/./b//c")


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/a%2Fb", "encoded '/'"),
        ("/a%5cb", "encoded '/'"),
        ("/a/x%2F../b", "encoded '/'"),
        ("/a#b", "fragment"),
        ("a", "not absolute"),
    ],
)
def test_refused(path: str, detail: str) -> None:
    with pytest.raises(RequestError, match=detail):
        request_view("GET", "h", path, {}, {})


def test_the_host_is_what_the_router_matches() -> None:
    view = request_view("GET", "Public.Example.com:9999", "/", {}, {})
    assert view.host == "public.example.com:9999"  # not the public site, to a router
    assert request_view("GET", "example.com.", "/", {}, {}).host == "example.com."
