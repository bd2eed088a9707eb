"""`authz check --grpc` / `--http`: one Check to a running authz, as Envoy would send it
(gRPC ext_authz, or an HTTP check in Envoy's http_service dialect).

The Helm chart's test hook runs it through the Service, so `helm test` proves that the
Service, the ports and a ready replica answer a real Check, not only that a pod is up.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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
    source_address: str = "",
    destination_port: int = 0,
    peer_principal: str = "",
    peer_certificate: str = "",
) -> CheckRequest:
    """The CheckRequest Envoy would send; a token goes in `Authorization: Bearer`; the
    connection attributes where given (the peer certificate URL-encoded, as Envoy sends it)."""
    request = CheckRequest()
    attrs = request.attributes
    if source_address:
        attrs.source.address.socket_address.address = source_address
    if destination_port:
        attrs.destination.address.socket_address.port_value = destination_port
    attrs.source.principal = peer_principal
    attrs.source.certificate = peer_certificate
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


@dataclass(frozen=True)
class ClientTLS:
    """TLS to a server started with --tls-*: the CA to verify it with, the client
    certificate for mTLS, and the name to expect in its certificate (default: the host)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def channel(self, addr: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            self.ca.read_bytes(),
            self.key.read_bytes() if self.key else None,
            self.cert.read_bytes() if self.cert else None,
        )
        options = [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
        return grpc.secure_channel(target(addr), credentials, options=options)

    def https(self, host: str, port: int, timeout: float) -> http.client.HTTPSConnection:
        """An HTTPS connection to the HTTP check port, verified as `channel` verifies."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.cert is not None:
            context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return _NamedHTTPS(host, port, self.server_name or host, timeout=timeout, context=context)


class _NamedHTTPS(http.client.HTTPSConnection):
    """HTTPS whose certificate must carry `server_name` (a Service's DNS name, say) rather
    than the address connected to."""

    def __init__(self, host: str, port: int, server_name: str, **kwargs: Any) -> None:
        super().__init__(host, port, **kwargs)
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=self._server_name)


def call(
    addr: str, request: CheckRequest, timeout: float = 5.0, tls: ClientTLS | None = None
) -> dict[str, Any]:
    """Send ``request``; describe the answer as `authz check` prints decisions. Raises
    OSError when no answer arrives (unreachable, timeout, an RPC error, a TLS failure)."""
    try:
        with tls.channel(addr) if tls else grpc.insecure_channel(target(addr)) as channel:
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
    tls: ClientTLS | None = None,
) -> dict[str, Any]:
    """One HTTP check to `HOST:PORT`, as Envoy's http_service sends it; described like
    `call` (without the reason code, which HTTP answers do not carry). Raises OSError when
    no answer arrives (a TLS failure included)."""
    sent = {k.lower(): v for k, v in headers.items()}
    sent["host"] = host
    if token:
        sent["authorization"] = f"Bearer {token}"
    server, _, port = addr.rpartition(":")
    conn = (
        tls.https(server.strip("[]"), int(port), timeout)
        if tls
        else http.client.HTTPConnection(server.strip("[]"), int(port), timeout=timeout)
    )
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
