"""Valid specs -> compiled issuers and policies (keys parsed, matchers and regexes built).

All the work that can be done once happens here, so the Check path only walks
prepared structures. Errors are per object; one bad object never blocks the rest.
"""

from __future__ import annotations

import datetime
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from authz.introspection.introspector import IntrospectionSettings
from authz.introspection.manager import IntrospectionManager
from authz.keys.client_auth import (
    ClientAuth,
    ClientAuthError,
    FileSecret,
    InlineSecret,
    Method,
    Secret,
)
from authz.keys.fetch import tls_context
from authz.keys.jwk import JWKSError, KeySet, NoUsableKeys, parse_jwks
from authz.keys.provider import KeyProvider, StaticKeys
from authz.keys.remote import KeyManager
from authz.keys.sources import (
    FetchSettings,
    RemoteSource,
    discovery_url,
    hmac_key_set,
    pem_key_set,
    url_problem,
)
from authz.policy import schema, tenancy
from authz.policy.advice import policy_warnings
from authz.policy.claims import ClaimCondition, typed_key
from authz.policy.compile_login import LoginError, compile_login, login_issuer_key
from authz.policy.deny import DenyResponse, DenyWith
from authz.policy.issuer import BEARER, ClaimPath, CompiledIssuer, TokenSource
from authz.policy.matchers import (
    MatchError,
    compile_conditions,
    host_matcher,
    host_problems,
    path_matcher,
)
from authz.policy.patterns import LinearPattern, PatternError, PatternSet
from authz.policy.possession import (
    DPOP_ALGORITHMS,
    DPOP_DEFAULTS,
    INTERNAL_TOKEN_HEADER,
    INTERNAL_TOKEN_LIFETIME,
    ClientCertificateSettings,
    DPoPSettings,
    InternalTokenSpec,
)
from authz.policy.revocation import SKEW_MARGIN, RevocationList, RevokedEntry
from authz.policy.snapshot import (
    DEFAULT_HEADERS,
    CompiledPolicy,
    CompiledRule,
    HeaderFromClaim,
    IntrospectionRoute,
    Requirement,
    ResponseSpec,
)
from authz.policy.validate import PolicyObject

# Where the cluster source puts the PEM text of `spec.fetch.caBundleRef` (PolicyObject.refs).
CA_BUNDLE_REF = "fetch.caBundleRef"


class CompileError(ValueError):
    """A valid-looking object that cannot be used (unreadable key file, bad regex...)."""


def claim_path(text: str) -> ClaimPath:
    """`realm_access.roles` -> ("realm_access", "roles"); `a\\.b` keeps the dot in one name."""
    parts = [p.replace("\0", ".") for p in text.replace("\\.", "\0").split(".")]
    if any(not p for p in parts):
        raise CompileError(f"claim path {text!r} has an empty name")
    return tuple(parts)


# Where the cluster source puts the introspection client secret (or private key) that
# `clientSecretRef` / `privateKeyRef` names (PolicyObject.refs).
CLIENT_SECRET_REF = "introspection.clientAuth.secret"  # noqa: S105  (a field name)


def compile_issuer(
    obj: PolicyObject, keys: KeyManager, introspection: IntrospectionManager | None = None
) -> CompiledIssuer:
    """Compile an issuer; remote key sources come from (and are kept by) `keys`, its
    introspector (if it introspects) from `introspection` (a manager of its own if None)."""
    spec = obj.spec
    algorithms = frozenset(spec.get("algorithms", schema.ASYMMETRIC_ALGORITHMS))
    claims = spec.get("claims", {})
    tenant_of = {spec["issuer"].replace("{tenant}", t): t for t in spec.get("tenants", ())}
    names = tuple(tenant_of)
    required = spec.get("requiredClaims", ())
    fields: dict[str, Any] = {
        "audiences": tuple(spec.get("audiences", ())),
        "audience_claim": spec.get("audienceClaim", "aud"),
        "clock_skew": spec.get("clockSkewSeconds", 60),
        "max_lifetime": spec.get("maxLifetimeSeconds"),
        "require_exp": spec.get("requireExp", True),
        "require_typ": spec.get("requireTyp"),
        "require_dpop": spec.get("requireDPoP", False),
        "token_sources": tuple(_token_source(s) for s in spec.get("tokenSources", ())) or (BEARER,),
        "scope_claims": tuple(claim_path(p) for p in claims.get("scopes", ("scope", "scp"))),
        "role_claims": tuple(claim_path(p) for p in claims.get("roles", ())),
        "iss_values": names,
        "required_claims": tuple(
            claim_condition(c, f"spec.requiredClaims[{i}]") for i, c in enumerate(required)
        ),
        "tenant_claim": claim_path(spec["tenantClaim"]) if "tenantClaim" in spec else None,
        "tenant_of": tenant_of if "tenantClaim" in spec else {},
    }
    introspect = spec.get("introspection")
    introspector = None
    if introspect is not None:
        settings = introspection_settings(
            introspect, Path(obj.origin).parent, obj.refs, public_only=obj.tenant
        )
        manager = introspection if introspection is not None else _default_introspection()
        introspector = manager.introspector(obj.key, settings)
        fields["introspection"] = introspector
        fields["introspect_jwts"] = introspect.get("tokens") == "all" or not _has_keys(spec)
    if not _has_keys(spec):  # an issuer of opaque tokens only: no key verifies anything
        provider: KeyProvider = StaticKeys(KeySet.empty(), "none (introspection only)")
        fields["has_keys"] = False
    else:
        # Last, once nothing else can fail: asking for a remote source starts its fetching.
        provider = _key_provider(obj, algorithms, keys)
    return CompiledIssuer(
        id=obj.key, issuer=spec["issuer"], keys=provider, algorithms=algorithms, **fields
    )


_KEY_SOURCE_FIELDS = (
    "jwks", "jwksFile", "jwksUri", "discoveryUrl", "publicKeys", "x509CertificatesUri",
    "hmacSecretFile", "hmacSecretRef",
)  # fmt: skip


def _has_keys(spec: Mapping[str, Any]) -> bool:
    return spec.get("discovery") is True or any(k in spec for k in _KEY_SOURCE_FIELDS)


_DEFAULT_INTROSPECTION: list[IntrospectionManager] = []


def _default_introspection() -> IntrospectionManager:
    """For builds without a manager (tests, `authz lint`): one per process, so compiling
    an issuer twice does not start a second pool."""
    if not _DEFAULT_INTROSPECTION:
        _DEFAULT_INTROSPECTION.append(IntrospectionManager())
    return _DEFAULT_INTROSPECTION[0]


def introspection_settings(
    spec: Mapping[str, Any], base: Path, refs: Mapping[str, str], *, public_only: bool = False
) -> IntrospectionSettings:
    """An issuer's `introspection` block; raises CompileError for unusable credentials.
    `public_only`: a tenant's endpoint may not resolve to loopback or link-local addresses."""

    def get(name: str) -> int:
        value: int = spec.get(name, schema.INTROSPECTION_DEFAULTS[name])
        return value

    auth = _client_auth(spec["clientAuth"], base, refs)
    try:
        auth.check()
    except ClientAuthError as exc:
        raise CompileError(f"spec.introspection.clientAuth: {exc}") from exc
    ca_pem = None
    if "caFile" in spec:
        try:
            ca_pem = _read(base / spec["caFile"], "introspection.caFile").decode("ascii")
            tls_context(ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise CompileError(f"spec.introspection.caFile: not a PEM CA bundle: {exc}") from exc
    hint = spec.get("tokenTypeHint", "access_token")
    return IntrospectionSettings(
        endpoint=spec["endpoint"],
        auth=auth,
        token_type_hint=hint or None,
        cache_seconds=get("cacheSeconds"),
        negative_cache_seconds=get("negativeCacheSeconds"),
        wait=get("waitMillis") / 1000,
        timeout=get("timeoutSeconds"),
        max_in_flight=get("maxInFlight"),
        failure_threshold=get("failureThreshold"),
        open_seconds=get("openSeconds"),
        ca_pem=ca_pem,
        allow_http=spec.get("allowInsecureHttp", False),
        public_only=public_only,
    )


def _client_auth(spec: Mapping[str, Any], base: Path, refs: Mapping[str, str]) -> ClientAuth:
    method = cast(Method, spec["method"])
    secret: Secret | None = None
    if CLIENT_SECRET_REF in refs:  # the cluster source read the Secret a *Ref names
        secret = InlineSecret(refs[CLIENT_SECRET_REF].encode("utf-8", "surrogateescape"))
    elif "clientSecretRef" in spec or "privateKeyRef" in spec:
        where = "clientSecretRef" if "clientSecretRef" in spec else "privateKeyRef"
        raise CompileError(
            f"spec.introspection.clientAuth.{where}: Kubernetes Secrets are read in cluster "
            "mode only"
        )
    elif "clientSecretFile" in spec:
        secret = FileSecret(base / spec["clientSecretFile"])
    elif "privateKeyFile" in spec:
        secret = FileSecret(base / spec["privateKeyFile"])
    return ClientAuth(
        method=method,
        client_id=spec.get("clientId", ""),
        secret=secret,
        algorithm=spec.get("signingAlgorithm"),
        key_id=spec.get("keyId"),
        audience=spec.get("assertionAudience"),
    )


def compile_revocation(obj: PolicyObject) -> RevocationList:
    """A TokenRevocation's entries with their times read; raises CompileError."""
    spec = obj.spec
    lifetime = spec.get("maxTokenLifetimeSeconds", schema.DEFAULT_MAX_TOKEN_LIFETIME)
    entries = []
    for i, entry in enumerate(spec.get("entries", ())):
        where = f"spec.entries[{i}]"
        issued_before = _instant(entry, "issuedBefore", where)
        expires_at = _instant(entry, "expiresAt", where)
        lapses = []
        if expires_at is not None:
            lapses.append(expires_at)
        if issued_before is not None:
            lapses.append(issued_before + lifetime)
        entries.append(
            RevokedEntry(
                source=obj.key,
                index=i,
                lapses_at=max(lapses) + SKEW_MARGIN,
                jti=entry.get("jti"),
                subject=entry.get("subject"),
                issuer=entry.get("issuer"),
                # A jti names one token: its time only says when the entry lapses.
                issued_before=None if "jti" in entry else issued_before,
            )
        )
    return RevocationList(obj.key, tuple(entries))


def _instant(entry: Mapping[str, Any], name: str, where: str) -> float | None:
    """An RFC 3339 time as epoch seconds; a time without an offset is refused."""
    text = entry.get(name)
    if text is None:
        return None
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CompileError(f"{where}.{name}: {text[:64]!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise CompileError(f"{where}.{name}: {text[:64]!r} has no UTC offset (add Z)")
    return value.timestamp()


def _key_provider(obj: PolicyObject, algorithms: frozenset[str], keys: KeyManager) -> KeyProvider:
    """The issuer's keys: parsed now for static sources, a managed remote source otherwise."""
    spec = obj.spec
    base = Path(obj.origin).parent
    remote = _remote_source(spec, algorithms)
    if remote is not None:
        return keys.remote(obj.key, remote, _fetch_settings(obj))
    if "hmacSecretRef" in spec:  # the cluster source replaces it with the Secret's value
        raise CompileError("spec.hmacSecretRef: Kubernetes Secrets are read in cluster mode only")
    where = next(k for k in ("jwks", "jwksFile", "publicKeys", "hmacSecretFile") if k in spec)
    try:
        return _static_keys(spec, where, base, algorithms)
    except NoUsableKeys as exc:
        if where == "jwks":  # written in the spec itself: a mistake to correct, not an answer
            raise CompileError(f"spec.{where}: {exc}") from exc
        # A key file emptied, deleted or holding only keys authz refuses: no key (revocation).
        return StaticKeys(KeySet.empty(), f"{where}", (f"spec.{where}: {exc}",))
    except JWKSError as exc:
        raise CompileError(f"spec.{where}: {exc}") from exc


def _static_keys(
    spec: Mapping[str, Any], where: str, base: Path, algorithms: frozenset[str]
) -> StaticKeys:
    """Keys fixed in the spec or in files. A key file that was deleted or emptied is how an
    operator removes a key: that means no key (NoUsableKeys), not "keep the last one"."""
    if where == "jwks":
        key_set, warnings = parse_jwks(spec["jwks"], algorithms)
        return StaticKeys(key_set, "jwks (inline)", warnings)
    if where == "jwksFile":
        path = base / spec["jwksFile"]
        text = _read_key_file(path, where)
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise CompileError(f"spec.jwksFile: cannot read {path}: {exc}") from exc
        key_set, warnings = parse_jwks(doc, algorithms)
        return StaticKeys(key_set, f"jwksFile {path}", warnings)
    if where == "publicKeys":
        entries: list[tuple[str | None, str | bytes]] = []
        removed: list[str] = []
        for i, k in enumerate(spec["publicKeys"]):
            if "pem" in k:
                entries.append((k.get("kid"), k["pem"]))
                continue
            try:
                entries.append((k.get("kid"), _read_key_file(base / k["file"], where)))
            except NoUsableKeys as exc:
                removed.append(f"[{i}]: {exc}")
        if not entries:
            raise NoUsableKeys("; ".join(removed))
        return StaticKeys(pem_key_set(entries, algorithms), "publicKeys", removed)
    path = base / spec["hmacSecretFile"]
    secret = _read_key_file(path, where)
    # One trailing newline, as `echo` and editors add it, is not part of the secret.
    secret = (
        secret.removesuffix(b"\r\n") if secret.endswith(b"\r\n") else secret.removesuffix(b"\n")
    )
    return StaticKeys(hmac_key_set(secret, algorithms), f"hmacSecretFile {path}")


def _read_key_file(path: Path, where: str) -> bytes:
    """A key file's bytes; a missing or blank one is NoUsableKeys (the key was removed)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NoUsableKeys(f"{path} does not exist: no key is trusted") from None
    except OSError as exc:
        raise CompileError(f"spec.{where}: cannot read {path}: {exc}") from exc
    if not data.strip():
        raise NoUsableKeys(f"{path} is empty: no key is trusted")
    return data


def _remote_source(spec: Mapping[str, Any], algorithms: frozenset[str]) -> RemoteSource | None:
    allow_http = spec.get("fetch", {}).get("allowInsecureHttp", False)
    issuer = spec["issuer"]
    if spec.get("discovery") is True:
        source = RemoteSource("discovery", discovery_url(issuer), issuer, algorithms)
        where = "spec.issuer"
    elif "discoveryUrl" in spec:
        source = RemoteSource("discovery", spec["discoveryUrl"], issuer, algorithms)
        where = "spec.discoveryUrl"
    elif "jwksUri" in spec:
        source = RemoteSource("jwksUri", spec["jwksUri"], issuer, algorithms)
        where = "spec.jwksUri"
    elif "x509CertificatesUri" in spec:
        source = RemoteSource("x509", spec["x509CertificatesUri"], issuer, algorithms)
        where = "spec.x509CertificatesUri"
    else:
        return None
    problem = url_problem(source.url, allow_http)
    if problem is not None:
        raise CompileError(f"{where}: {problem}")
    return source


def _fetch_settings(obj: PolicyObject) -> FetchSettings:
    """How the issuer's keys are fetched. A namespaced cluster issuer's fetches never
    connect to loopback, link-local or unspecified addresses: its writer must not be able
    to probe the authorizer's own host or the cloud metadata service."""
    spec = obj.spec.get("fetch", {})

    def get(name: str) -> int:
        value: int = spec.get(name, schema.FETCH_DEFAULTS[name])
        return value

    return FetchSettings(
        refresh=get("refreshSeconds"),
        min_refresh=get("minRefreshSeconds"),
        max_refresh=get("maxRefreshSeconds"),
        cooldown=get("unknownKidCooldownSeconds"),
        wait=get("unknownKidWaitMillis") / 1000,
        max_stale=get("maxStaleSeconds"),
        timeout=get("timeoutSeconds"),
        ca_pem=_ca_bundle(obj),
        allow_http=spec.get("allowInsecureHttp", False),
        public_only=obj.tenant,
    )


def _ca_bundle(obj: PolicyObject) -> str | None:
    """The PEM CA bundle of `fetch.caFile` (read here) or `fetch.caBundleRef` (read by the
    cluster source), checked to be one; None: the system CAs."""
    spec = obj.spec.get("fetch", {})
    if "caFile" in spec:
        where = "fetch.caFile"
        try:
            pem = _read(Path(obj.origin).parent / spec["caFile"], where).decode("ascii")
        except UnicodeDecodeError as exc:
            raise CompileError(f"spec.{where}: not a PEM CA bundle: {exc}") from exc
    elif "caBundleRef" in spec:
        where = CA_BUNDLE_REF
        found = obj.refs.get(CA_BUNDLE_REF)
        if found is None:
            raise CompileError(f"spec.{where}: ConfigMaps are read in cluster mode only")
        pem = found
    else:
        return None
    try:
        tls_context(pem)
    except (ssl.SSLError, ValueError) as exc:
        raise CompileError(f"spec.{where}: not a PEM CA bundle: {exc}") from exc
    return pem


def _read(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CompileError(f"spec.{where}: cannot read {path}: {exc}") from exc


def _token_source(spec: Mapping[str, Any]) -> TokenSource:
    if "header" in spec:
        return TokenSource(
            "header", spec["header"]["name"].lower(), spec["header"].get("prefix", "")
        )
    if "cookie" in spec:
        return TokenSource("cookie", spec["cookie"]["name"])
    return TokenSource("query", spec["query"]["name"])


def _requirement(spec: Mapping[str, Any] | None) -> Requirement:
    spec = spec or {}
    return Requirement(frozenset(spec.get("allOf", ())), frozenset(spec.get("anyOf", ())))


def claim_condition(spec: Mapping[str, Any], where: str) -> ClaimCondition:
    """A claim condition with typed values (see policy.claims)."""
    path = claim_path(spec["path"])
    name = spec["path"]
    if "equals" in spec:
        value = spec["equals"]
        return ClaimCondition(
            path, "equals", frozenset([typed_key(value)]), text=f"{name} == {_json(value)}"
        )
    if "in" in spec:
        values = frozenset(typed_key(v) for v in spec["in"])
        shown = ", ".join(_json(v) for v in spec["in"])
        return ClaimCondition(path, "in", values, text=f"{name} in [{shown}]")
    if "contains" in spec:
        value = spec["contains"]
        return ClaimCondition(
            path, "contains", frozenset([typed_key(value)]), text=f"{name} contains {_json(value)}"
        )
    if "present" in spec:
        word = "present" if spec["present"] else "absent"
        return ClaimCondition(path, "present", present=spec["present"], text=f"{name} {word}")
    if "maxAgeSeconds" in spec:
        age = spec["maxAgeSeconds"]
        return ClaimCondition(path, "maxAge", max_age=age, text=f"{name} at most {age}s ago")
    if "atLeast" in spec or "atMost" in spec:
        low, high = spec.get("atLeast"), spec.get("atMost")
        bounds = [f">= {_json(low)}"] if low is not None else []
        bounds += [f"<= {_json(high)}"] if high is not None else []
        return ClaimCondition(
            path, "range", at_least=low, at_most=high, text=f"{name} {' and '.join(bounds)}"
        )
    try:
        pattern = LinearPattern(spec["regex"])
    except PatternError as exc:
        raise CompileError(f"{where}.regex: invalid regular expression: {exc}") from exc
    return ClaimCondition(path, "regex", pattern=pattern, text=f"{name} ~ {spec['regex']!r}")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What a rule's meaning takes from its policy: the namespace its issuer references
    resolve in, and how X-Forwarded-For is read. Part of the shared-rule key."""

    namespace: str | None = None
    trusted_hops: int | None = None


def _rule(spec: Mapping[str, Any], index: int, context: RuleContext) -> CompiledRule:
    """Compiled rules are immutable, so identical rules (policies stamped from one template
    share most of theirs) are compiled once and shared: memory scales with distinct rules."""
    key = (json.dumps(spec, sort_keys=True), index, context)
    rule = _RULES.get(key)
    if rule is None:
        rule = _compile_rule(spec, index, context)
        if len(_RULES) >= _RULES_MAX:
            _RULES.clear()
        _RULES[key] = rule
    return rule


def _rule_context(spec: Mapping[str, Any], namespace: str | None, hops: int | None) -> RuleContext:
    """Only what the rule uses, so rules stamped from one template still share one object."""
    match = spec.get("match", {})
    remote = "remoteIpBlocks" in match or "notRemoteIpBlocks" in match
    return RuleContext(namespace if "issuers" in spec else None, hops if remote else None)


_RULES: dict[tuple[str, int, RuleContext], CompiledRule] = {}
_PATTERN_SETS: dict[tuple[LinearPattern, ...], PatternSet] = {}


def _pattern_set(patterns: list[LinearPattern]) -> PatternSet | None:
    """The policy's glob patterns as one set; policies stamped from one template share it."""
    if not patterns:
        return None
    key = tuple(dict.fromkeys(patterns))
    found = _PATTERN_SETS.get(key)
    if found is None:
        found = PatternSet(list(key))
        if len(_PATTERN_SETS) >= _RULES_MAX:
            _PATTERN_SETS.clear()
        _PATTERN_SETS[key] = found
    return found


_RULES_MAX = 20_000


def _compile_rule(spec: Mapping[str, Any], index: int, context: RuleContext) -> CompiledRule:
    match = spec.get("match", {})
    where = f"spec.rules[{index}]"
    try:
        paths = path_matcher(match.get("paths", ()), match.get("pathPrefixes", ()))
        conditions = compile_conditions(match, context.trusted_hops)
    except MatchError as exc:
        raise CompileError(f"{where}.match: {exc}") from exc
    except PatternError as exc:
        raise CompileError(f"{where}.match: invalid regular expression: {exc}") from exc
    issuers = spec.get("issuers")
    return CompiledRule(
        name=spec.get("name", f"rule-{index}"),
        action=spec.get("action", "requireToken"),
        methods=frozenset(match["methods"]) if match.get("methods") else None,
        paths=paths,
        hosts=host_matcher(match.get("hosts", ())),
        scopes=_requirement(spec.get("requireScopes")),
        roles=_requirement(spec.get("requireRoles")),
        claims=tuple(
            claim_condition(c, f"{where}.claims[{j}]") for j, c in enumerate(spec.get("claims", ()))
        ),
        require_dpop=spec.get("requireDPoP", False),
        conditions=conditions,
        issuers=frozenset(schema.issuer_key(r, context.namespace) for r in issuers)
        if issuers
        else None,
        audiences=frozenset(spec["audiences"]) if spec.get("audiences") else None,
        deny_with=deny_with(spec.get("denyWith")),
        login=spec.get("login", True),
    )


def deny_with(spec: Mapping[str, Any] | None) -> DenyWith | None:
    if not spec:
        return None
    return DenyWith(
        _deny_response(spec.get("unauthenticated")), _deny_response(spec.get("unauthorized"))
    )


def _deny_response(spec: Mapping[str, Any] | None) -> DenyResponse | None:
    if spec is None:
        return None
    redirect = spec.get("redirect", {})
    return DenyResponse(
        status=spec.get("status", 302 if redirect else None),
        body=spec.get("body"),
        headers=tuple((h["name"].lower(), h["value"]) for h in spec.get("headers", ())),
        redirect=redirect.get("url"),
        original=redirect.get("originalUrlParameter"),
    )


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """A compiled policy (None: it does not apply to this workload) and what is wrong with it.
    `unresolved` holds the problems that are issuer references not found or not ready: status
    reports them as ResolvedRefs=False, so they are kept apart rather than found by their text."""

    policy: CompiledPolicy | None
    problems: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()


def issuer_keys(policy: PolicyObject) -> list[str]:
    """The keys of the issuers a policy names, in order (`JWTIssuer` in its namespace)."""
    return [schema.issuer_key(ref, policy.namespace) for ref in policy.spec.get("issuers", ())]


def compile_policy(
    obj: PolicyObject,
    issuers: Mapping[str, CompiledIssuer],
    workload_labels: Mapping[str, str],
    workload_namespace: str | None = None,
) -> PolicyResult:
    """Compile one AuthzPolicy; unresolved issuer references are dropped (fail closed) and
    reported. A workloadSelector that does not select this workload (its labels, and for a
    namespaced cluster policy its namespace) gives no policy."""
    spec = obj.spec
    targets = spec["targets"]
    selector = targets.get("workloadSelector")
    if selector is not None and (
        any(workload_labels.get(k) != v for k, v in selector["matchLabels"].items())
        or not tenancy.selects_workload(obj, workload_namespace)
    ):
        return PolicyResult(None)
    try:
        context = tenancy.binding(obj)
    except ValueError as exc:
        raise CompileError(str(exc)) from None
    problems: list[str] = []
    unresolved: list[str] = []
    by_iss: dict[str, CompiledIssuer] = {}
    for i, key in enumerate(issuer_keys(obj)):
        issuer = issuers.get(key)
        if issuer is None:
            unresolved.append(f"spec.issuers[{i}]: {key} not found or not ready")
            problems.append(unresolved[-1])
            continue
        clash = next((by_iss[iss] for iss in issuer.accepted_iss if iss in by_iss), None)
        if clash is not None:
            problems.append(f"spec.issuers[{i}]: {key} has the same iss as {clash.id}; ignored")
        else:
            by_iss.update(dict.fromkeys(issuer.accepted_iss, issuer))
    if "dpop" not in spec:
        problems += [
            f"{issuer.id} requires DPoP and this policy has no dpop block: "
            "its tokens are always refused (dpop_required)"
            for issuer in dict.fromkeys(by_iss.values())
            if issuer.require_dpop
        ]
    problems += host_problems(targets.get("hosts", ()), "spec.targets.hosts")
    problems += policy_warnings(spec)
    for i, rule_spec in enumerate(spec["rules"]):
        hosts = rule_spec.get("match", {}).get("hosts", ())
        problems += host_problems(hosts, f"spec.rules[{i}].match.hosts")
    hops = spec.get("xffNumTrustedHops")
    rules = tuple(
        _rule(r, i, _rule_context(r, obj.namespace, hops)) for i, r in enumerate(spec["rules"])
    )
    named = set(issuer_keys(obj))
    for i, rule in enumerate(rules):
        for key in sorted((rule.issuers or frozenset()) - named):
            raise CompileError(f"spec.rules[{i}].issuers: {key} is not one of the policy's issuers")
    default_action = spec.get("defaultAction", "deny")
    if not spec.get("issuers") and any(
        a == "requireToken" for a in [*(r.action for r in rules), default_action]
    ):
        raise CompileError("spec.issuers: a rule requires a token but the policy trusts no issuer")
    sources: list[TokenSource] = []
    for issuer in dict.fromkeys(by_iss.values()):
        sources.extend(s for s in issuer.token_sources if s not in sources)
    login = None
    if "login" in spec:
        try:
            login = compile_login(obj, issuers.get(login_issuer_key(obj)), by_iss)
        except LoginError as exc:
            raise CompileError(str(exc)) from None
    response = spec.get("response", {})
    headers = tuple(
        HeaderFromClaim(
            h["name"].lower(),
            h["claim"] if h["claim"] in ("$scopes", "$roles") else claim_path(h["claim"]),
        )
        for h in response.get("headers", ())
    )
    route, route_problems = _introspection_route(by_iss)
    problems += route_problems
    policy = CompiledPolicy(
        id=obj.key,
        issuers_by_iss=by_iss,
        audiences=frozenset(spec["audiences"]) if spec.get("audiences") else None,
        rules=rules,
        default_action=default_action,
        token_sources=tuple(sources) or (BEARER,),
        response=ResponseSpec(
            headers=headers if "headers" in response else DEFAULT_HEADERS,
            strip_authorization=response.get("stripAuthorization", False),
        ),
        hosts=host_matcher(targets.get("hosts", ())),
        context=tuple(sorted(context.items())),
        dry_run=spec.get("dryRun", False),
        patterns=_pattern_set([r.paths.pattern for r in rules if r.paths and r.paths.pattern]),
        deny_with=deny_with(spec.get("denyWith")),
        introspection=route,
        **possession(spec),
        login=login,
    )
    return PolicyResult(policy, tuple(problems), tuple(unresolved))


def _introspection_route(
    by_iss: Mapping[str, CompiledIssuer],
) -> tuple[IntrospectionRoute | None, list[str]]:
    """Where a policy's tokens go for introspection. An opaque token names no issuer, so
    it goes to one endpoint only (sending it to several would hand it to every provider):
    the first introspecting issuer the policy lists."""
    introspecting = [i for i in dict.fromkeys(by_iss.values()) if i.introspection is not None]
    if not introspecting:
        return None, []
    first, *others = introspecting
    problems = [
        f"spec.issuers: {o.id} introspects too; opaque tokens go to {first.id} only "
        "(list the issuer whose opaque tokens this policy takes first)"
        for o in others
    ]
    jwt_routes = {
        iss: issuer
        for issuer in introspecting
        if issuer.introspect_jwts
        for iss in issuer.accepted_iss
        if by_iss.get(iss) is issuer
    }
    return IntrospectionRoute(first, jwt_routes), problems


def possession(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The policy's proof-of-possession and internal-token blocks, compiled."""
    out: dict[str, Any] = {}
    if "dpop" in spec:
        dpop = spec["dpop"]
        out["dpop"] = DPoPSettings(
            algorithms=tuple(dpop.get("algorithms", DPOP_ALGORITHMS)),
            max_age=dpop.get("proofMaxAgeSeconds", DPOP_DEFAULTS["proofMaxAgeSeconds"]),
            skew=dpop.get("clockSkewSeconds", DPOP_DEFAULTS["clockSkewSeconds"]),
            require_nonce=dpop.get("requireNonce", False),
        )
    if "clientCertificate" in spec:
        trust = spec["clientCertificate"].get("trustForwardedClientCert", False)
        out["client_certificate"] = ClientCertificateSettings(trust_forwarded=trust)
    if "internalToken" in spec:
        internal = spec["internalToken"]
        out["internal_token"] = InternalTokenSpec(
            audience=internal["audience"],
            lifetime=internal.get("lifetimeSeconds", INTERNAL_TOKEN_LIFETIME),
            header=internal.get("header", INTERNAL_TOKEN_HEADER).lower(),
        )
    return out
