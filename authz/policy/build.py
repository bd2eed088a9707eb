"""Source objects -> a new Snapshot and the truth about every object: the build step.

Pure apart from the key manager (asking it for a remote source starts that source's
fetching): no locks, no swap, no logging. `PolicyStore` calls it and swaps the result in,
so the build can be table-tested with in-memory objects and no store.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from authz.introspection.manager import IntrospectionManager
from authz.keys.remote import KeyManager
from authz.policy import schema
from authz.policy.compile import (
    CompileError,
    compile_issuer,
    compile_policy,
    compile_revocation,
)
from authz.policy.issuer import CompiledIssuer
from authz.policy.revocation import RevocationList, Revocations
from authz.policy.snapshot import CompiledPolicy, Snapshot
from authz.policy.validate import PolicyObject

# key -> (origin, problems) of an object whose current version is invalid
Failures = Mapping[str, tuple[str, list[str]]]


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """The truth about one object after a build, for logs, `authz lint` and CRD status."""

    key: str
    origin: str
    accepted: bool  # this version is the one serving
    serving: bool  # some version (this or the last good one) is serving
    problems: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()  # the problems that are issuer references not resolved


@dataclass(frozen=True, slots=True)
class LastGood:
    """What serves now, kept to fall back on when an object's next version is invalid."""

    issuers: Mapping[str, CompiledIssuer] = field(default_factory=dict)
    policies: Mapping[str, PolicyObject] = field(default_factory=dict)
    revocations: Mapping[str, RevocationList] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Build:
    snapshot: Snapshot
    statuses: dict[str, ObjectStatus]
    last_good: LastGood


def build(
    objects: list[PolicyObject],
    failures: Failures,
    *,
    last_good: LastGood,
    keys: KeyManager,
    workload_labels: Mapping[str, str],
    version: int,
    introspection: IntrospectionManager | None = None,
    now: float | None = None,
) -> Build:
    """Compile every object; an invalid one falls back to its last good version. `now`
    (wall clock) decides which revocation entries have lapsed."""
    statuses: dict[str, ObjectStatus] = {}
    present = {o.key for o in objects} | set(failures)
    for key, (origin, errors) in failures.items():
        serving = (
            key in last_good.issuers or key in last_good.policies or key in last_good.revocations
        )
        statuses[key] = ObjectStatus(key, origin, False, serving, tuple(errors))
    issuers = _issuers(
        objects,
        failures,
        last_good=last_good,
        keys=keys,
        statuses=statuses,
        introspection=introspection,
    )
    revocations = _revocations(objects, failures, last_good, statuses)
    compiled, policies = _policies(
        objects,
        failures=failures,
        last_good=last_good,
        issuers=issuers,
        workload_labels=workload_labels,
        statuses=statuses,
    )
    snapshot = dataclasses.replace(
        Snapshot.build(version, compiled),
        revocations=Revocations.merge(revocations.values(), time.time() if now is None else now),
    )
    return Build(
        snapshot,
        statuses,
        LastGood({k: v for k, v in issuers.items() if k in present}, policies, revocations),
    )


def _issuers(
    objects: list[PolicyObject],
    failures: Failures,
    *,
    last_good: LastGood,
    keys: KeyManager,
    statuses: dict[str, ObjectStatus],
    introspection: IntrospectionManager | None,
) -> dict[str, CompiledIssuer]:
    issuers = {k: v for k, v in last_good.issuers.items() if k in failures}
    for obj in objects:
        if obj.kind not in schema.ISSUER_KINDS:
            continue
        try:
            issuer = issuers[obj.key] = compile_issuer(obj, keys, introspection)
            state = issuer.keys.state()
            # Serving, but with no key it accepts (revoked, or none usable): say so.
            problems = state.warnings if state.last_refresh is not None and not state.ready else ()
            statuses[obj.key] = ObjectStatus(obj.key, obj.origin, True, True, problems)
        except CompileError as exc:
            last = last_good.issuers.get(obj.key)
            if last is not None:
                issuers[obj.key] = last
            statuses[obj.key] = ObjectStatus(
                obj.key, obj.origin, False, last is not None, (str(exc),)
            )
    return issuers


def _revocations(
    objects: list[PolicyObject],
    failures: Failures,
    last_good: LastGood,
    statuses: dict[str, ObjectStatus],
) -> dict[str, RevocationList]:
    """Compile every TokenRevocation; one that fails keeps its last good version: a typo
    must never give revoked tokens back."""
    lists = {k: v for k, v in last_good.revocations.items() if k in failures}
    for obj in objects:
        if obj.kind != schema.REVOCATION_KIND:
            continue
        try:
            lists[obj.key] = compile_revocation(obj)
            statuses[obj.key] = ObjectStatus(obj.key, obj.origin, True, True)
        except CompileError as exc:
            last = last_good.revocations.get(obj.key)
            if last is not None:
                lists[obj.key] = last
            statuses[obj.key] = ObjectStatus(
                obj.key, obj.origin, False, last is not None, (str(exc),)
            )
    return lists


def _policies(
    objects: list[PolicyObject],
    *,
    failures: Failures,
    last_good: LastGood,
    issuers: Mapping[str, CompiledIssuer],
    workload_labels: Mapping[str, str],
    statuses: dict[str, ObjectStatus],
) -> tuple[list[CompiledPolicy], dict[str, PolicyObject]]:
    """Compile policies; a fresh version that fails is replaced by the last good spec,
    recompiled against today's issuers (an issuer it names may have changed)."""
    candidates = {k: v for k, v in last_good.policies.items() if k in failures}
    candidates.update({o.key: o for o in objects if o.kind == schema.POLICY_KIND})
    compiled: list[CompiledPolicy] = []
    good: dict[str, PolicyObject] = {}
    for key, obj in candidates.items():
        fresh = key not in failures
        attempts = [obj]
        if fresh and key in last_good.policies:
            attempts.append(last_good.policies[key])
        used: PolicyObject | None = None
        problems: tuple[str, ...] = ()
        unresolved: tuple[str, ...] = ()
        for attempt in attempts:
            try:
                result = compile_policy(attempt, issuers, workload_labels)
            except CompileError as exc:
                problems = problems or (str(exc),)
                continue
            used, good[key] = attempt, attempt
            if result.policy is not None:
                compiled.append(result.policy)
            if attempt is obj:
                problems, unresolved = result.problems, result.unresolved
            break
        origin = obj.origin
        if not fresh:
            origin, problems = statuses[key].origin, statuses[key].problems
        statuses[key] = ObjectStatus(
            key, origin, fresh and used is obj, used is not None, problems, unresolved
        )
    return compiled, good
