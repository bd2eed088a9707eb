"""The webhook's HTTPS server: `POST /validate` (AdmissionReview), `GET /healthz` and
`GET /readyz` (ready once the cluster's objects have been listed: before that a review
could not see what the applied object refers to, so it is answered 503 and the API
server applies the webhook's failurePolicy).

It keeps its own list+watch of the authz.io kinds (the controller's KubeSource, without
leader election or status writing), so it can run apart from the Check servers: in
sidecar mode there is no central authz pod to host it, and admission traffic never
shares a process with Checks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from authz.admission.review import review
from authz.policy.kube import ClusterValidator
from authz.tls import ServerCertificates

log = structlog.get_logger("authz.admission")

MAX_BODY = 4 << 20  # an AdmissionReview carries the object twice (old and new): 2 x 1.5 MiB


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        certificates: ServerCertificates,
        cluster: Callable[[], Mapping[str, dict[str, Any]]],
        ready: Callable[[], bool],
        validator: ClusterValidator,
    ) -> None:
        super().__init__(address, _Handler)
        self.socket = certificates.ssl_context().wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self.cluster = cluster
        self.ready = ready
        self.validator = validator

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="webhook", daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops sending loses its thread after this

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._send(200, {"status": "ok"})
        elif self.path == "/readyz":
            ready = self.server.ready()
            self._send(200 if ready else 503, {"ready": ready})
        else:
            self._send(404, {"error": f"no GET {self.path}"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/validate":
            self._send(404, {"error": f"no POST {self.path}"})
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            self._send(413, {"error": f"a review must have a Content-Length up to {MAX_BODY}"})
            return
        try:
            doc = json.loads(self.rfile.read(int(length)))
        except ValueError:
            self._send(400, {"error": "the body is not JSON"})
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("request"), dict):
            self._send(400, {"error": "not an AdmissionReview"})
            return
        if not self.server.ready():
            self._send(503, {"error": "the cluster's objects are not listed yet"})
            return
        try:
            answer = review(doc, self.server.cluster(), self.server.validator)
        except Exception:
            log.exception("review failed")  # the API server applies failurePolicy
            self._send(500, {"error": "review failed"})
            return
        response = answer["response"]
        log.info(
            "admission review",
            object=_key(doc),
            operation=doc["request"].get("operation"),
            allowed=response["allowed"],
            warnings=len(response.get("warnings", ())),
            message=response.get("status", {}).get("message"),
        )
        self._send(200, answer)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are logged as reviews above, not as access lines."""


def _key(doc: Mapping[str, Any]) -> str:
    request = doc.get("request") or {}
    kind = (request.get("kind") or {}).get("kind", "?")
    return f"{kind}/{request.get('namespace') or '-'}/{request.get('name') or '?'}"
