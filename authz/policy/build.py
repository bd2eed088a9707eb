"""Source objects -> a new Snapshot and the truth about every object: the build step.

Pure apart from the key manager (asking it for a remote source starts that source's
fetching): no locks, no swap, no logging. `PolicyStore` calls it and swaps the result in,
so the build can be table-tested with in-memory objects and no store.

Who may decide what (authz.policy.tenancy) is enforced here: a namespaced cluster policy
serves only hosts granted to its namespace, every binding and host pattern is served by one
policy (the oldest; the others are refused for it), and a key defined in the policy
directory is never taken over by a cluster object. What compiled last time is reused
(authz.policy.reuse) when an object and what it depends on are unchanged.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from authz.introspection.manager import IntrospectionManager
from authz.keys.remote import KeyManager
from authz.policy import schema
from authz.policy.compile import CompileError, compile_issuer, compile_revocation
from authz.policy.issuer import CompiledIssuer
from authz.policy.reuse import PolicyCompile, Workload, compile_policy_again, same_issuer
from authz.policy.revocation import RevocationList, Revocations
from authz.policy.snapshot import CompiledPolicy, Snapshot
from authz.policy.tenancy import Grants
from authz.policy.validate import PolicyObject

# key -> (origin, problems) of an object whose current version is invalid
Failures = Mapping[str, tuple[str, list[str]]]

# Why an object's current version is not accepted (the Accepted condition's reason).
INVALID = "Invalid"
HOST_NOT_GRANTED = "HostNotGranted"
CONFLICT = "Conflict"

FILES = "files"  # the policy directory: it owns every key it defines


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """The truth about one object after a build, for logs, `authz lint` and CRD status."""

    key: str
    origin: str
    accepted: bool  # this version is the one serving, all of it
    serving: bool  # some version (this or the last good one) is serving
    problems: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()  # the problems that are issuer references not resolved
    reason: str = ""  # why it is not accepted: INVALID, HOST_NOT_GRANTED or CONFLICT


@dataclass(frozen=True, slots=True)
class LastGood:
    """What serves now, kept to fall back on when an object's next version is invalid, and
    what compiled last time, reused while the object and what it depends on are unchanged."""

    issuers: Mapping[str, CompiledIssuer] = field(default_factory=dict)
    policies: Mapping[str, PolicyObject] = field(default_factory=dict)
    grants: Mapping[str, PolicyObject] = field(default_factory=dict)
    compiled_issuers: Mapping[str, CompiledIssuer] = field(default_factory=dict)
    compiled_policies: Mapping[str, PolicyCompile] = field(default_factory=dict)
    revocations: Mapping[str, RevocationList] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Build:
    snapshot: Snapshot
    statuses: dict[str, ObjectStatus]
    last_good: LastGood
    # cluster objects refused because the policy directory defines the same key
    shadowed: dict[str, ObjectStatus] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Merged:
    """Every source's objects, each key from one source only."""

    objects: list[PolicyObject]
    failures: dict[str, tuple[str, list[str]]]
    shadowed: dict[str, tuple[str, str]]  # key -> (refused origin, the serving source's origin)


def merge_sources(inputs: Mapping[str, tuple[list[PolicyObject], Failures]]) -> Merged:
    """One object set from every source's latest. A key the policy directory defines (valid
    or not) is its own: the same key from the cluster is refused, never silently swapped in."""
    owner: dict[str, str] = {}
    merged = Merged([], {}, {})
    for source in sorted(inputs, key=lambda s: s != FILES):
        objects, failures = inputs[source]
        entries: list[tuple[str, str, PolicyObject | None, list[str]]] = [
            (key, origin, None, problems) for key, (origin, problems) in failures.items()
        ]
        entries += [(obj.key, obj.origin, obj, []) for obj in objects]
        for key, origin, obj, problems in entries:
            if key in owner:
                merged.shadowed[key] = (origin, owner[key])
                continue
            owner[key] = origin
            if obj is None:
                merged.failures[key] = (origin, problems)
            else:
                merged.objects.append(obj)
    return merged


def build(
    objects: list[PolicyObject],
    failures: Failures,
    *,
    last_good: LastGood,
    keys: KeyManager,
    workload_labels: Mapping[str, str],
    version: int,
    workload_namespace: str | None = None,
    shadowed: Mapping[str, tuple[str, str]] | None = None,
    introspection: IntrospectionManager | None = None,
    now: float | None = None,
) -> Build:
    """Compile every object; an invalid one falls back to its last good version. `now`
    (wall clock) decides which revocation entries have lapsed."""
    statuses: dict[str, ObjectStatus] = {}
    present = {o.key for o in objects} | set(failures)
    for key, (origin, errors) in failures.items():
        serving = any(
            key in served
            for served in (
                last_good.issuers,
                last_good.policies,
                last_good.grants,
                last_good.revocations,
            )
        )
        statuses[key] = ObjectStatus(key, origin, False, serving, tuple(errors), reason=INVALID)
    grants = _grants(objects, failures, last_good, statuses)
    issuers, compiled_issuers = _issuers(
        objects, failures, last_good, keys, statuses, introspection=introspection
    )
    revocations = _revocations(objects, failures, last_good, statuses)
    compiled, policies, compiled_policies = _policies(
        objects,
        failures=failures,
        last_good=last_good,
        issuers=issuers,
        grants=Grants.of(grants.values()),
        workload=(workload_labels, workload_namespace),
        statuses=statuses,
    )
    # Precedence: the oldest object first (policy files count as oldest), then by key.
    compiled.sort(key=lambda p: (policies[p.id].created, p.id))
    snapshot = Snapshot.build(version, compiled)
    _refuse_conflicts(snapshot, statuses)
    snapshot = dataclasses.replace(
        snapshot,
        revocations=Revocations.merge(revocations.values(), time.time() if now is None else now),
    )
    refused = _refuse_shadowed(shadowed or {}, statuses)
    serving_issuers = {k: v for k, v in issuers.items() if k in present}
    return Build(
        snapshot,
        statuses,
        LastGood(
            serving_issuers, policies, grants, compiled_issuers, compiled_policies, revocations
        ),
        refused,
    )


def _grants(
    objects: list[PolicyObject],
    failures: Failures,
    last_good: LastGood,
    statuses: dict[str, ObjectStatus],
) -> dict[str, PolicyObject]:
    """The HostGrants serving: each valid one, and the last good version of an invalid one."""
    grants = {k: v for k, v in last_good.grants.items() if k in failures}
    for obj in objects:
        if obj.kind == schema.GRANT_KIND:
            grants[obj.key] = obj
            statuses[obj.key] = ObjectStatus(obj.key, obj.origin, True, True)
    return grants


def _issuers(
    objects: list[PolicyObject],
    failures: Failures,
    last_good: LastGood,
    keys: KeyManager,
    statuses: dict[str, ObjectStatus],
    *,
    introspection: IntrospectionManager | None,
) -> tuple[dict[str, CompiledIssuer], dict[str, CompiledIssuer]]:
    """The issuers serving, and the ones compiled from current versions (for reuse)."""
    issuers = {k: v for k, v in last_good.issuers.items() if k in failures}
    compiled: dict[str, CompiledIssuer] = {}
    for obj in objects:
        if obj.kind not in schema.ISSUER_KINDS:
            continue
        try:
            issuer = compile_issuer(obj, keys, introspection)
        except CompileError as exc:
            last = last_good.issuers.get(obj.key)
            if last is not None:
                issuers[obj.key] = last
            statuses[obj.key] = ObjectStatus(
                obj.key, obj.origin, False, last is not None, (str(exc),), reason=INVALID
            )
            continue
        # Last build's compile of this object, else the version serving (an edit that
        # failed, then reverted, comes back as the very object that served meanwhile).
        previous = last_good.compiled_issuers.get(obj.key) or last_good.issuers.get(obj.key)
        if previous is not None and same_issuer(previous, issuer):
            issuer = previous  # the very object cached tokens were verified by
        issuers[obj.key] = compiled[obj.key] = issuer
        state = issuer.keys.state()
        # Serving, but with no key it accepts (revoked, or none usable): say so.
        problems = state.warnings if state.last_refresh is not None and not state.ready else ()
        statuses[obj.key] = ObjectStatus(obj.key, obj.origin, True, True, problems)
    return issuers, compiled


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
                obj.key, obj.origin, False, last is not None, (str(exc),), reason=INVALID
            )
    return lists


def _policies(
    objects: list[PolicyObject],
    *,
    failures: Failures,
    last_good: LastGood,
    issuers: Mapping[str, CompiledIssuer],
    grants: Grants,
    workload: Workload,
    statuses: dict[str, ObjectStatus],
) -> tuple[list[CompiledPolicy], dict[str, PolicyObject], dict[str, PolicyCompile]]:
    """Compile policies; a fresh version that fails (or targets a host its namespace was not
    granted) is replaced by the last good spec, recompiled against today's issuers and
    checked against today's grants."""
    candidates = {k: v for k, v in last_good.policies.items() if k in failures}
    candidates.update({o.key: o for o in objects if o.kind == schema.POLICY_KIND})
    compiled: list[CompiledPolicy] = []
    good: dict[str, PolicyObject] = {}
    cache: dict[str, PolicyCompile] = {}
    for key, obj in candidates.items():
        fresh = key not in failures
        attempts = [obj]
        if fresh and key in last_good.policies:
            attempts.append(last_good.policies[key])
        used: PolicyObject | None = None
        problems: tuple[str, ...] = ()
        unresolved: tuple[str, ...] = ()
        reason = ""
        for attempt in attempts:
            try:
                compiled_now = compile_policy_again(
                    attempt, issuers, workload, last_good.compiled_policies.get(key)
                )
            except CompileError as exc:
                problems, reason = problems or (str(exc),), reason or INVALID
                continue
            cache[key] = compiled_now
            result = compiled_now[2]
            ungranted = grants.ungranted_hosts(attempt)
            if ungranted:
                problems, reason = problems or tuple(ungranted), reason or HOST_NOT_GRANTED
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
            reason = INVALID
        accepted = fresh and used is obj
        statuses[key] = ObjectStatus(
            key,
            origin,
            accepted,
            used is not None,
            problems,
            unresolved,
            "" if accepted else reason,
        )
    return compiled, good, cache


def _refuse_conflicts(snapshot: Snapshot, statuses: dict[str, ObjectStatus]) -> None:
    """A policy that lost a claim is not accepted for it, and says who serves it."""
    lost: dict[str, list[str]] = {}
    for conflict in snapshot.conflicts:
        lost.setdefault(conflict.loser, []).append(
            f"{conflict.claim} is served by {conflict.winner}, which claimed it first (the "
            "oldest object serves; policy files count as oldest): not served by this policy"
        )
    serving = {p.id for p in snapshot.policies}
    for key, problems in lost.items():
        status = statuses[key]
        statuses[key] = dataclasses.replace(
            status,
            accepted=False,
            serving=key in serving,
            problems=(*status.problems, *problems),
            reason=CONFLICT,
        )


def _refuse_shadowed(
    shadowed: Mapping[str, tuple[str, str]], statuses: dict[str, ObjectStatus]
) -> dict[str, ObjectStatus]:
    """Statuses for cluster objects whose key the policy directory defines; the directory's
    object says so too, for its logs and `authz check`."""
    refused = {}
    for key, (origin, _directory) in shadowed.items():
        refused[key] = ObjectStatus(
            key,
            origin,
            False,
            False,
            (
                f"{key} is also defined in the policy directory, whose version serves: this "
                "object is ignored",
            ),
            reason=CONFLICT,
        )
        status = statuses.get(key)
        if status is not None:
            note = f"also defined by {origin}, which is refused: this version serves"
            statuses[key] = dataclasses.replace(status, problems=(*status.problems, note))
    return refused
