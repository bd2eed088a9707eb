"""Cluster-mode rebuild cost: what one object change costs with many objects (issue 11, item 17).

Drives the production path, `KubeSource.rebuild()` (validation, Secret/ConfigMap reads,
compile, snapshot build, swap), with the watched objects set in memory: no API server is
needed, because the cost being measured is ours, not the watch's. 1,100 objects by default:
100 JWTIssuers (inline ES256 JWKS) and 1,000 AuthzPolicies with 20 rules each, spread over
10 namespaces, plus one HostGrant per namespace. Prints the initial build and the median of
`ROUNDS` rebuilds after editing one policy, one issuer and nothing.

    python -m tests.bench.rebuild [POLICIES] [ISSUERS] [ROUNDS]
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from typing import Any

from kubernetes import client

from authz.devtools import generate_key
from authz.observe import logs
from authz.policy import schema
from authz.policy.kube import KubeSource, Target
from authz.policy.store import PolicyStore
from tests.bench.policies import RULES, Rule

NAMESPACES = 10
CREATED = "2026-01-01T00:00:00Z"


def _rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"name": rule.name, "match": {"paths": list(rule.paths)}}
    if rule.methods:
        out["match"]["methods"] = list(rule.methods)
    if rule.action != "requireToken":
        out["action"] = rule.action
    scopes = {k: list(v) for k, v in (("allOf", rule.scopes_all), ("anyOf", rule.scopes_any)) if v}
    if scopes:
        out["requireScopes"] = scopes
    if rule.roles_any:
        out["requireRoles"] = {"anyOf": list(rule.roles_any)}
    if rule.claim_equals:
        out["claims"] = [{"path": rule.claim_equals[0], "equals": rule.claim_equals[1]}]
    return out


def _object(kind: str, name: str, namespace: str | None, spec: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": 1, "creationTimestamp": CREATED}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": schema.API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def cluster_objects(policies: int, issuers: int) -> dict[str, dict[str, Any]]:
    """The watched objects as the API server returns them, by key."""
    _private, public = generate_key("ES256", "bench-1")
    rules = [_rule(r) for r in RULES]
    docs: list[dict[str, Any]] = []
    for i in range(issuers):
        spec = {
            "issuer": f"https://idp-{i}.bench",
            "jwks": {"keys": [public]},
            "audiences": ["api"],
        }
        docs.append(_object("JWTIssuer", f"idp-{i}", f"ns-{i % NAMESPACES}", spec))
    for i in range(policies):
        ns = i % NAMESPACES
        spec = {
            "targets": {"hosts": [f"api-{i}.ns-{ns}.bench"]},
            "issuers": [{"name": f"idp-{j}"} for j in range(ns, issuers, NAMESPACES)][:5],
            "rules": copy.deepcopy(rules),
        }
        docs.append(_object("AuthzPolicy", f"api-{i}", f"ns-{ns}", spec))
    if "HostGrant" in schema.KINDS:
        for ns in range(NAMESPACES):
            spec = {"hosts": [f"*.ns-{ns}.bench"], "namespaces": [f"ns-{ns}"]}
            docs.append(_object("HostGrant", f"ns-{ns}", None, spec))
    out = {}
    for doc in docs:
        meta = doc["metadata"]
        key = "/".join(p for p in (doc["kind"], meta.get("namespace"), meta["name"]) if p)
        out[key] = doc
    return out


def _observe(source: KubeSource, key: str, obj: dict[str, Any]) -> None:
    """What a list or watch event does with an object (kept, fingerprinted)."""
    target = Target(obj["kind"], None)
    source._remember(key, obj, target)


def _edit(source: KubeSource, key: str, **spec: Any) -> None:
    """A new generation of one object, as a watch event would bring it."""
    obj = copy.deepcopy(source.objects[key])
    obj["spec"].update(spec)
    obj["metadata"]["generation"] += 1
    _observe(source, key, obj)


def run(policies: int = 1000, issuers: int = 100, rounds: int = 5) -> dict[str, float]:
    logs.configure("critical")  # one log line per rebuild would be measured too
    store = PolicyStore()
    source = KubeSource(client.ApiClient(), store)
    for key, obj in cluster_objects(policies, issuers).items():
        _observe(source, key, obj)

    def timed() -> float:
        started = time.perf_counter()
        source.rebuild()
        return time.perf_counter() - started

    results = {"initial": timed()}
    serving = len(store.snapshot.policies)
    assert serving == policies, f"{serving} of {policies} policies serving"
    edits: dict[str, list[float]] = {"policy_edit": [], "issuer_edit": [], "no_change": []}
    for n in range(rounds):
        action = ["deny", "requireToken"][n % 2]
        _edit(source, "AuthzPolicy/ns-0/api-0", defaultAction=action)
        edits["policy_edit"].append(timed())
        _edit(source, "JWTIssuer/ns-0/idp-0", clockSkewSeconds=30 + n)
        edits["issuer_edit"].append(timed())
        edits["no_change"].append(timed())
    results.update({k: statistics.median(v) for k, v in edits.items()})
    store.close()
    return results


def main(argv: list[str]) -> int:
    policies, issuers, rounds = (int(a) for a in (argv + ["1000", "100", "5"][len(argv) :]))
    results = run(policies, issuers, rounds)
    print(f"rebuild with {policies} policies + {issuers} issuers (median of {rounds}):")
    for name, seconds in results.items():
        print(f"  {name:12} {seconds * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
