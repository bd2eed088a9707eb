"""The policies under test: one rule table rendered as authz YAML and as OPA Rego + data.

Both peers get the *same* 20 rules (first match wins) from `RULES`, so the comparison is
by construction, not by hand-kept twins. The realistic directory is one AuthzPolicy with
20 rules trusting five issuers (RS256, ES256, EdDSA, RS256, ES256); the scale variants
repeat that policy for N hosts and spread the policies over M issuers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.material import AUDIENCE, Issuer

NAMESPACE = "bench"
REALISTIC_HOST = "api.bench.local"
#: The allowed request: matched by rule 12 of 20, so rule matching costs what it would.
ALLOW_PATH = "/orders/12345"
#: Rule 11 wants `billing.read`, which the tokens do not carry: 403 insufficient_scope.
SCOPE_DENY_PATH = "/billing/invoices"
ISSUERS_PER_POLICY = 5


@dataclass(frozen=True)
class Rule:
    name: str
    paths: tuple[str, ...]
    methods: tuple[str, ...] = ()
    action: str = "requireToken"
    scopes_all: tuple[str, ...] = ()
    scopes_any: tuple[str, ...] = ()
    roles_any: tuple[str, ...] = ()
    claim_equals: tuple[str, str] | None = None


_READ, _WRITE = ("GET", "HEAD"), ("POST", "PUT", "PATCH", "DELETE")

RULES: tuple[Rule, ...] = (
    Rule("health", ("/healthz", "/readyz"), action="allowAnonymous"),
    Rule("metrics", ("/metrics",), action="deny"),
    Rule("docs", ("/docs/**",), _READ, action="allowAnonymous"),
    Rule("login", ("/auth/login", "/auth/refresh"), ("POST",), action="allowAnonymous"),
    Rule("admin", ("/admin/**",), roles_any=("admin",)),
    Rule("users-read", ("/users", "/users/{id}"), _READ, scopes_all=("users.read",)),
    Rule("users-write", ("/users", "/users/{id}"), _WRITE, scopes_all=("users.write",)),
    Rule("catalog-read", ("/products/**", "/categories/**"), _READ, scopes_all=("catalog.read",)),
    Rule(
        "catalog-write",
        ("/products/{id}",),
        ("POST", "PUT", "DELETE"),
        scopes_all=("catalog.write",),
        roles_any=("merchant", "admin"),
    ),
    Rule("carts", ("/carts/{id}/**",), scopes_all=("cart",)),
    Rule("billing", ("/billing/**",), ("GET",), scopes_all=("billing.read",)),
    Rule("orders-read", ("/orders", "/orders/{id}"), _READ, scopes_all=("orders.read",)),
    Rule("orders-write", ("/orders", "/orders/{id}"), _WRITE, scopes_all=("orders.write",)),
    Rule("order-items", ("/orders/{id}/items/**",), ("GET",), scopes_all=("orders.read",)),
    Rule("reports", ("/reports/**",), ("GET",), scopes_any=("reports.read", "admin")),
    Rule("search", ("/search",), ("GET",), scopes_any=("catalog.read", "orders.read")),
    Rule("webhooks", ("/webhooks/{name}",), ("POST",), claim_equals=("azp", "webhook-relay")),
    Rule("tenants", ("/tenants/{tenant}/**",), claim_equals=("tenant", "acme")),
    Rule("profile", ("/me",), ("GET",)),
    Rule("api", ("/api/**",), scopes_all=("api",)),
)


#: The request-condition variant (issue 12): five rules before `orders-read` that match the
#: allowed request's method and path but fail on a condition (the source address, a header,
#: the mTLS peer, the client certificate, a regex), so every allowed request evaluates them,
#: and conditions on `orders-read` itself that hold (the bench's CheckRequests come from
#: 127.0.0.1 without mTLS, as through Envoy on loopback).
CONDITIONS_BEFORE_ORDERS: tuple[dict[str, Any], ...] = (
    {"name": "orders-office", "match": {"ipBlocks": ["10.0.0.0/8", "172.16.0.0/12"]}},
    {"name": "orders-canary", "match": {"headers": [{"name": "x-canary", "present": True}]}},
    {"name": "orders-mesh", "match": {"principals": ["spiffe://cluster.local/ns/shop/sa/*"]}},
    {
        "name": "orders-partner",
        "match": {"clientCertificate": {"dnsSans": ["*.partners.example"]}},
    },
    {
        "name": "orders-beta",
        "match": {"headers": [{"name": "x-beta", "regex": "[a-f0-9]{8}"}]},
    },
)
ORDERS_CONDITIONS: dict[str, Any] = {
    "notPaths": ["/orders/internal/**"],
    "headers": [{"name": "authorization", "prefix": "Bearer "}],
    "ipBlocks": ["127.0.0.0/8", "::1/128"],
    "notIpBlocks": ["192.0.2.0/24"],
    "notPrincipals": ["spiffe://cluster.local/ns/shop/sa/batch"],
}


def _with_conditions(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        if rule["name"] != "orders-read":
            out.append(rule)
            continue
        for extra in CONDITIONS_BEFORE_ORDERS:
            match = {**rule["match"], **extra["match"]}
            out.append({**rule, "name": extra["name"], "match": match})
        out.append({**rule, "match": {**rule["match"], **ORDERS_CONDITIONS}})
    return out


# -- authz YAML ----------------------------------------------------------------------------


def _issuer_doc(issuer: Issuer) -> dict[str, Any]:
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": issuer.name, "namespace": NAMESPACE},
        "spec": {
            "issuer": issuer.iss,
            "jwks": issuer.jwks(),
            "algorithms": [issuer.alg],
            "clockSkewSeconds": 30,
            "claims": {"scopes": ["scope"], "roles": ["realm_access.roles"]},
        },
    }


def _rule_doc(rule: Rule) -> dict[str, Any]:
    match: dict[str, Any] = {"paths": list(rule.paths)}
    if rule.methods:
        match["methods"] = list(rule.methods)
    doc: dict[str, Any] = {"name": rule.name, "match": match}
    if rule.action != "requireToken":
        doc["action"] = rule.action
    if rule.scopes_all or rule.scopes_any:
        doc["requireScopes"] = {
            k: list(v) for k, v in (("allOf", rule.scopes_all), ("anyOf", rule.scopes_any)) if v
        }
    if rule.roles_any:
        doc["requireRoles"] = {"anyOf": list(rule.roles_any)}
    if rule.claim_equals:
        doc["claims"] = [{"path": rule.claim_equals[0], "equals": rule.claim_equals[1]}]
    return doc


def _policy_doc(
    name: str, host: str, issuers: Sequence[Issuer], *, conditions: bool = False
) -> dict[str, Any]:
    rules = [_rule_doc(r) for r in RULES]
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "targets": {"hosts": [host]},
            "issuers": [{"name": i.name} for i in issuers],
            "audiences": [AUDIENCE],
            "rules": _with_conditions(rules) if conditions else rules,
            "defaultAction": "deny",
            "response": {
                "headers": [
                    {"name": "x-auth-subject", "claim": "sub"},
                    {"name": "x-auth-issuer", "claim": "iss"},
                    {"name": "x-auth-scopes", "claim": "$scopes"},
                ],
                "stripAuthorization": True,
            },
        },
    }


def _write_docs(path: Path, docs: Sequence[dict[str, Any]]) -> None:
    # JSON is YAML; one document per line keeps a 1000-policy file quick to write.
    path.write_text("\n---\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class PolicyDir:
    """A written policy directory and the request that exercises it."""

    path: Path
    host: str
    issuer: Issuer  # whose token the allowed request carries
    policies: int
    issuers: int


def policy_issuers(index: int, issuers: Sequence[Issuer]) -> list[Issuer]:
    """The window of issuers policy `index` trusts: spreads policies over all issuers."""
    width = min(ISSUERS_PER_POLICY, len(issuers))
    return [issuers[(index + k) % len(issuers)] for k in range(width)]


def write_realistic(
    root: Path, issuers: Sequence[Issuer], *, conditions: bool = False
) -> PolicyDir:
    """One policy, 20 rules (25 with `conditions`), trusting every issuer given (the
    realistic case: five)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_docs(root / "issuers.yaml", [_issuer_doc(i) for i in issuers])
    doc = _policy_doc("shop", REALISTIC_HOST, issuers, conditions=conditions)
    _write_docs(root / "policies.yaml", [doc])
    return PolicyDir(root, REALISTIC_HOST, issuers[0], 1, len(issuers))


def write_scale(
    root: Path, issuers: Sequence[Issuer], policies: int, *, conditions: bool = False
) -> PolicyDir:
    """`policies` copies of the realistic policy on hosts svc-<i>.bench.local (with
    `conditions`: the request-condition variant of its rules)."""
    root.mkdir(parents=True, exist_ok=True)
    _write_docs(root / "issuers.yaml", [_issuer_doc(i) for i in issuers])
    docs = [
        _policy_doc(
            f"svc-{i}", f"svc-{i}.bench.local", policy_issuers(i, issuers), conditions=conditions
        )
        for i in range(policies)
    ]
    _write_docs(root / "policies.yaml", docs)
    target = policies // 2
    return PolicyDir(
        root,
        f"svc-{target}.bench.local",
        policy_issuers(target, issuers)[0],
        policies,
        len(issuers),
    )


# -- OPA Rego ------------------------------------------------------------------------------

REGO = """\
package envoy.authz

# Generated by tests/bench/policies.py from the same rule table as the authz policy:
# first matching rule wins; a token is verified with its issuer's JWKS (iss/aud/exp/nbf
# by io.jwt.decode_verify) and must carry the rule's scopes, roles and claim values.

import rego.v1

http := input.attributes.request.http

path := split(http.path, "?")[0]

method_ok(rule) if count(rule.methods) == 0

method_ok(rule) if http.method in rule.methods

matches(rule) if {
	method_ok(rule)
	some pattern in rule.globs
	glob.match(pattern, ["/"], path)
}

first := min({i | some i, rule in data.bench.rules; matches(rule)})

rule := data.bench.rules[first]

bearer := substring(http.headers.authorization, 7, -1) if {
	startswith(http.headers.authorization, "Bearer ")
}

claims := payload if {
	[_, unverified, _] := io.jwt.decode(bearer)
	jwks := data.bench.jwks[unverified.iss]
	constraints := {"cert": jwks, "iss": unverified.iss, "aud": data.bench.audience}
	[valid, _, payload] := io.jwt.decode_verify(bearer, constraints)
	valid
}

scopes := {s | some s in split(claims.scope, " ")}

roles := {r | some r in claims.realm_access.roles}

any_of(wanted, _) if count(wanted) == 0

any_of(wanted, have) if {
	some w in wanted
	w in have
}

claim_ok(rule) if not rule.claim

claim_ok(rule) if claims[rule.claim.path] == rule.claim.value

default allow := false

allow if rule.action == "allowAnonymous"

allow if {
	rule.action == "requireToken"
	claims
	every s in rule.scopes_all { s in scopes }
	any_of(rule.scopes_any, scopes)
	any_of(rule.roles_any, roles)
	claim_ok(rule)
}
"""


def _glob(path: str) -> str:
    """authz path syntax -> OPA glob: `{x}` is one segment, `{x=**}` any number."""
    parts = []
    for segment in path.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append("**" if segment.endswith("=**}") else "*")
        else:
            parts.append(segment)
    return "/".join(parts)


def opa_data(issuers: Sequence[Issuer]) -> dict[str, Any]:
    rules = []
    for rule in RULES:
        doc: dict[str, Any] = {
            "name": rule.name,
            "methods": list(rule.methods),
            "globs": [_glob(p) for p in rule.paths],
            "action": rule.action,
            "scopes_all": list(rule.scopes_all),
            "scopes_any": list(rule.scopes_any),
            "roles_any": list(rule.roles_any),
        }
        if rule.claim_equals:
            doc["claim"] = {"path": rule.claim_equals[0], "value": rule.claim_equals[1]}
        rules.append(doc)
    return {
        "bench": {
            "audience": AUDIENCE,
            "jwks": {i.iss: json.dumps(i.jwks()) for i in issuers},
            "rules": rules,
        }
    }


def write_opa(root: Path, issuers: Sequence[Issuer]) -> tuple[Path, Path]:
    """policy.rego and data.json for `opa run`."""
    root.mkdir(parents=True, exist_ok=True)
    rego, data = root / "policy.rego", root / "data.json"
    rego.write_text(REGO, encoding="utf-8")
    data.write_text(json.dumps(opa_data(issuers)), encoding="utf-8")
    return rego, data
