"""Cluster mode wiring: the CRD source, leader election and the status writer.

Every replica watches and serves; the elected one also writes status and Events. The
server passes in what this needs (where to connect, what to watch, who we are), so the
policy layer never reads the server's settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

from authz.policy.kube import KubeSource
from authz.policy.lease import LeaderElector
from authz.policy.status import StatusWriter
from authz.policy.store import PolicyStore
from authz.policy.tenancy import own_namespace


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


def entries_status(store: PolicyStore, key: str) -> dict[str, Any] | None:
    """A TokenRevocation's `status.entries`: how many entries refuse tokens now."""
    revocation = store.snapshot.revocations.lists.get(key)
    if revocation is None:
        return None
    active, lapsed = revocation.counts(time.time())
    return {"active": active, "lapsed": lapsed}


def start_controller(
    store: PolicyStore,
    *,
    kubeconfig: str | None,
    namespaces: tuple[str, ...],
    lease_namespace: str | None,
    lease_name: str,
    identity: str,
    propagation: Callable[[float], None] | None = None,
) -> Controller:
    """Watch `namespaces` (all if empty) into `store`; `identity` names this replica (and
    worker) as Lease holder, status field manager and Event reporter."""
    api = api_client(kubeconfig)
    # The callbacks run only after start(), when `writer` exists.
    source = KubeSource(api, store, namespaces=namespaces, on_rebuild=lambda _o: writer.poke())
    source.propagation = propagation
    elector = LeaderElector(
        api,
        namespace=lease_namespace or own_namespace(),
        name=lease_name,
        identity=identity,
        on_change=lambda leader: writer.poke() if leader else None,
    )
    writer = StatusWriter(
        api,
        objects=lambda: source.objects,
        # a cluster object refused because the policy directory has its key: its refusal
        statuses=lambda: {**store.statuses, **store.shadowed},
        is_leader=lambda: elector.is_leader,
        identity=identity,
        keys_status=lambda key: (
            issuer.keys.state().status()
            if (issuer := store.issuer(key)) and issuer.has_keys
            else None
        ),
        entries_status=lambda key: entries_status(store, key),
    )
    writer.start()
    elector.start()
    source.start()
    return Controller(source, elector, writer)
