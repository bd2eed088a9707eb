"""The serving snapshot: merge every source's objects, build, and swap atomically.

Every source (the policy directory, the Kubernetes controller) hands the store its full
set of objects; the store merges them with the other sources' latest, runs the build
(`authz.policy.build`), and swaps one reference. The Check path reads `store.snapshot`
once per request and never sees a half-built state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping

import structlog

from authz.introspection.manager import IntrospectionManager
from authz.keys.provider import KeyState
from authz.keys.remote import KeyManager
from authz.policy.build import (
    CONFLICT,
    Failures,
    LastGood,
    ObjectStatus,
    build,
    merge_sources,
)
from authz.policy.issuer import CompiledIssuer
from authz.policy.snapshot import Snapshot
from authz.policy.validate import PolicyObject

log = structlog.get_logger("authz.policy")


class PolicyStore:
    """Holds the serving snapshot; owns the key manager that keeps remote issuer keys fresh."""

    def __init__(
        self,
        workload_labels: Mapping[str, str] | None = None,
        keys: KeyManager | None = None,
        *,
        workload_namespace: str | None = None,
        introspection: IntrospectionManager | None = None,
    ) -> None:
        self.snapshot = Snapshot(version=0)
        self.ready = False
        self.statuses: dict[str, ObjectStatus] = {}
        # cluster objects refused because the policy directory defines the same key
        self.shadowed: dict[str, ObjectStatus] = {}
        self.keys = keys if keys is not None else KeyManager()
        self.introspection = introspection if introspection is not None else IntrospectionManager()
        self._workload_labels = dict(workload_labels or {})
        self._workload_namespace = workload_namespace
        self._last_good = LastGood()
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._inputs: dict[str, tuple[list[PolicyObject], dict[str, tuple[str, list[str]]]]] = {}
        self._lock = threading.Lock()

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def key_states(self) -> dict[str, KeyState]:
        """Key state of every issuer serving (referenced by a policy or not) that verifies
        with keys (not an issuer of opaque tokens only), by issuer id."""
        issuers = self._last_good.issuers
        return {
            key: issuer.keys.state() for key, issuer in sorted(issuers.items()) if issuer.has_keys
        }

    def issuer(self, key: str) -> CompiledIssuer | None:
        """The serving version of an issuer object, e.g. `JWTIssuer/default/idp`."""
        return self._last_good.issuers.get(key)

    def close(self) -> None:
        """Stop fetching keys and introspecting."""
        self.keys.close()
        self.introspection.close()

    def update(
        self, objects: list[PolicyObject], failures: Failures, *, source: str = "files"
    ) -> Snapshot:
        """Rebuild from a source's full object set, merged with the other sources' latest.
        `failures` maps the key of each object whose current version is invalid to
        (origin, problems); its last good version stays."""
        with self._lock:
            self._inputs[source] = (list(objects), dict(failures))
            merged = merge_sources(self._inputs)
            started = time.monotonic()
            result = build(
                merged.objects,
                merged.failures,
                last_good=self._last_good,
                keys=self.keys,
                workload_labels=self._workload_labels,
                workload_namespace=self._workload_namespace,
                version=self.snapshot.version + 1,
                shadowed=merged.shadowed,
                introspection=self.introspection,
            )
            self._last_good = result.last_good
            serving = result.last_good.issuers.values()
            self.keys.retain(i.keys for i in serving)
            self.introspection.retain(i.introspection for i in serving if i.introspection)
            self.snapshot = result.snapshot
            self.statuses = result.statuses
            self.shadowed = result.shadowed
            self.ready = True
        statuses = [*result.statuses.values(), *result.shadowed.values()]
        _log(statuses, result.snapshot, len(result.last_good.issuers), started)
        for listener in self._listeners:
            listener(result.snapshot)
        return result.snapshot


def _log(
    statuses: Iterable[ObjectStatus], snapshot: Snapshot, issuers: int, started: float
) -> None:
    for status in statuses:
        if status.problems:
            log.error(
                "policy object rejected" if not status.accepted else "policy object degraded",
                object=status.key,
                origin=status.origin,
                problems=list(status.problems),
                reason=status.reason or None,
                serving_last_good=status.serving
                and not status.accepted
                and status.reason != CONFLICT,
            )
    log.info(
        "policy snapshot swapped",
        version=snapshot.version,
        policies=len(snapshot.policies),
        issuers=issuers,
        build_ms=round((time.monotonic() - started) * 1000, 2),
    )
