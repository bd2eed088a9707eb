"""Cluster mode wiring: the CRD source, leader election and the status writer.

Every replica watches and serves; the elected one also writes status and Events.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubernetes import client, config

from authz import workers
from authz.metrics import PROPAGATION
from authz.policy.kube import KubeSource
from authz.policy.lease import LeaderElector
from authz.policy.status import StatusWriter
from authz.policy.store import PolicyStore

if TYPE_CHECKING:
    from authz.server import ServeSettings

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass
class Controller:
    source: KubeSource
    elector: LeaderElector
    writer: StatusWriter

    def stop(self) -> None:
        self.source.stop()
        self.writer.stop()
        self.elector.stop()


def api_client(kubeconfig: str | None) -> client.ApiClient:
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    config.load_incluster_config()
    return client.ApiClient()


def _own_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if _SA_NAMESPACE.exists():
        return _SA_NAMESPACE.read_text(encoding="utf-8").strip()
    return "default"


def start_controller(settings: ServeSettings, store: PolicyStore) -> Controller:
    api = api_client(settings.kubeconfig)
    # The callbacks run only after start(), when `writer` exists.
    source = KubeSource(
        api, store, namespaces=settings.watch_namespaces, on_rebuild=lambda _o: writer.poke()
    )
    source.propagation = PROPAGATION.observe
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    worker = workers.current()
    if worker is not None:  # every worker process of a pod competes under its own name
        identity = f"{identity}-w{worker.index}"
    elector = LeaderElector(
        api,
        namespace=settings.leader_election_namespace or _own_namespace(),
        name=settings.leader_election_id,
        identity=identity,
        on_change=lambda leader: writer.poke() if leader else None,
    )
    writer = StatusWriter(
        api,
        objects=lambda: source.objects,
        statuses=lambda: store.statuses,
        is_leader=lambda: elector.is_leader,
        identity=identity,
        keys_status=lambda key: (
            issuer.keys.state().status() if (issuer := store.issuer(key)) else None
        ),
    )
    writer.start()
    elector.start()
    source.start()
    return Controller(source, elector, writer)
