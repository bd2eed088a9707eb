"""RFC 7662's own examples as vectors: the request authz sends and the answers it reads.

Section 2.1's request (client `s6BhdRkqt3`, secret `gX1fBat3bV` from RFC 6749, token
`mF_9.B5f-4.1JqM`, hint `access_token`) must come out of authz byte for byte as far as
the RFC fixes it: the Basic credentials, the form, the content type and Accept. Section
2.2's two answers must read as the RFC says; the active one then decides a Check like
the JWT it stands for would. The endpoint is the local RFC 7662 server of
tests/support/introspection_server.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from authz.introspection.answer import decode, read
from authz.introspection.manager import IntrospectionManager
from authz.request.credentials.route import looks_like_jwt
from tests.support.docs import issuer, policy, rule
from tests.support.introspection_server import ClientCheck, IntrospectionServer
from tests.support.snapshots import check, serve

RFC_TOKEN = "mF_9.B5f-4.1JqM"
RFC_BASIC = "Basic czZCaGRSa3F0MzpnWDFmQmF0M2JW"
RFC_ACTIVE = b"""{
  "active": true,
  "client_id": "l238j323ds-23ij4",
  "username": "jdoe",
  "scope": "read write dolphin",
  "sub": "Z5O3upPC88QrAjx00dis",
  "aud": "https://protected.example.net/resource",
  "iss": "https://server.example.com/",
  "exp": 1419356238,
  "iat": 1419350238,
  "extension_field": "twenty-seven"
}"""
RFC_INACTIVE = b'{\n  "active": false\n}'
RFC_NOW = 1419353238  # between the example's iat and exp


@pytest.fixture
def endpoint(tmp_path: Any) -> Iterator[IntrospectionServer]:
    check_client = ClientCheck("client_secret_basic", "s6BhdRkqt3", "gX1fBat3bV")
    with IntrospectionServer(check_client) as server:
        yield server


def rfc_docs(url: str, secret_file: str) -> list[dict[str, Any]]:
    return [
        issuer(
            "as",
            "https://server.example.com/",
            audiences=["https://protected.example.net/resource"],
            introspection={
                "endpoint": url,
                "allowInsecureHttp": True,
                "clientAuth": {
                    "method": "client_secret_basic",
                    "clientId": "s6BhdRkqt3",
                    "clientSecretFile": secret_file,
                },
            },
        ),
        policy(
            issuers=["as"],
            rules=[
                rule("dolphins", paths=["/dolphins"], requireScopes={"allOf": ["dolphin"]}),
                rule("whales", paths=["/whales"], requireScopes={"allOf": ["whale"]}),
            ],
        ),
    ]


def test_the_section_2_1_example_token_is_opaque() -> None:
    """Two dots, but its first part is no JOSE header: it goes to introspection."""
    assert not looks_like_jwt(RFC_TOKEN)


def test_section_2_2_answers_read_as_the_rfc_says() -> None:
    active = read(decode(RFC_ACTIVE))
    assert active.active and active.problem is None
    assert active.expires_at == 1419356238
    assert active.claims["extension_field"] == "twenty-seven"
    assert not read(decode(RFC_INACTIVE)).active


def test_the_section_2_1_request_and_2_2_answer_through_a_check(
    endpoint: IntrospectionServer, tmp_path: Any
) -> None:
    endpoint.answer(RFC_TOKEN, json.loads(RFC_ACTIVE))
    manager = IntrospectionManager()
    served = serve(*_docs_in(tmp_path, endpoint.url), introspection=manager)
    answer, outcome = check(served, path="/dolphins", token=RFC_TOKEN, now=RFC_NOW)
    assert answer.status == 200, outcome.decision
    sent = endpoint.requests[-1]
    assert sent.headers["authorization"] == RFC_BASIC
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    assert sent.headers["accept"] == "application/json"
    assert sent.form == {"token": [RFC_TOKEN], "token_type_hint": ["access_token"]}
    assert dict(answer.headers)["x-auth-subject"] == "Z5O3upPC88QrAjx00dis"
    assert dict(answer.headers)["x-auth-issuer"] == "https://server.example.com/"
    denied, outcome = check(served, path="/whales", token=RFC_TOKEN, now=RFC_NOW)
    assert (denied.status, outcome.decision.reason) == (403, "insufficient_scope")
    assert endpoint.calls[RFC_TOKEN] == 1  # the second Check was answered from the cache
    # Cached no longer than the answer's exp; asked again past it (plus the issuer's 60 s
    # skew), an endpoint still calling it active is not believed.
    late, outcome = check(served, path="/dolphins", token=RFC_TOKEN, now=1419356238 + 61)
    assert (late.status, outcome.decision.reason) == (401, "token_expired")
    assert endpoint.calls[RFC_TOKEN] == 2
    manager.close()


def test_the_inactive_example_is_a_401(endpoint: IntrospectionServer, tmp_path: Any) -> None:
    manager = IntrospectionManager()
    served = serve(*_docs_in(tmp_path, endpoint.url), introspection=manager)
    answer, outcome = check(served, path="/dolphins", token="2YotnFZFEjr1zCsicMWpAA")
    assert (answer.status, outcome.decision.reason) == (401, "token_inactive")
    assert 'error="invalid_token"' in dict(answer.headers)["www-authenticate"]
    manager.close()


def _docs_in(tmp_path: Any, url: str) -> list[dict[str, Any]]:
    (tmp_path / "secret").write_text("gX1fBat3bV\n")
    return rfc_docs(url, str(tmp_path / "secret"))
