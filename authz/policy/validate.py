"""Check one policy document against the schema and the cross-field rules.

Errors name the object and the field path (`spec.rules[0].match.methods[1]`),
so a user can fix a file without reading our code.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator

from authz.policy import schema

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

# Where an object came from: the policy directory (files or a ConfigMap: written by whoever
# runs the authorizer) or the Kubernetes API (namespaced kinds: written by namespace users).
Source = Literal["files", "kubernetes"]


@dataclass(frozen=True, slots=True)
class PolicyObject:
    """A validated document: kind, identity and spec, plus where it came from.

    `created` is the cluster object's creationTimestamp (empty for files): the older of two
    policies claiming the same host serves. `refs` holds what the source read for the
    object's references (a ConfigMap's CA bundle), by field path."""

    kind: str
    namespace: str | None
    name: str
    spec: Mapping[str, Any]
    origin: str
    generation: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    source: Source = "files"
    created: str = ""
    refs: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """`Kind/namespace/name`, or `Kind/name` for cluster-scoped kinds."""
        if self.namespace is None:
            return f"{self.kind}/{self.name}"
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def tenant(self) -> bool:
        """A namespaced cluster object: its writers own one namespace, not the authorizer."""
        return self.source == "kubernetes" and self.namespace is not None


class PolicyError(ValueError):
    """A document that cannot be used, with every problem found in it."""

    def __init__(self, origin: str, key: str | None, problems: list[str]) -> None:
        self.origin = origin
        self.key = key  # None when the document does not even say which object it is
        self.problems = problems
        super().__init__(f"{origin}: {key or '<unnamed document>'}: " + "; ".join(problems))


def _strict(node: Any) -> Any:
    """Reject unknown fields in files, as `kubectl apply` does with strict field validation."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


_VALIDATORS = {
    kind: Draft202012Validator(_strict(copy.deepcopy(spec))) for kind, spec in schema.SPECS.items()
}


def _path(parts: Iterator[Any] | Any) -> str:
    out = "spec"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _count(obj: Mapping[str, Any], names: tuple[str, ...]) -> int:
    return sum(1 for n in names if n in obj)


def _on(obj: Mapping[str, Any], name: str) -> bool:
    """CEL `has(self.x) && self.x` for a boolean field."""
    return obj.get(name) is True


def _https_or_allowed(spec: Mapping[str, Any]) -> bool:
    if spec.get("fetch", {}).get("allowInsecureHttp") is True:
        return True
    urls = [spec[k] for k in ("jwksUri", "x509CertificatesUri", "discoveryUrl") if k in spec]
    if _on(spec, "discovery"):
        urls.append(spec["issuer"])
    return all(u.startswith("https://") for u in urls)


_KEY_SOURCES = (
    "jwks", "jwksFile", "jwksUri", "discoveryUrl", "publicKeys", "x509CertificatesUri",
    "hmacSecretFile", "hmacSecretRef",
)  # fmt: skip
_REMOTE = ("jwksUri", "x509CertificatesUri", "discoveryUrl")
_CLIENT_SECRETS = ("clientSecretFile", "clientSecretRef")
_PRIVATE_KEYS = ("privateKeyFile", "privateKeyRef")
_D = schema.FETCH_DEFAULTS
_L = schema.LOGIN_DEFAULTS
_Check = Callable[[Mapping[str, Any]], bool]


def _no(name: str) -> _Check:
    """CEL `!has(self.x)`."""
    return lambda node: name not in node


# The Python twin of every rule in schema.RULES, keyed by its message; an import-time
# check fails if a rule has no twin or a twin no rule, so the two cannot drift apart.
# (A rule without CEL has only this twin: the API server cannot check it.)
_CHECKS: dict[str, _Check] = {
    "exactly one key source must be set: jwks, jwksFile, jwksUri, discovery, discoveryUrl, "
    "publicKeys, x509CertificatesUri, hmacSecretFile or hmacSecretRef (none: introspection "
    "only)": lambda s: (
        (n := _count(s, _KEY_SOURCES) + _on(s, "discovery")) == 1
        or (n == 0 and "introspection" in s)
    ),
    "hmacSecretFile and hmacSecretRef need algorithms listing only HS256, HS384 or HS512": lambda s: (
        ("hmacSecretFile" not in s and "hmacSecretRef" not in s)
        or ("algorithms" in s and all(a.startswith("HS") for a in s["algorithms"]))
    ),
    "tenants and a {tenant} placeholder in issuer go together": lambda s: (
        ("tenants" in s) == ("{tenant}" in s["issuer"])
    ),
    "discovery and discoveryUrl need a fixed issuer; for an issuer template set jwksUri": (
        lambda s: not ((_on(s, "discovery") or "discoveryUrl" in s) and "tenants" in s)
    ),
    "key URLs (jwksUri, x509CertificatesUri, discoveryUrl, the discovery issuer) must use "
    "https unless fetch.allowInsecureHttp is true": _https_or_allowed,
    "fetch applies only to remote key sources: jwksUri, discovery, discoveryUrl or "
    "x509CertificatesUri": (
        lambda s: "fetch" not in s or _count(s, _REMOTE) > 0 or _on(s, "discovery")
    ),
    "tenantClaim needs tenants": lambda s: "tenantClaim" not in s or "tenants" in s,
    "set at most one of fetch.caFile, fetch.caBundleRef": lambda f: (
        "caFile" not in f or "caBundleRef" not in f
    ),
    "a JWTIssuer in the cluster fetches keys over https only: fetch.allowInsecureHttp is "
    "for policy files and ClusterJWTIssuers": lambda f: not _on(f, "allowInsecureHttp"),
    "fetch.caFile reads the authorizer's filesystem: a JWTIssuer in the cluster names a "
    "ConfigMap with fetch.caBundleRef": _no("caFile"),
    "caBundleRef.namespace is for ClusterJWTIssuers: a JWTIssuer reads ConfigMaps in its "
    "own namespace": _no("namespace"),
    "minRefreshSeconds must not exceed maxRefreshSeconds": lambda f: (
        f.get("minRefreshSeconds", _D["minRefreshSeconds"])
        <= f.get("maxRefreshSeconds", _D["maxRefreshSeconds"])
    ),
    "exactly one of pem, file must be set": lambda k: _count(k, ("pem", "file")) == 1,
    "exactly one of header, cookie, query must be set": lambda t: (
        _count(t, ("header", "cookie", "query")) == 1
    ),
    "at least one target must be set: hosts, contextExtensions or workloadSelector": lambda t: (
        _count(t, ("hosts", "contextExtensions", "workloadSelector")) > 0
    ),
    "requireScopes, requireRoles and claims need action requireToken": lambda r: (
        r.get("action", "requireToken") == "requireToken"
        or _count(r, ("requireScopes", "requireRoles", "claims")) == 0
    ),
    schema.CLAIM_TYPED_MESSAGE: lambda c: (
        _count(c, ("present", "regex", "maxAgeSeconds")) + ("atLeast" in c or "atMost" in c) <= 1
    ),
    schema.CLAIM_OPERATOR_MESSAGE: lambda c: (
        _count(c, ("equals", "in", "present", "regex", "contains", "maxAgeSeconds"))
        + ("atLeast" in c or "atMost" in c)
        == 1
    ),
    schema.HEADER_OPERATOR_MESSAGE: lambda h: (
        _count(h, ("present", "equals", "in", "prefix", "regex")) == 1
    ),
    "remoteIpBlocks and notRemoteIpBlocks need xffNumTrustedHops": lambda s: (
        "xffNumTrustedHops" in s
        or not any(
            _count(r.get("match", {}), ("remoteIpBlocks", "notRemoteIpBlocks")) for r in s["rules"]
        )
    ),
    "issuers and audiences do not apply to deny rules": lambda r: (
        r.get("action") != "deny" or _count(r, ("issuers", "audiences")) == 0
    ),
    schema.FRAMING_MESSAGE: lambda h: h["name"].lower() not in schema.FRAMING_HEADERS,
    schema.DENY_STATUS_MESSAGE: lambda d: (
        ("status" not in d or 300 <= d["status"] < 400)
        if "redirect" in d
        else ("status" not in d or d["status"] >= 400)
    ),
    "rules with requireDPoP need the policy's dpop block": lambda s: (
        "dpop" in s or not any(_on(r, "requireDPoP") for r in s["rules"])
    ),
    "introspection.endpoint must use https unless introspection.allowInsecureHttp is true": (
        lambda i: i["endpoint"].startswith("https://") or _on(i, "allowInsecureHttp")
    ),
    "client_secret_basic and client_secret_post need exactly one of clientSecretFile, "
    "clientSecretRef": lambda a: (
        a["method"] in ("private_key_jwt", "none") or _count(a, _CLIENT_SECRETS) == 1
    ),
    "private_key_jwt needs exactly one of privateKeyFile, privateKeyRef": lambda a: (
        a["method"] != "private_key_jwt" or _count(a, _PRIVATE_KEYS) == 1
    ),
    "a client secret goes with client_secret_basic or client_secret_post, a private key "
    "with private_key_jwt": lambda a: (
        _count(a, _CLIENT_SECRETS if a["method"] == "private_key_jwt" else _PRIVATE_KEYS) == 0
    ),
    "method none sends no client credentials: no clientId, clientSecretFile or "
    "clientSecretRef": lambda a: (
        a["method"] != "none" or _count(a, (*_CLIENT_SECRETS, "clientId")) == 0
    ),
    "clientId is required unless method is none": lambda a: (
        a["method"] == "none" or "clientId" in a
    ),
    "signingAlgorithm, keyId and assertionAudience apply to private_key_jwt only": lambda a: (
        a["method"] == "private_key_jwt"
        or _count(a, ("signingAlgorithm", "keyId", "assertionAudience")) == 0
    ),
    "an entry names a jti, a subject or an issuer": lambda e: (
        _count(e, ("jti", "subject", "issuer")) > 0
    ),
    "an entry needs issuedBefore (a jti entry: issuedBefore or expiresAt)": lambda e: (
        "issuedBefore" in e or ("jti" in e and "expiresAt" in e)
    ),
    "expiresAt applies to jti entries only": lambda e: "expiresAt" not in e or "jti" in e,
    "a JWTIssuer in the cluster calls its introspection endpoint over https only: "
    "introspection.allowInsecureHttp is for policy files and ClusterJWTIssuers": lambda i: (
        not _on(i, "allowInsecureHttp")
    ),
    "introspection.caFile reads the authorizer's filesystem: a JWTIssuer in the cluster "
    "verifies its introspection endpoint with the system CAs": _no("caFile"),
    "login needs exactly one client credential: clientSecretFile, clientSecretRef, "
    "privateKeyFile or privateKeyRef": lambda g: (
        _count(g, ("clientSecretFile", "clientSecretRef", "privateKeyFile", "privateKeyRef")) == 1
    ),
    "clientAuthentication private_key_jwt goes with privateKeyFile or privateKeyRef, "
    "the client_secret methods with a secret": lambda g: (
        "clientAuthentication" not in g
        or (g["clientAuthentication"] == "private_key_jwt")
        == _count(g, ("privateKeyFile", "privateKeyRef"))
        > 0
    ),
    "login.scopes must include openid": lambda g: "openid" in g.get("scopes", ["openid"]),
    "login.callbackPath, logoutPath and loginPath must differ": lambda g: (
        len({g.get("callbackPath", _L["callbackPath"]), g.get("logoutPath", _L["logoutPath"])}) == 2
        and g.get("loginPath")
        not in (g.get("callbackPath", _L["callbackPath"]), g.get("logoutPath", _L["logoutPath"]))
    ),
    "login.session needs exactly one of keysFile, keysRef": lambda g: (
        _count(g, ("keysFile", "keysRef")) == 1
    ),
    "login.session.idleTimeoutSeconds must not exceed absoluteTimeoutSeconds": lambda g: (
        g.get("idleTimeoutSeconds", _L["idleTimeoutSeconds"])
        <= g.get("absoluteTimeoutSeconds", _L["absoluteTimeoutSeconds"])
    ),
}
if set(_CHECKS) != {message for *_, message in schema.RULES}:
    raise AssertionError("validate._CHECKS and schema.RULES are out of step")


def _nodes(spec: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The objects at a RULES path (`spec.rules[].claims[]`) with their concrete paths.

    Absent fields yield nothing, as a CRD rule on an absent field does not run.
    """
    nodes: list[tuple[str, Any]] = [("spec", spec)]
    for part in path.split(".")[1:]:
        name, many = (part[:-2], True) if part.endswith("[]") else (part, False)
        found: list[tuple[str, Any]] = []
        for where, node in nodes:
            if name not in node:
                continue
            if many:
                found.extend((f"{where}.{name}[{i}]", v) for i, v in enumerate(node[name]))
            else:
                found.append((f"{where}.{name}", node[name]))
        nodes = found
    return iter(nodes)


def _cross_field(kind: str, spec: Mapping[str, Any], source: Source) -> list[str]:
    """The CEL rules of `schema.RULES`, in Python, with the same messages."""
    families = schema.rule_families(kind, cluster=source == "kubernetes")
    problems: list[str] = []
    for rule_family, path, _rule, message in schema.RULES:
        if rule_family not in families:
            continue
        check = _CHECKS[message]
        problems.extend(
            f"{where}: {message}" for where, node in _nodes(spec, path) if not check(node)
        )
    return problems


def validate_document(doc: Any, origin: str, source: Source = "files") -> PolicyObject:
    """Turn one YAML/JSON document into a PolicyObject, or raise PolicyError naming every problem.
    `source` decides which rules apply (the CRDs' rules for cluster objects)."""
    if not isinstance(doc, dict):
        raise PolicyError(origin, None, ["a policy document must be a mapping"])
    raw_kind = doc.get("kind")
    # Only a known string goes into the set lookups (a YAML mapping is unhashable).
    kind = raw_kind if isinstance(raw_kind, str) and raw_kind in schema.KINDS else None
    raw_meta = doc.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = meta.get("name")
    namespace = None if kind in schema.CLUSTER_SCOPED else meta.get("namespace", "default")
    key: str | None = None
    if kind is not None and isinstance(name, str) and isinstance(namespace, (str, type(None))):
        key = f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
    problems: list[str] = []
    if doc.get("apiVersion") != schema.API_VERSION:
        problems.append(f"apiVersion: must be {schema.API_VERSION}, got {doc.get('apiVersion')!r}")
    if kind is None:
        problems.append(f"kind: must be one of {', '.join(schema.KINDS)}, got {raw_kind!r:.64}")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            "metadata.name: must be a DNS subdomain name (lower case, digits, '-', '.')"
        )
    if namespace is not None and (not isinstance(namespace, str) or not _NAME.match(namespace)):
        problems.append("metadata.namespace: must be a DNS label")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        problems.append("spec: required, must be a mapping")
    if problems or not isinstance(spec, dict):
        raise PolicyError(origin, key, problems)
    assert isinstance(kind, str) and isinstance(name, str)
    for error in sorted(_VALIDATORS[kind].iter_errors(spec), key=lambda e: list(e.absolute_path)):
        problems.append(f"{_path(error.absolute_path)}: {_message(error)}")
    if not problems:
        problems.extend(_cross_field(kind, spec, source))
    if problems:
        raise PolicyError(origin, key, problems)
    labels = meta.get("labels")
    generation = meta.get("generation")
    created = meta.get("creationTimestamp") if source == "kubernetes" else None
    return PolicyObject(
        kind,
        namespace,
        name,
        spec,
        origin,
        generation if isinstance(generation, int) else 0,
        labels if isinstance(labels, dict) else {},
        source,
        created if isinstance(created, str) else "",
    )


def _message(error: Any) -> str:
    """jsonschema messages echo whole values; keep them short and say what is expected."""
    validator = error.validator
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown field(s) {', '.join(extra)}; allowed: {allowed}"
    if validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if validator == "type":
        return f"must be of type {error.validator_value}, got {type(error.instance).__name__}"
    if validator == "required":
        return str(error.message).replace("is a required property", "is required")
    return str(error.message)
