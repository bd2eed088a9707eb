"""Request limits: over a limit is a 400 (or 401 for the token) with a reason, never an error.

The serialized-size shortcut in `request_view_of` skips the per-header walk for small requests;
these cases sit on both sides of every limit, for `headers` and for raw `header_map`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.request.view import MAX_HEADER_BYTES, MAX_HEADERS, MAX_HEADERS_TOTAL
from tests.support.authz import CheckClient, check_server

POLICY = {
    "apiVersion": "authz.io/v1alpha1",
    "kind": "AuthzPolicy",
    "metadata": {"name": "open", "namespace": "limits"},
    "spec": {"targets": {"hosts": ["*"]}, "rules": [{"action": "allowAnonymous"}]},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    directory = tmp_path_factory.mktemp("limits")
    (directory / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    with check_server(directory) as c:
        yield c


def request(headers: dict[str, str], *, raw: bool = False) -> Any:
    message = CheckRequest()
    http = message.attributes.request.http
    http.method, http.host, http.path = "GET", "api.test", "/"
    if raw:  # Envoy's header_map form (encode_raw_headers)
        for key, value in headers.items():
            http.header_map.headers.add(key=key, raw_value=value.encode())
    else:
        http.headers.update(headers)
    return message


def many(count: int) -> dict[str, str]:
    return {f"x-h{i}": "v" for i in range(count)}


def big(name: str, length: int) -> dict[str, str]:
    return {name: "v" * (length - len(name))}


def spread(total: int, parts: int = 8) -> dict[str, str]:
    return {f"x-part{i}": "v" * (total // parts - 7) for i in range(parts)}


CASES = [
    ("headers at the count limit", many(MAX_HEADERS), 200),
    ("headers over the count limit", many(MAX_HEADERS + 1), 400),
    ("10000 headers", many(10_000), 400),
    ("one header at the size limit", big("x-big", MAX_HEADER_BYTES), 200),
    ("one header over the size limit", big("x-big", MAX_HEADER_BYTES + 1), 400),
    ("one 1 MiB header", big("x-big", 1 << 20), 400),
    ("total at the limit", spread(MAX_HEADERS_TOTAL), 200),
    ("total over the limit", {**spread(MAX_HEADERS_TOTAL), "x-more": "v" * 64}, 400),
]


@pytest.mark.parametrize("raw", [False, True], ids=["headers", "header_map"])
@pytest.mark.parametrize(("name", "headers", "status"), CASES, ids=[c[0] for c in CASES])
def test_header_limits(
    client: CheckClient, name: str, headers: dict[str, str], status: int, raw: bool
) -> None:
    response, outcome = client.checker.check(request(headers, raw=raw))
    if status == 200:
        assert response.status.code == 0, outcome.decision
        return
    assert response.denied_response.status.code == 400
    assert outcome.decision.reason == "request_invalid"
    assert "over" in outcome.decision.detail  # says which limit, for the audit log


@pytest.mark.parametrize("raw", [False, True], ids=["headers", "header_map"])
@pytest.mark.parametrize(("name", "headers", "status"), CASES, ids=[c[0] for c in CASES])
def test_header_limits_through_grpc(
    client: CheckClient, name: str, headers: dict[str, str], status: int, raw: bool
) -> None:
    """Over gRPC the request's size on the wire decides whether headers are walked."""
    response = client.stub.Check(request(headers, raw=raw), timeout=10)
    if status == 200:
        assert response.status.code == 0
        return
    assert (response.denied_response.status.code, response.status.message) == (
        400,
        "request_invalid",
    )


def test_over_the_limit_through_grpc(client: CheckClient) -> None:
    response = client.stub.Check(request(many(MAX_HEADERS + 1)), timeout=10)
    assert (response.denied_response.status.code, response.status.message) == (
        400,
        "request_invalid",
    )
    body = response.denied_response.body
    assert "invalid_request" in body


def test_the_detail_names_the_limit(client: CheckClient) -> None:
    _, outcome = client.checker.check(request(big("x-big", MAX_HEADER_BYTES + 1)))
    assert (
        outcome.decision.detail
        == f"header 'x-big' is {MAX_HEADER_BYTES + 1} bytes, over {MAX_HEADER_BYTES}"
    )
    _, outcome = client.checker.check(request(many(MAX_HEADERS + 1)))
    assert outcome.decision.detail == f"request has {MAX_HEADERS + 1} headers, over {MAX_HEADERS}"
