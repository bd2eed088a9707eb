"""`authz webhook`: watch the cluster's authz.io objects and answer admission reviews."""

from __future__ import annotations

import signal
import threading
from typing import Any

import structlog
from kubernetes.client import ApiClient

from authz.admission.review import cached
from authz.admission.server import WebhookServer
from authz.keys.remote import KeyManager
from authz.policy.kube import ClusterValidator, KubeSource, configmap_reader, secret_reader
from authz.policy.store import PolicyStore
from authz.tls import ServerCertificates, TLSFiles

log = structlog.get_logger("authz.admission")


def run_webhook(
    api: ApiClient,
    address: tuple[str, int],
    tls: TLSFiles,
    *,
    namespaces: tuple[str, ...],
) -> int:
    """Serve until SIGTERM/SIGINT. Keys are never fetched here (as in `authz lint`);
    Secrets and ConfigMaps that objects name are read as the controller reads them (what
    RBAC allows it, the chart grants it too)."""
    certificates = ServerCertificates(tls)
    store = PolicyStore({}, KeyManager(start=False))
    source = KubeSource(api, store, namespaces=namespaces)
    server = WebhookServer(
        address,
        certificates,
        lambda: dict(source.objects),
        lambda: source.ready,
        ClusterValidator(cached(secret_reader(api)), cached(configmap_reader(api))),
    )
    source.start()
    server.start()
    log.info("webhook serving", addr=f"{address[0]}:{server.port}", namespaces=list(namespaces))
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: Any) -> None:
        stop.set()  # only record it: see server.wait_for_signal

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not stop.wait(0.5):
        pass
    server.stop()
    source.stop()
    store.close()
    log.info("webhook stopped")
    return 0
