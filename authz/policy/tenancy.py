"""Who may decide for which traffic (issue 11): host grants, namespaced bindings, workloads.

The policy directory (files, a ConfigMap) is written by whoever runs the authorizer, and so
are cluster-scoped objects (ClusterJWTIssuer, HostGrant). Namespaced cluster objects are
written by namespace users, who must not change decisions for another namespace's traffic.
So a namespaced AuthzPolicy
- targets only hosts a HostGrant grants to its namespace (`ungranted_hosts`),
- binds only routes whose context extensions name its namespace (`binding`),
- selects only a workload in its own namespace (`selects_workload`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.policy import schema
from authz.policy.validate import PolicyObject

_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str:
    """The namespace this process runs in: POD_NAMESPACE, else the service account's, else
    `default`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if _SA_NAMESPACE.exists():
        return _SA_NAMESPACE.read_text(encoding="utf-8").strip()
    return "default"


def normalise(host: str) -> str:
    """A host pattern as selection compares it: lower case, port and trailing dot kept, as
    Envoy's virtual hosts compare them (see compile.host_matcher and host_problems)."""
    return host.lower()


def covers(grant: str, host: str) -> bool:
    """Whether a granted pattern covers a policy's host pattern: `*` covers everything,
    `*.example.com` covers names and wildcards below example.com, an exact name itself."""
    if grant == "*":
        return True
    if grant.startswith("*."):
        return host != "*" and host.endswith(grant[1:])
    return host == grant


@dataclass(frozen=True, slots=True)
class Grants:
    """The host patterns each namespace was granted, and by which HostGrant."""

    by_namespace: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, grants: Iterable[PolicyObject]) -> Grants:
        by_namespace: dict[str, list[tuple[str, str]]] = {}
        for grant in grants:
            for namespace in grant.spec["namespaces"]:
                patterns = by_namespace.setdefault(namespace, [])
                patterns.extend((normalise(h), grant.key) for h in grant.spec["hosts"])
        return cls({k: tuple(v) for k, v in by_namespace.items()})

    def granting(self, namespace: str, host: str) -> str | None:
        """The key of a HostGrant that grants `host` to `namespace`, or None."""
        pattern = normalise(host)
        for granted, key in self.by_namespace.get(namespace, ()):
            if covers(granted, pattern):
                return key
        return None

    def ungranted_hosts(self, policy: PolicyObject) -> list[str]:
        """Why a namespaced cluster policy may not target its hosts (empty: it may).
        Policy files need no grant: whoever writes them runs the authorizer."""
        if not policy.tenant:
            return []
        assert policy.namespace is not None
        return [
            f"{where}: host {host!r} is not granted to namespace {policy.namespace!r}; a "
            f"cluster admin grants it with a HostGrant listing {normalise(host)!r} (or a "
            f"wildcard covering it) and namespace {policy.namespace!r}"
            for where, host in _targeted_hosts(policy.spec["targets"])
            if self.granting(policy.namespace, host) is None
        ]


def _targeted_hosts(targets: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, host pattern) for each host a policy targets. Empty `hosts` and
    `contextExtensions` narrow nothing: without a selector, such a policy is one for `*`."""
    hosts = targets.get("hosts") or []
    if hosts:
        return [(f"spec.targets.hosts[{i}]", host) for i, host in enumerate(hosts)]
    if targets.get("contextExtensions") or "workloadSelector" in targets:
        return []
    return [("spec.targets (no host, binding or selector: every host)", "*")]


def binding(policy: PolicyObject) -> dict[str, str]:
    """The context extensions a route must carry to be bound to this policy. A namespaced
    cluster policy's binding also names its namespace, so it binds only routes the proxy's
    owner assigned to that namespace. Raises ValueError if the spec names another one."""
    wanted = dict(policy.spec["targets"].get("contextExtensions", {}))
    if not wanted or not policy.tenant:
        return wanted
    named = wanted.setdefault(schema.NAMESPACE_CONTEXT_KEY, str(policy.namespace))
    if named != policy.namespace:
        raise ValueError(
            f"spec.targets.contextExtensions: {schema.NAMESPACE_CONTEXT_KEY} must be this "
            f"policy's namespace {policy.namespace!r}, not {named!r}"
        )
    return wanted


def selects_workload(policy: PolicyObject, workload_namespace: str | None) -> bool:
    """A namespaced cluster policy's workloadSelector selects only a workload in its own
    namespace; a policy file's selects any workload given matching labels."""
    return not policy.tenant or policy.namespace == workload_namespace
