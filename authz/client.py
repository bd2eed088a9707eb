"""`authz check --grpc` / `--http`: one Check to a running authz, as Envoy would send it
(gRPC ext_authz, or an HTTP check in Envoy's http_service dialect).

The Helm chart's test hook runs it through the Service, so `helm test` proves that the
Service, the ports and a ready replica answer a real Check, not only that a pod is up.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse
from google.rpc import code_pb2


def check_request(
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    context: Mapping[str, str],
    token: str | None,
) -> CheckRequest:
    """The CheckRequest Envoy would send; a token goes in `Authorization: Bearer`."""
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path = method.upper(), host, path
    http.headers.update({k.lower(): v for k, v in headers.items()})
    if token:
        http.headers["authorization"] = f"Bearer {token}"
    request.attributes.context_extensions.update(context)
    return request


def target(addr: str) -> str:
    """`HOST:PORT` or `unix:/path` as a gRPC channel target (a Service name resolves by DNS)."""
    if addr.startswith("unix:") or "://" in addr:
        return addr
    return f"dns:///{addr}"


def call(addr: str, request: CheckRequest, timeout: float = 5.0) -> dict[str, Any]:
    """Send ``request``; describe the answer as `authz check` prints decisions. Raises
    OSError when no answer arrives (unreachable, timeout, an RPC error)."""
    try:
        with grpc.insecure_channel(target(addr)) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            response: CheckResponse = stub.Check(request, timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        raise OSError(f"{addr}: {code.name if code else 'error'}: {details}") from None
    return describe(response)


def describe(response: CheckResponse) -> dict[str, Any]:
    """What the proxy would do with ``response``, in the field names `authz check` uses."""
    if response.status.code == code_pb2.OK:
        headers = {h.header.key: h.header.value for h in response.ok_response.headers}
        return {
            "decision": "allow",
            "status": 200,
            "reason": response.status.message or None,
            "upstream_headers": headers,
            "removed_headers": list(response.ok_response.headers_to_remove),
        }
    denied = response.denied_response
    headers = {h.header.key: h.header.value for h in denied.headers}
    return {
        "decision": "deny",
        "status": denied.status.code or 403,
        "reason": response.status.message or None,
        "www_authenticate": headers.get("www-authenticate"),
        "body": denied.body or None,
    }


ENVOY_CHECK_PREFIX = "/check/envoy"  # authz/transport/dialects.py (not imported: no uvloop here)
_ENVOY_REMOVE = "x-envoy-auth-headers-to-remove"


def call_http(
    addr: str,
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    token: str | None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """One HTTP check to `HOST:PORT`, as Envoy's http_service sends it; described like
    `call` (without the reason code, which HTTP answers do not carry). Raises OSError when
    no answer arrives."""
    sent = {k.lower(): v for k, v in headers.items()}
    sent["host"] = host
    if token:
        sent["authorization"] = f"Bearer {token}"
    server, _, port = addr.rpartition(":")
    conn = http.client.HTTPConnection(server.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request(method.upper(), ENVOY_CHECK_PREFIX + path, headers=sent)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        answer = {k.lower(): v for k, v in response.getheaders()}
    except (OSError, http.client.HTTPException) as exc:
        raise OSError(f"{addr}: {exc}") from None
    finally:
        conn.close()
    if response.status == 200:
        removed = [n.strip() for n in answer.pop(_ENVOY_REMOVE, "").split(",") if n.strip()]
        return {
            "decision": "allow",
            "status": 200,
            "reason": None,
            "upstream_headers": {k: v for k, v in answer.items() if k.startswith("x-auth-")},
            "removed_headers": removed,
        }
    return {
        "decision": "deny",
        "status": response.status,
        "reason": None,  # HTTP answers carry no reason code: the audit line has it
        "www_authenticate": answer.get("www-authenticate"),
        "body": body or None,
    }
