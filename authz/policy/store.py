"""Build snapshots from source objects and swap them in atomically, keeping last good versions.

Every source (the policy directory, later the Kubernetes controller) hands the
store its full set of objects; the store compiles, falls back to an object's
last good version when the new one is invalid, and swaps one reference. The
Check path reads `store.snapshot` once per request and never sees a half-built state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from authz.keys.manager import KeyManager, KeyState
from authz.policy import schema
from authz.policy.compile import CompileError, compile_issuer, compile_policy
from authz.policy.issuer import CompiledIssuer
from authz.policy.snapshot import CompiledPolicy, Snapshot
from authz.policy.validate import PolicyObject

log = structlog.get_logger("authz.policy")


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """The truth about one object after a rebuild, for logs, `authz lint` and CRD status."""

    key: str
    origin: str
    accepted: bool  # this version is the one serving
    serving: bool  # some version (this or the last good one) is serving
    problems: tuple[str, ...] = ()


class PolicyStore:
    """Holds the serving snapshot; owns the key manager that keeps remote issuer keys fresh."""

    def __init__(
        self, workload_labels: Mapping[str, str] | None = None, keys: KeyManager | None = None
    ) -> None:
        self.snapshot = Snapshot(version=0)
        self.ready = False
        self.statuses: dict[str, ObjectStatus] = {}
        self.keys = keys if keys is not None else KeyManager()
        self._workload_labels = dict(workload_labels or {})
        self._issuers: dict[str, CompiledIssuer] = {}
        self._policies: dict[str, PolicyObject] = {}
        self._listeners: list[Callable[[Snapshot], None]] = []
        self._inputs: dict[str, tuple[list[PolicyObject], dict[str, tuple[str, list[str]]]]] = {}
        self._lock = threading.Lock()

    def on_swap(self, listener: Callable[[Snapshot], None]) -> None:
        self._listeners.append(listener)

    def key_states(self) -> dict[str, KeyState]:
        """Key state of every issuer serving (referenced by a policy or not), by issuer id."""
        return {key: issuer.keys.state() for key, issuer in sorted(self._issuers.items())}

    def issuer(self, key: str) -> CompiledIssuer | None:
        """The serving version of an issuer object, e.g. `JWTIssuer/default/idp`."""
        return self._issuers.get(key)

    def close(self) -> None:
        """Stop fetching keys."""
        self.keys.close()

    def update(
        self,
        objects: list[PolicyObject],
        failures: Mapping[str, tuple[str, list[str]]],
        *,
        source: str = "files",
    ) -> Snapshot:
        """Rebuild from a source's full object set, merged with the other sources' latest.
        `failures` maps the key of each object whose current version is invalid to
        (origin, problems); its last good version stays."""
        with self._lock:
            self._inputs[source] = (list(objects), dict(failures))
            objects = [o for objs, _ in self._inputs.values() for o in objs]
            failures = {k: v for _, f in self._inputs.values() for k, v in f.items()}
            started = time.monotonic()
            statuses: dict[str, ObjectStatus] = {}
            present = {o.key for o in objects} | set(failures)
            for key, (origin, errors) in failures.items():
                serving = key in self._issuers or key in self._policies
                statuses[key] = ObjectStatus(key, origin, False, serving, tuple(errors))
            issuers = {k: v for k, v in self._issuers.items() if k in failures}
            for obj in objects:
                if obj.kind not in schema.ISSUER_KINDS:
                    continue
                try:
                    issuers[obj.key] = compile_issuer(obj, self.keys)
                    statuses[obj.key] = ObjectStatus(obj.key, obj.origin, True, True)
                except CompileError as exc:
                    last = self._issuers.get(obj.key)
                    if last is not None:
                        issuers[obj.key] = last
                    statuses[obj.key] = ObjectStatus(
                        obj.key, obj.origin, False, last is not None, (str(exc),)
                    )
            policy_objects = {k: v for k, v in self._policies.items() if k in failures}
            policy_objects.update({o.key: o for o in objects if o.kind == schema.POLICY_KIND})
            compiled: list[CompiledPolicy] = []
            good: dict[str, PolicyObject] = {}
            for key, obj in policy_objects.items():
                fresh = key not in failures
                attempts = [obj]
                if fresh and key in self._policies:
                    attempts.append(self._policies[key])  # the last good spec, recompiled
                used: PolicyObject | None = None
                problems: list[str] = []
                for attempt in attempts:
                    try:
                        policy, warnings = compile_policy(attempt, issuers, self._workload_labels)
                    except CompileError as exc:
                        problems = problems or [str(exc)]
                        continue
                    used, good[key] = attempt, attempt
                    if policy is not None:
                        compiled.append(policy)
                    if attempt is obj:
                        problems = warnings
                    break
                origin = obj.origin
                if not fresh:
                    origin, problems = statuses[key].origin, list(statuses[key].problems)
                statuses[key] = ObjectStatus(
                    key, origin, fresh and used is obj, used is not None, tuple(problems)
                )
            self._issuers = {k: v for k, v in issuers.items() if k in present}
            self.keys.retain(i.keys for i in self._issuers.values())
            self._policies = good
            snapshot = Snapshot.build(self.snapshot.version + 1, compiled)
            self.snapshot = snapshot
            self.statuses = statuses
            self.ready = True
        for status in statuses.values():
            if status.problems:
                log.error(
                    "policy object rejected" if not status.accepted else "policy object degraded",
                    object=status.key,
                    origin=status.origin,
                    problems=list(status.problems),
                    serving_last_good=status.serving and not status.accepted,
                )
        log.info(
            "policy snapshot swapped",
            version=snapshot.version,
            policies=len(snapshot.policies),
            issuers=len(issuers),
            build_ms=round((time.monotonic() - started) * 1000, 2),
        )
        for listener in self._listeners:
            listener(snapshot)
        return snapshot
