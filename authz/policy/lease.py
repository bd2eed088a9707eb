"""Leader election on a coordination.k8s.io Lease, so exactly one replica writes status.

Every replica serves Checks from its own snapshot; only status conditions and
Events need a single writer. The protocol is client-go's: the holder renews
`renewTime`; anyone may take the lease once `renewTime + leaseDurationSeconds`
has passed; updates carry the resourceVersion, so two contenders cannot both win.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = structlog.get_logger("authz.lease")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self._on_change = on_change
        self.is_leader = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and give the lease up, so another replica takes over at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.is_leader:
            try:
                lease = self._api.read_namespaced_lease(self.name, self.namespace)
                if lease.spec.holder_identity == self.identity:
                    lease.spec.holder_identity = None
                    lease.spec.renew_time = None
                    self._api.replace_namespaced_lease(self.name, self.namespace, lease)
            except ApiException as exc:
                log.warning("could not release the lease", error=f"{exc.status} {exc.reason}")
            self._set(False)

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("leadership changed", leader=leader, identity=self.identity, lease=self.name)
            if self._on_change is not None:
                self._on_change(leader)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._set(self.try_acquire())
            except Exception as exc:  # API server unreachable: stop acting as leader
                log.warning("lease renewal failed", error=" ".join(str(exc).split())[:200])
                self._set(False)
            self._stop.wait(self._renew_seconds)

    def try_acquire(self) -> bool:
        now = _now()
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, acquire=now, transitions=0),
            )
            try:
                self._api.create_namespaced_lease(self.namespace, body)
            except ApiException as conflict:
                if conflict.status == 409:  # another replica created it first
                    return False
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity
        expired = (
            spec.renew_time is None
            or spec.renew_time
            + datetime.timedelta(seconds=spec.lease_duration_seconds or self._lease_seconds)
            < now
        )
        if holder not in (None, self.identity) and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        acquire = spec.acquire_time if holder == self.identity and spec.acquire_time else now
        lease.spec = self._spec(now, acquire=acquire, transitions=transitions)
        try:
            self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # lost a race on resourceVersion
                return False
            raise
        return True

    def _spec(
        self, now: datetime.datetime, *, acquire: datetime.datetime, transitions: int
    ) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=self._lease_seconds,
            acquire_time=acquire,
            renew_time=now,
            lease_transitions=transitions,
        )
