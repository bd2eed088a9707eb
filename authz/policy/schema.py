"""The policy schema: one source of truth for file validation and the CRDs.

Written in the structural OpenAPI v3 subset Kubernetes accepts, which is also
valid JSON Schema, so `validate` checks files with exactly what the API
server will check. Cross-field rules that CEL expresses in the CRDs are
listed in `RULES` and enforced by `validate` in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.keys.client_auth import ASSERTION_ALGORITHMS
from authz.keys.client_auth import METHODS as CLIENT_AUTH_METHODS
from authz.policy.possession import (
    DPOP_ALGORITHMS,
    DPOP_DEFAULTS,
    INTERNAL_TOKEN_HEADER,
    INTERNAL_TOKEN_LIFETIME,
    INTERNAL_TOKEN_MAX_LIFETIME,
)

GROUP = "authz.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

ISSUER_KINDS = ("JWTIssuer", "ClusterJWTIssuer")
POLICY_KIND = "AuthzPolicy"
GRANT_KIND = "HostGrant"
REVOCATION_KIND = "TokenRevocation"
KINDS = (*ISSUER_KINDS, POLICY_KIND, GRANT_KIND, REVOCATION_KIND)
CLUSTER_SCOPED = frozenset({"ClusterJWTIssuer", GRANT_KIND, REVOCATION_KIND})


def issuer_key(ref: Mapping[str, Any], namespace: str | None) -> str:
    """An issuer reference -> the id of the object it names (`JWTIssuer/ns/name`)."""
    kind = ref.get("kind", "JWTIssuer")
    if kind in CLUSTER_SCOPED:
        return f"{kind}/{ref['name']}"
    return f"{kind}/{namespace}/{ref['name']}"


# kind -> (plural, singular, short names): the CRDs' names, the API paths the cluster source
# lists and watches, and the status writer's patch target.
NAMES = {
    "JWTIssuer": ("jwtissuers", "jwtissuer", ["jwtiss"]),
    "ClusterJWTIssuer": ("clusterjwtissuers", "clusterjwtissuer", ["cjwtiss"]),
    "AuthzPolicy": ("authzpolicies", "authzpolicy", ["azpol"]),
    "HostGrant": ("hostgrants", "hostgrant", ["hgrant"]),
    REVOCATION_KIND: ("tokenrevocations", "tokenrevocation", ["tokrev"]),
}
# The context extension that names the namespace of the policy a route is bound to: a
# namespaced cluster policy's `contextExtensions` binding matches only routes that carry it.
NAMESPACE_CONTEXT_KEY = "authz.io/namespace"

ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ALGORITHMS = ASYMMETRIC_ALGORITHMS + HMAC_ALGORITHMS
# Defaults of the issuer's `fetch` block, shared by the schema, its CEL rules and the compiler.
FETCH_DEFAULTS = {
    "refreshSeconds": 600,
    "minRefreshSeconds": 60,
    "maxRefreshSeconds": 3600,
    "unknownKidCooldownSeconds": 30,
    "unknownKidWaitMillis": 250,
    "maxStaleSeconds": 86400,
    "timeoutSeconds": 5,
}
# Defaults of the issuer's `introspection` block, shared by the schema and the compiler.
INTROSPECTION_DEFAULTS = {
    "cacheSeconds": 60,
    "negativeCacheSeconds": 5,
    "waitMillis": 250,
    "timeoutSeconds": 2,
    "maxInFlight": 8,
    "failureThreshold": 5,
    "openSeconds": 10,
}
DEFAULT_MAX_TOKEN_LIFETIME = 86400
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
ACTIONS = ("requireToken", "allowAnonymous", "deny")

JSON = dict[str, Any]


def _str(description: str, **extra: Any) -> JSON:
    return {"type": "string", "description": description, **extra}


def _list(items: JSON, description: str, **extra: Any) -> JSON:
    return {"type": "array", "items": items, "description": description, **extra}


def _obj(description: str, properties: JSON, **extra: Any) -> JSON:
    return {"type": "object", "description": description, "properties": properties, **extra}


def _fetch_int(name: str, description: str, **extra: Any) -> JSON:
    default = FETCH_DEFAULTS[name]
    return {"type": "integer", "description": description, "default": default, **extra}


_CLAIM_PATH = _str(
    "Claim path: dot-separated names into nested objects (`realm_access.roles`); "
    "write `\\.` for a dot inside a name (`https://example\\.com/roles`).",
    minLength=1,
)

_TOKEN_SOURCE = _obj(
    "One place a token may be carried. Set exactly one of header, cookie, query.",
    {
        "header": _obj(
            "A request header.",
            {
                "name": _str("Header name, case-insensitive.", minLength=1),
                "prefix": _str(
                    'Scheme prefix before the token, compared case-insensitively, e.g. "Bearer ". '
                    "Empty: the whole header value is the token."
                ),
            },
            required=["name"],
        ),
        "cookie": _obj("A cookie.", {"name": _str("Cookie name.", minLength=1)}, required=["name"]),
        "query": _obj(
            "A URL query parameter (RFC 6750 section 2.3; avoid: URLs end up in logs).",
            {"name": _str("Parameter name.", minLength=1)},
            required=["name"],
        ),
    },
)


# Any JSON value (string, number, boolean, array, object): a CRD field without a type,
# which Kubernetes accepts only with x-kubernetes-preserve-unknown-fields.
def _any(description: str) -> JSON:
    return {"description": description, "x-kubernetes-preserve-unknown-fields": True}


CLAIM_OPERATORS = (
    "equals",
    "in",
    "present",
    "regex",
    "contains",
    "atLeast",
    "atMost",
    "maxAgeSeconds",
)

_CLAIM_CONDITION = _obj(
    "A condition on one claim. Set exactly one of equals, in, present, regex, contains, "
    "maxAgeSeconds, or atLeast and/or atMost. Values compare with their JSON type: `true` "
    'does not equal `"true"`, `1` does not equal `"1"` (write `equals: true` for a boolean '
    'claim, `equals: "true"` for a string). On an array claim, equals, in, regex and the '
    "number comparisons hold when any element satisfies them.",
    {
        "path": _CLAIM_PATH,
        "equals": _any("The claim equals this JSON value (type-sensitive)."),
        "in": _list(
            _any("A JSON value."),
            "The claim equals one of these JSON values (type-sensitive).",
            minItems=1,
        ),
        "present": {"type": "boolean", "description": "The claim is present (true) or absent."},
        "regex": _str(
            "The claim is a string that fully matches this regular expression, in RE2 syntax "
            "(as Envoy and Istio use: matched in linear time; no backreferences or lookaround).",
            minLength=1,
        ),
        "contains": _any(
            "The claim is an array with an element equal to this JSON value (type-sensitive)."
        ),
        "atLeast": {
            "type": "number",
            "description": "The claim is a number (not a string) greater than or equal to this, "
            "e.g. an `acr` level.",
        },
        "atMost": {
            "type": "number",
            "description": "The claim is a number (not a string) less than or equal to this.",
        },
        "maxAgeSeconds": {
            "type": "integer",
            "minimum": 0,
            "description": "The claim is a NumericDate at most this many seconds in the past, "
            "e.g. `auth_time` for a recent sign-in (OpenID Connect's max_age).",
        },
    },
    required=["path"],
)


def _intro_int(name: str, description: str, **extra: Any) -> JSON:
    default = INTROSPECTION_DEFAULTS[name]
    return {"type": "integer", "description": description, "default": default, **extra}


_REREAD = "(cluster mode only; read when referenced, again on every policy change and every 5 minutes)"  # fmt: skip


def _ref(kind: str, description: str, *, namespace: bool = True) -> JSON:
    """A key of a Secret or ConfigMap (`kind`); `namespace`: an issuer's reference, which a
    ClusterJWTIssuer may point at any namespace."""
    fields = {
        "name": _str(f"{kind} name.", minLength=1, maxLength=253),
        "key": _str(f"Key in the {kind}'s data.", minLength=1, maxLength=253),
    }
    if namespace:
        fields["namespace"] = _str(
            f"The {kind}'s namespace: ClusterJWTIssuer only (a JWTIssuer reads {kind}s in its "
            "own namespace).",
            minLength=1,
            maxLength=63,
        )
    return _obj(description, fields, required=["name", "key"])


def _secret_ref(what: str) -> JSON:
    return _ref("Secret", f"A Kubernetes Secret holding {what} {_REREAD}.")


ISSUER_SPEC: JSON = _obj(
    "A trusted token issuer: its `iss`, where its keys come from and how its tokens are checked. "
    "Set exactly one key source: jwks, jwksFile, jwksUri, discovery, discoveryUrl, publicKeys, "
    "x509CertificatesUri, hmacSecretFile or hmacSecretRef; or none, with `introspection`, "
    "for an issuer of opaque tokens only.",
    {
        "issuer": _str(
            "The exact `iss` value of this issuer's tokens, or a template with `{tenant}` "
            "(see `tenants`).",
            minLength=1,
        ),
        "jwks": _obj(
            "Inline JSON Web Key Set (RFC 7517) with the issuer's public keys.",
            {
                "keys": _list(
                    {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "The keys.",
                    minItems=1,
                )
            },
            required=["keys"],
        ),
        "jwksFile": _str(
            "Path of a JWKS file, relative to the policy file's directory. File source only.",
            minLength=1,
        ),
        "jwksUri": _str(
            "URL of the issuer's JWKS, fetched in the background and refreshed (see `fetch`).",
            pattern="^https?://",
            maxLength=2048,
        ),
        "discovery": {
            "type": "boolean",
            "description": "Find the JWKS by OIDC discovery at "
            "`{issuer}/.well-known/openid-configuration`; the document's `issuer` must equal "
            "`issuer` exactly. Refreshed in the background (see `fetch`).",
        },
        "discoveryUrl": _str(
            "Find the JWKS by OIDC discovery at this URL, for providers whose metadata is not "
            "at `{issuer}/.well-known/openid-configuration` (Azure AD B2C user flows, some "
            "gateways). The document's `issuer` must still equal `issuer` exactly. Refreshed "
            "in the background (see `fetch`).",
            pattern="^https?://",
            maxLength=2048,
        ),
        "publicKeys": _list(
            _obj(
                "A PEM public key (SubjectPublicKeyInfo: RSA, EC or Ed25519/Ed448). "
                "Set exactly one of pem, file.",
                {
                    "kid": _str(
                        "Key id. A token naming a kid only verifies with the key of that kid; "
                        "a key without one verifies only tokens without a kid.",
                        minLength=1,
                    ),
                    "pem": _str("The PEM text.", minLength=1),
                    "file": _str(
                        "Path of a PEM file, relative to the policy file's directory. "
                        "File source only.",
                        minLength=1,
                    ),
                },
            ),
            "Public keys given as PEM, e.g. an IdP's published realm key.",
            minItems=1,
            maxItems=100,
        ),
        "x509CertificatesUri": _str(
            "URL of a JSON object mapping key ids to PEM X.509 certificates, as Google and "
            "Firebase publish them (`https://www.googleapis.com/robot/v1/metadata/x509/"
            "securetoken@system.gserviceaccount.com`). Only the certificates' public keys are "
            "used. Refreshed in the background (see `fetch`).",
            pattern="^https?://",
            maxLength=2048,
        ),
        "hmacSecretFile": _str(
            "Path of a file holding a shared HMAC secret (its raw bytes; one trailing newline "
            "is ignored), relative to the policy file's directory. `algorithms` must list the "
            "HS* algorithms to accept, and only those. Tokens must not name a kid; for named "
            "secrets use `jwksFile` with `kty: oct` keys.",
            minLength=1,
        ),
        "hmacSecretRef": _ref(
            "Secret",
            f"A Kubernetes Secret holding a shared HMAC secret {_REREAD}. `algorithms` must list "
            "the HS* algorithms to accept, and only those. Tokens must not name a kid.",
        ),
        "tenants": _list(
            _str("A tenant id or domain.", pattern="^[A-Za-z0-9][A-Za-z0-9._-]*$", maxLength=253),
            "Multi-tenant issuers: `issuer` is a template with `{tenant}` "
            "(`https://login.microsoftonline.com/{tenant}/v2.0`) and each tenant listed yields "
            "one accepted `iss`. All tenants share this issuer's keys, e.g. Entra ID's common "
            "JWKS via `jwksUri`.",
            minItems=1,
            maxItems=1000,
        ),
        "tenantClaim": _str(
            "Multi-tenant issuers: the claim that must name the tenant of the token's `iss` "
            "(Entra ID: `tid`). A token whose `iss` names one tenant and whose claim another is "
            "refused (401 tenant_mismatch), as Microsoft's multi-tenant guidance requires.",
            minLength=1,
        ),
        "requiredClaims": _list(
            _CLAIM_CONDITION,
            "Claim values every token of this issuer must carry to be the right kind of token, "
            "e.g. `token_use: access` (Cognito) or `typ: Bearer` (Keycloak): an ID token sent "
            "to an API is not a credential (RFC 8725 3.11), so a token failing one is refused "
            "with 401 invalid_token (required_claim_mismatch), not 403.",
            maxItems=16,
        ),
        "fetch": _obj(
            "How remote keys (jwksUri, discovery, discoveryUrl, x509CertificatesUri) are fetched. Requests "
            "never wait for a scheduled refresh; a token naming an unknown kid may wait up to "
            "`unknownKidWaitMillis` for one refetch. Response bodies are limited to 1 MiB "
            "and redirects are not followed.",
            {
                "refreshSeconds": _fetch_int(
                    "refreshSeconds",
                    "Refresh interval when the server sends no `Cache-Control: max-age`.",
                    minimum=1,
                ),
                "minRefreshSeconds": _fetch_int(
                    "minRefreshSeconds", "Lower bound applied to the server's max-age.", minimum=1
                ),
                "maxRefreshSeconds": _fetch_int(
                    "maxRefreshSeconds",
                    "Upper bound applied to the server's max-age: how long a key removed at "
                    "the issuer can still verify at most.",
                    minimum=1,
                ),
                "unknownKidCooldownSeconds": _fetch_int(
                    "unknownKidCooldownSeconds",
                    "At most one refetch for unknown kids per this many seconds; a kid still "
                    "unknown afterwards is denied without refetching until the next refresh.",
                    minimum=1,
                ),
                "unknownKidWaitMillis": _fetch_int(
                    "unknownKidWaitMillis",
                    "How long a request with an unknown kid may wait for that refetch; "
                    "then it is denied (key_not_found). 0: never wait.",
                    minimum=0,
                    maximum=5000,
                ),
                "maxStaleSeconds": _fetch_int(
                    "maxStaleSeconds",
                    "How long the last good keys keep serving while refreshes fail.",
                    minimum=0,
                ),
                "timeoutSeconds": _fetch_int(
                    "timeoutSeconds",
                    "Time limit for one fetch (connect, headers and body).",
                    minimum=1,
                    maximum=60,
                ),
                "caFile": _str(
                    "PEM CA bundle to verify the key server's certificate with, instead of "
                    "the system CAs; relative to the policy file's directory. Policy files "
                    "and ClusterJWTIssuers only (it reads the authorizer's filesystem).",
                    minLength=1,
                ),
                "caBundleRef": _ref(
                    "ConfigMap",
                    "A ConfigMap holding the PEM CA bundle to verify the key server's "
                    f"certificate with, instead of the system CAs {_REREAD}.",
                ),
                "allowInsecureHttp": {
                    "type": "boolean",
                    "default": False,
                    "description": "Allow plain-http key URLs. Development only: anyone on "
                    "the path could substitute keys. Policy files and ClusterJWTIssuers only.",
                },
            },
        ),
        "introspection": _obj(
            "Check this issuer's opaque tokens (those that are not JWTs) at its RFC 7662 "
            "introspection endpoint; with `tokens: all`, its JWTs too. Calls run off the "
            "request path: an answer is cached (active: until min(exp, cacheSeconds); "
            "inactive: negativeCacheSeconds), one call per token is in flight, a request "
            "waits at most `waitMillis`, and an endpoint that keeps failing opens a circuit "
            "breaker. Without a key source the issuer accepts introspected tokens only. "
            "Answers are limited to 64 KiB and redirects are not followed.",
            {
                "endpoint": _str(
                    "The introspection endpoint URL (the `introspection_endpoint` of the "
                    "provider's metadata).",
                    pattern="^https?://",
                    maxLength=2048,
                ),
                "tokens": {
                    "type": "string",
                    "enum": ["opaque", "all"],
                    "default": "opaque",
                    "description": "opaque: introspect tokens that are not JWTs (JWTs of this "
                    "issuer are verified with its keys); all: introspect this issuer's JWTs "
                    "too, so a token revoked at the provider is refused within cacheSeconds. "
                    "A policy sends opaque tokens to its first introspecting issuer only.",
                },
                "clientAuth": _obj(
                    "How authz authenticates to the endpoint (RFC 7662 2.1). Set exactly one "
                    "of clientSecretFile, clientSecretRef for the secret methods, exactly one "
                    "of privateKeyFile, privateKeyRef for private_key_jwt, neither for none.",
                    {
                        "method": {
                            "type": "string",
                            "enum": list(CLIENT_AUTH_METHODS),
                            "description": "client_secret_basic (HTTP Basic), "
                            "client_secret_post (form fields), private_key_jwt (a signed "
                            "assertion, RFC 7523), or none (an endpoint protected another "
                            "way: a mesh, a private network).",
                        },
                        "clientId": _str("The client id authz introspects as.", minLength=1),
                        "clientSecretFile": _str(
                            "Path of a file holding the client secret (one trailing newline "
                            "is ignored), relative to the policy file's directory; re-read "
                            "when it changes. File source only.",
                            minLength=1,
                        ),
                        "clientSecretRef": _secret_ref("the client secret"),
                        "privateKeyFile": _str(
                            "Path of a PEM private key (RSA, EC P-256/384/521 or Ed25519, "
                            "unencrypted) that signs the client assertion, relative to the "
                            "policy file's directory; re-read when it changes. File source only.",
                            minLength=1,
                        ),
                        "privateKeyRef": _secret_ref("the PEM private key"),
                        "signingAlgorithm": {
                            "type": "string",
                            "enum": list(ASSERTION_ALGORITHMS),
                            "description": "The assertion's algorithm. Default: RS256 for RSA, "
                            "ES256/384/512 by curve, EdDSA for Ed25519.",
                        },
                        "keyId": _str("The assertion's `kid` header.", minLength=1),
                        "assertionAudience": _str(
                            "The assertion's `aud`. Default: the endpoint URL.", minLength=1
                        ),
                    },
                    required=["method"],
                ),
                "tokenTypeHint": _str(
                    "The `token_type_hint` sent with each token; empty: none.",
                    default="access_token",
                    maxLength=64,
                ),
                "cacheSeconds": _intro_int(
                    "cacheSeconds",
                    "How long an active answer is trusted at most (never past the token's "
                    "`exp`): a token revoked at the provider is refused within this time. "
                    "0: ask on every request.",
                    minimum=0,
                    maximum=3600,
                ),
                "negativeCacheSeconds": _intro_int(
                    "negativeCacheSeconds",
                    "How long an inactive answer is kept (a flood of one bad token costs "
                    "one call per this many seconds).",
                    minimum=0,
                    maximum=300,
                ),
                "waitMillis": _intro_int(
                    "waitMillis",
                    "How long a request may wait for an answer; then it is refused "
                    "(introspection_unavailable, 503) while the call goes on and its answer "
                    "is cached. The proxy's ext_authz timeout must be longer.",
                    minimum=0,
                    maximum=5000,
                ),
                "timeoutSeconds": _intro_int(
                    "timeoutSeconds",
                    "Time limit for one call (connect, headers and body).",
                    minimum=1,
                    maximum=30,
                ),
                "maxInFlight": _intro_int(
                    "maxInFlight",
                    "Calls in flight at once for this issuer; more new tokens are refused "
                    "(503) rather than queued.",
                    minimum=1,
                    maximum=256,
                ),
                "failureThreshold": _intro_int(
                    "failureThreshold",
                    "Failed calls in a row that open the circuit breaker.",
                    minimum=1,
                    maximum=100,
                ),
                "openSeconds": _intro_int(
                    "openSeconds",
                    "How long an open circuit refuses new tokens without a call before one "
                    "call probes the endpoint again.",
                    minimum=1,
                    maximum=600,
                ),
                "caFile": _str(
                    "PEM CA bundle to verify the endpoint's certificate with, instead of the "
                    "system CAs; relative to the policy file's directory.",
                    minLength=1,
                ),
                "allowInsecureHttp": {
                    "type": "boolean",
                    "default": False,
                    "description": "Allow a plain-http endpoint. Development only: tokens and "
                    "client credentials would cross the network in clear.",
                },
            },
            required=["endpoint", "clientAuth"],
        ),
        "algorithms": _list(
            {"type": "string", "enum": list(ALGORITHMS)},
            "Accepted JWS algorithms. Default: all asymmetric ones. HS* only verify with an "
            "explicit `kty: oct` secret, never with a public key; `none` is never accepted.",
            minItems=1,
            maxItems=len(ALGORITHMS),
        ),
        "audiences": _list(
            _str("An audience.", minLength=1),
            "Audiences accepted for this issuer when a policy names none. A token must carry "
            "one of them; a token with `aud` is rejected when no audience is configured.",
        ),
        "audienceClaim": _str(
            "Claim that carries the audience (AWS Cognito access tokens: `client_id`).",
            minLength=1,
            default="aud",
        ),
        "clockSkewSeconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": 600,
            "default": 60,
            "description": "Leeway applied to exp, nbf and iat.",
        },
        "maxLifetimeSeconds": {
            "type": "integer",
            "minimum": 1,
            "description": "Reject tokens valid for longer than this (exp - iat, or exp - now).",
        },
        "requireExp": {
            "type": "boolean",
            "default": True,
            "description": "Reject tokens without `exp` (RFC 8725 recommends short-lived tokens).",
        },
        "requireTyp": _str(
            'Required JOSE `typ` header, e.g. "at+jwt" for RFC 9068 access tokens '
            "(case-insensitive, `application/` prefix optional).",
            minLength=1,
        ),
        "requireDPoP": {
            "type": "boolean",
            "default": False,
            "description": "Every token of this issuer must be DPoP-bound (`cnf.jkt`) and sent "
            "as `Authorization: DPoP` with a proof (RFC 9449); a policy trusting it needs a "
            "`dpop` block. A DPoP-bound token sent as a bearer token is refused whatever this says.",
        },
        "tokenSources": _list(
            _TOKEN_SOURCE,
            "Where this issuer's tokens are looked for. Default: `Authorization: Bearer`.",
            minItems=1,
            maxItems=16,  # bounds the CRD's CEL cost estimate for the per-item rule
        ),
        "claims": _obj(
            "Where scopes and roles live in this issuer's tokens.",
            {
                "scopes": _list(
                    _CLAIM_PATH,
                    "Claims holding scopes, as a space-delimited string or an array. "
                    "Default: `scope`, `scp`.",
                ),
                "roles": _list(
                    _CLAIM_PATH,
                    "Claims holding roles or groups (`realm_access.roles`, `groups`, "
                    "`roles`, `cognito:groups`).",
                ),
            },
        ),
    },
    required=["issuer"],
)

_REQUIREMENT = _obj(
    "Values the token must carry: all of `allOf` and at least one of `anyOf`.",
    {
        "allOf": _list(_str("A value.", minLength=1), "Every one is required."),
        "anyOf": _list(_str("A value.", minLength=1), "At least one is required."),
    },
)


def _issuer_ref(description: str) -> JSON:
    return _obj(
        description,
        {
            "name": _str("Issuer object name.", minLength=1),
            "kind": {
                "type": "string",
                "enum": list(ISSUER_KINDS),
                "default": "JWTIssuer",
                "description": "JWTIssuer (same namespace) or ClusterJWTIssuer.",
            },
        },
        required=["name"],
    )


_ISSUER_REF = _issuer_ref("A reference to a trusted issuer.")

_HEADER_CONDITION = _obj(
    "A condition on one request header. Set exactly one of present, equals, in, prefix, "
    "regex. Repeated headers are compared joined with `,`, as Envoy joins them.",
    {
        "name": _str("Header name, case-insensitive.", pattern="^[a-zA-Z0-9!#$%&'*+.^_`|~-]+$"),
        "present": {"type": "boolean", "description": "The header is present (true) or absent."},
        "equals": _str("The header's value equals this."),
        "in": _list(_str("A value."), "The header's value equals one of these.", minItems=1),
        "prefix": _str("The header's value starts with this.", minLength=1),
        "regex": _str(
            "The header's value fully matches this RE2 regular expression (linear time).",
            minLength=1,
        ),
    },
    required=["name"],
)

_CIDR = _str(
    "An IPv4 or IPv6 address or CIDR block (`10.0.0.0/8`, `2001:db8::/32`).",
    pattern="^[0-9a-fA-F:.]+(/[0-9]{1,3})?$",
    maxLength=64,
)

_IDENTITY_GLOB = _str(
    "An identity, exact or a glob: `*` any run of characters but `/`, `**` any run "
    "(`spiffe://cluster.local/ns/shop/sa/*`, `spiffe://cluster.local/**`).",
    minLength=1,
)

_PORT = {"type": "integer", "minimum": 1, "maximum": 65535, "description": "A port."}

_DENY_RESPONSE = _obj(
    "A replacement deny answer. The RFC 6750 `WWW-Authenticate` challenge of a 401 (and of "
    "a 403 insufficient_scope) is kept unless `headers` sets `www-authenticate` itself.",
    {
        "status": {
            "type": "integer",
            "minimum": 300,
            "maximum": 599,
            "description": "HTTP status. Default: authz's own (401 or 403), or 302 with a "
            "redirect.",
        },
        "body": _str(
            "Response body (`content-type: text/plain` unless `headers` set one). Default: "
            "authz's JSON error body; none with a redirect.",
            maxLength=16384,
        ),
        "headers": _list(
            _obj(
                "A response header.",
                {
                    "name": _str(
                        "Header name.", pattern="^[a-zA-Z0-9!#$%&'*+.^_`|~-]+$", maxLength=128
                    ),
                    "value": _str("Header value.", pattern="^[^\\r\\n\\x00]*$", maxLength=4096),
                },
                required=["name", "value"],
            ),
            "Response headers.",
            maxItems=16,
        ),
        "redirect": _obj(
            "Send the client elsewhere (a sign-in page): `Location` is `url`, with the URL the "
            "client asked for added as the query parameter `originalUrlParameter` when set.",
            {
                "url": _str("Where to send the client.", pattern="^https?://", maxLength=2048),
                "originalUrlParameter": _str(
                    "Query parameter that carries the original URL (`rd`, `return_to`).",
                    pattern="^[A-Za-z0-9._~-]+$",
                    maxLength=64,
                ),
            },
            required=["url"],
        ),
    },
)

_DENY_WITH = _obj(
    "Custom deny answers (Authorino's denyWith): `unauthenticated` replaces the 401 "
    "answers (no valid token), `unauthorized` the 403 ones. 400 answers stay as they are. "
    "Envoy (gRPC and http_service), Caddy and Traefik relay them; NGINX's auth_request "
    "passes only a 401 or 403 on, so authz answers NGINX a 401 for a redirect and a 403 "
    "for another status: there, redirect with NGINX's error_page.",
    {"unauthenticated": _DENY_RESPONSE, "unauthorized": _DENY_RESPONSE},
)

_RULE = _obj(
    "A rule: a request match and what it requires. The first matching rule decides.",
    {
        "name": _str(
            "Rule name, shown in decisions and logs. Default: rule-<index>.",
            pattern="^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$",
            maxLength=63,
        ),
        "match": _obj(
            "Which requests the rule applies to. Empty lists match everything.",
            {
                "methods": _list({"type": "string", "enum": list(METHODS)}, "HTTP methods."),
                "paths": _list(
                    _str(
                        "A path: exact (`/healthz`), a glob (`*` within one segment, `**` across "
                        "segments: `/orders/**`) or a template (`/orders/{id}`, `/files/{rest=**}`).",
                        pattern="^/",
                    ),
                    "Paths, matched after normalisation and without the query string.",
                ),
                "pathPrefixes": _list(_str("A raw path prefix.", pattern="^/"), "Path prefixes."),
                "hosts": _list(
                    _str(
                        "A host, `*.example.com` or `*`, compared case-insensitively with the "
                        "Host the proxy routes on, as Envoy's virtual hosts match it: write it "
                        "without a port or trailing dot (the shipped proxy configurations strip "
                        "both; `authz lint` warns).",
                        minLength=1,
                    ),
                    "Hosts (`:authority`).",
                ),
                "notMethods": _list(
                    {"type": "string", "enum": list(METHODS)}, "Methods the rule does not apply to."
                ),
                "notPaths": _list(
                    _str("A path, as in `paths`.", pattern="^/"),
                    "Paths the rule does not apply to (as in `paths`).",
                ),
                "notHosts": _list(
                    _str("A host, as in `hosts`.", minLength=1),
                    "Hosts the rule does not apply to (as in `hosts`).",
                ),
                "headers": _list(
                    _HEADER_CONDITION, "Request header conditions; all must hold.", maxItems=32
                ),
                "notHeaders": _list(
                    _HEADER_CONDITION,
                    "Request header conditions of which none may hold.",
                    maxItems=32,
                ),
                "ipBlocks": _list(
                    _CIDR,
                    "The connection's source address (the CheckRequest's `source.address`: the "
                    "peer that connected to the proxy) is in one of these blocks.",
                    maxItems=1000,
                ),
                "notIpBlocks": _list(
                    _CIDR, "The connection's source address is in none of these.", maxItems=1000
                ),
                "remoteIpBlocks": _list(
                    _CIDR,
                    "The client address read from `X-Forwarded-For` (needs the policy's "
                    "`xffNumTrustedHops`) is in one of these blocks.",
                    maxItems=1000,
                ),
                "notRemoteIpBlocks": _list(
                    _CIDR,
                    "The client address read from `X-Forwarded-For` is in none of these.",
                    maxItems=1000,
                ),
                "principals": _list(
                    _IDENTITY_GLOB,
                    "The mTLS peer's principal (the CheckRequest's `source.principal`: the client "
                    "certificate's first URI SAN, e.g. a SPIFFE ID) matches one of these. A "
                    "request without mTLS has no principal and never matches.",
                    maxItems=256,
                ),
                "notPrincipals": _list(
                    _IDENTITY_GLOB,
                    "The mTLS peer's principal matches none of these (a request without mTLS "
                    "always holds, as in Istio).",
                    maxItems=256,
                ),
                "clientCertificate": _obj(
                    "Names in the client certificate the proxy validated (Envoy sends it with "
                    "`include_peer_certificate: true`); read only when a rule gets this far. "
                    "Each list given must match one name.",
                    {
                        "uriSans": _list(
                            _IDENTITY_GLOB, "A URI SAN matches one of these.", maxItems=256
                        ),
                        "dnsSans": _list(
                            _str(
                                "A DNS name, `*.example.com` or `*`, compared as hosts are.",
                                minLength=1,
                            ),
                            "A DNS SAN matches one of these.",
                            maxItems=256,
                        ),
                    },
                ),
                "ports": _list(_PORT, "The destination port is one of these.", maxItems=64),
                "notPorts": _list(_PORT, "The destination port is none of these.", maxItems=64),
            },
        ),
        "action": {
            "type": "string",
            "enum": list(ACTIONS),
            "default": "requireToken",
            "description": "requireToken: a valid token meeting the requirements; "
            "allowAnonymous: no token needed (a token that is sent must be valid); deny: always 403.",
        },
        "requireScopes": _REQUIREMENT,
        "requireRoles": _REQUIREMENT,
        "claims": _list(_CLAIM_CONDITION, "Claim conditions; all must hold.", maxItems=64),
        "requireDPoP": {
            "type": "boolean",
            "default": False,
            "description": "The token must be DPoP-bound and sent with a valid proof (RFC 9449); "
            "a bearer token gets 401 `dpop_required`. Needs the policy's `dpop` block.",
        },
        "issuers": _list(
            _ISSUER_REF,
            "Narrows the policy's issuers for this rule: a valid token from another of them "
            "is not a credential here (401 invalid_token, issuer_not_trusted). Each must be "
            "one of the policy's issuers.",
            maxItems=64,
        ),
        "audiences": _list(
            _str("An audience.", minLength=1),
            "The token must also name one of these audiences for this rule (401 "
            "invalid_token, audience_mismatch).",
            maxItems=64,
        ),
        "denyWith": _DENY_WITH,
        "login": {
            "type": "boolean",
            "default": True,
            "description": "With the policy's `login`: a browser navigation this rule denies "
            "for want of a session is sent to sign in. false: answer 401 as to any API "
            "client (a route only scripts call).",
        },
    },
)

_HEADER_FROM_CLAIM = _obj(
    "An identity header for the upstream, set from a claim (or `$scopes`, `$roles`). "
    "A client-sent header of that name is always removed first, so it cannot be spoofed.",
    {
        "name": _str("Header name.", pattern="^[a-zA-Z0-9!#$%&'*+.^_`|~-]+$"),
        "claim": _str("Claim path, or `$scopes` / `$roles` for the normalised lists.", minLength=1),
    },
    required=["name", "claim"],
)

_DPOP = _obj(
    "Accept DPoP-bound tokens (RFC 9449): `Authorization: DPoP <token>` with a `DPoP` proof "
    "header, checked against the request as the proxy received it (method, scheme, host, "
    "path). A proof is accepted once (its `jti` is remembered while it could be accepted).",
    {
        "algorithms": _list(
            {"type": "string", "enum": list(DPOP_ALGORITHMS)},
            "Proof algorithms accepted (asymmetric only), sent in challenges as `algs`. "
            "Default: all of them.",
            minItems=1,
            maxItems=len(DPOP_ALGORITHMS),
        ),
        "proofMaxAgeSeconds": {
            "type": "integer",
            "minimum": 1,
            "maximum": 600,
            "default": DPOP_DEFAULTS["proofMaxAgeSeconds"],
            "description": "How long after its `iat` a proof is accepted; its `jti` is "
            "remembered that long. RFC 9449 advises seconds to a few minutes.",
        },
        "clockSkewSeconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": 60,
            "default": DPOP_DEFAULTS["clockSkewSeconds"],
            "description": "How far in the future a proof's `iat` may be (client clocks ahead).",
        },
        "requireNonce": {
            "type": "boolean",
            "default": False,
            "description": "Proofs must carry a recent server nonce: a proof without one gets "
            "401 `use_dpop_nonce` with a `DPoP-Nonce` header to retry with (RFC 9449 section 9).",
        },
    },
)

_CLIENT_CERTIFICATE = _obj(
    "Where the client certificate of a certificate-bound token (RFC 8705, `cnf.x5t#S256`) "
    "is read. By default only from the connection: Envoy's ext_authz filter sends it with "
    "`include_peer_certificate: true`.",
    {
        "trustForwardedClientCert": {
            "type": "boolean",
            "default": False,
            "description": "Also read the `x-forwarded-client-cert` header (its first element: "
            "the client of the edge proxy), as an Istio gateway or sidecar sets it. Only when "
            "every proxy in front sanitises that header: otherwise a client can write its own.",
        },
    },
)

_INTERNAL_TOKEN = _obj(
    "Replace the external credential with a short-lived JWT that authz signs (its keys: "
    "`authz serve --internal-token-keys`), carrying the normalised identity (`sub`, `scope`, "
    "`roles`, `original_iss`, `act`) for one upstream audience. The upstream verifies it "
    "with the JWKS on authz's ops port.",
    {
        "audience": _str("The `aud` of the internal token: the upstream.", minLength=1),
        "lifetimeSeconds": {
            "type": "integer",
            "minimum": 10,
            "maximum": INTERNAL_TOKEN_MAX_LIFETIME,
            "default": INTERNAL_TOKEN_LIFETIME,
            "description": "Lifetime of an internal token; never beyond the external one's.",
        },
        "header": _str(
            "Header that carries it: `authorization` (as `Bearer <token>`) or another "
            "header (the bare token). A client-sent header of that name never reaches the "
            "upstream.",
            pattern="^[a-zA-Z0-9!#$%&'*+.^_`|~-]+$",
            default=INTERNAL_TOKEN_HEADER,
        ),
    },
    required=["audience"],
)


def _policy_secret_ref(what: str) -> JSON:
    """A Secret an AuthzPolicy names: always in its own namespace."""
    return _ref(
        "Secret",
        f"A Kubernetes Secret in the policy's namespace holding {what} {_REREAD}.",
        namespace=False,
    )


def _file(what: str) -> JSON:
    return _str(
        f"Path of a file holding {what}, relative to the policy file's directory (re-read "
        "when it changes). Policy files only.",
        minLength=1,
    )


# Defaults of the login block, shared by the schema, its CEL rules and the compiler.
LOGIN_DEFAULTS = {
    "callbackPath": "/oauth2/callback",
    "logoutPath": "/oauth2/logout",
    "cookieName": "__Host-authz-session",
    "idleTimeoutSeconds": 3600,
    "absoluteTimeoutSeconds": 86400,
    "refreshBeforeSeconds": 60,
    "waitMillis": 400,
    "loginTimeoutSeconds": 600,
}
_LOGIN_PATH = {"type": "string", "pattern": "^/[^?#]*$", "maxLength": 1024}
_COOKIE_NAME = "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"

LOGIN_SPEC: JSON = _obj(
    "Browser sign-in at the edge (OpenID Connect authorization code flow with PKCE S256): "
    "a browser navigation that a rule denies for want of a token is redirected to the "
    "provider; after sign-in the provider sends it to `callbackPath`, authz redeems the code, "
    "checks the ID token and sets an encrypted session cookie, and the session then counts "
    "as the request's token. API requests (not a navigation) still get 401.",
    {
        "issuer": _issuer_ref(
            "The OpenID provider: one of `issuers`, with a fixed `issuer`. Its discovery "
            "document gives the endpoints, its keys verify ID tokens and its fetch settings "
            "(timeout, CA bundle, allowInsecureHttp) reach the token endpoint."
        ),
        "clientId": _str("The client id registered at the provider.", minLength=1, maxLength=256),
        "clientSecretFile": _file("the client secret (one trailing newline is ignored)"),
        "clientSecretRef": _policy_secret_ref("the client secret"),
        "privateKeyFile": _file("the client's private JWK (JSON) for `private_key_jwt`"),
        "privateKeyRef": _policy_secret_ref(
            "the client's private JWK (JSON) for `private_key_jwt`"
        ),
        "clientAuthentication": {
            "type": "string",
            "enum": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "description": "How authz authenticates at the token endpoint. Default: "
            "`private_key_jwt` with a private key, else `client_secret_basic`.",
        },
        "scopes": _list(
            _str("A scope.", pattern="^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$"),
            "Scopes to ask for; must include `openid`. Add `offline_access` for a refresh "
            "token (sessions then outlive the access token). Default: `openid`.",
            minItems=1,
            maxItems=32,
        ),
        "authorizationParameters": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 512},
            "maxProperties": 16,
            "description": "Extra authorization request parameters (`audience`, `prompt`, "
            "`acr_values`). The protocol's own (`state`, `nonce`, `redirect_uri`, ...) "
            "cannot be set here.",
        },
        "callbackPath": {
            **_LOGIN_PATH,
            "default": LOGIN_DEFAULTS["callbackPath"],
            "description": "Where the provider sends the browser back, on every host of the "
            "policy: register `https://<host><callbackPath>` as a redirect URI.",
        },
        "logoutPath": {
            **_LOGIN_PATH,
            "default": LOGIN_DEFAULTS["logoutPath"],
            "description": "A request here ends the session and, when the provider has an "
            "`end_session_endpoint`, signs out there too (RP-initiated logout).",
        },
        "loginPath": {
            **_LOGIN_PATH,
            "description": "Optional: a request here starts sign-in at once and returns to "
            "its `return_to` parameter, a path on the same host (a sign-in link).",
        },
        "postLogoutRedirectUris": _list(
            _str("An absolute URL.", pattern="^https?://", maxLength=2048),
            "Where the provider may send the browser after logout (register them there too). "
            "The first is the default; a logout request may name another with `return_to`, "
            "and anything not listed is refused.",
            maxItems=32,
        ),
        "publicPort": {
            "type": "integer",
            "minimum": 1,
            "maximum": 65535,
            "description": "The port browsers reach the policy's hosts on, when it is not "
            "the scheme's default and the proxy strips ports from the Host (the shipped "
            "configurations do): it goes into the redirect URI and the same-origin check.",
        },
        "identity": {
            "type": "string",
            "enum": ["idToken", "accessToken"],
            "default": "idToken",
            "description": "What the session's identity is, for rules and identity headers: "
            "the ID token's claims (with the granted scopes as `$scopes`), or the access "
            "token, which must then be a JWT this policy trusts and is checked as a bearer "
            "token would be (audience included).",
        },
        "refreshBeforeSeconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": 3600,
            "default": LOGIN_DEFAULTS["refreshBeforeSeconds"],
            "description": "Renew the session's tokens with the refresh token this long "
            "before they expire. A refused refresh ends the session.",
        },
        "waitMillis": {
            "type": "integer",
            "minimum": 0,
            "maximum": 10000,
            "default": LOGIN_DEFAULTS["waitMillis"],
            "description": "How long a Check may wait for the provider (code exchange, "
            "refresh, discovery) or Redis before answering 503 with Retry-After (the "
            "browser page retries). Keep it below the proxy's ext_authz timeout.",
        },
        "loginTimeoutSeconds": {
            "type": "integer",
            "minimum": 30,
            "maximum": 3600,
            "default": LOGIN_DEFAULTS["loginTimeoutSeconds"],
            "description": "How long a sign-in may take, from the redirect to the callback.",
        },
        "session": _obj(
            "The session cookie: HttpOnly, Secure, SameSite=Lax, encrypted and authenticated "
            "(AES-256-GCM) with the key ring.",
            {
                "cookieName": _str(
                    "Cookie name; `__Host-` binds it to the exact host (no Domain, Path=/). "
                    "Large sessions continue in `<name>.1`, `<name>.2`, ...",
                    pattern=_COOKIE_NAME,
                    default=LOGIN_DEFAULTS["cookieName"],
                ),
                "keysFile": _file(
                    "the key ring: base64 AES-256 keys (32 bytes, `openssl rand -base64 32`), "
                    "one a line, newest first. New sessions use the first; sessions sealed "
                    "with any listed key stay valid, so add a key first and remove old ones "
                    "after the absolute timeout"
                ),
                "keysRef": _policy_secret_ref("the key ring (as for keysFile)"),
                "store": {
                    "type": "string",
                    "enum": ["cookie", "redis"],
                    "default": "cookie",
                    "description": "cookie: the whole session (tokens included) sealed in the "
                    "cookie; logout clears the browser's copy. redis: only a sealed id in "
                    "the cookie, the record in the Redis `authz serve --session-redis` names, "
                    "shared by every replica and deleted at logout.",
                },
                "idleTimeoutSeconds": {
                    "type": "integer",
                    "minimum": 60,
                    "default": LOGIN_DEFAULTS["idleTimeoutSeconds"],
                    "description": "A session unused this long ends.",
                },
                "absoluteTimeoutSeconds": {
                    "type": "integer",
                    "minimum": 60,
                    "default": LOGIN_DEFAULTS["absoluteTimeoutSeconds"],
                    "description": "A session ends this long after sign-in, however used.",
                },
            },
        ),
        "csrf": _obj(
            "Cross-site request forgery protection for requests that a session authenticates.",
            {
                "check": {
                    "type": "string",
                    "enum": ["origin", "off"],
                    "default": "origin",
                    "description": "origin: a state-changing method (POST, PUT, PATCH, DELETE) "
                    "needs an `Origin` (or, without one, a `Referer`) of the request's own "
                    "origin or a trusted one; off: no check (SameSite=Lax still applies).",
                },
                "trustedOrigins": _list(
                    _str("An origin: scheme://host[:port].", pattern="^https?://[^/]+$"),
                    "Other origins allowed to send state-changing requests.",
                    maxItems=64,
                ),
            },
        ),
    },
    required=["issuer", "clientId", "session"],
)

POLICY_SPEC: JSON = _obj(
    "Which requests a policy covers, which issuers it trusts and the rules it enforces.",
    {
        "targets": _obj(
            "What the policy applies to; every target given must match. "
            "A request bound by a context extension uses that policy first.",
            {
                "hosts": _list(
                    _str(
                        "A host, `*.example.com` or `*`, compared case-insensitively with the "
                        "Host the proxy routes on, as Envoy's virtual hosts match it: write it "
                        "without a port or trailing dot (the shipped proxy configurations strip "
                        "both; `authz lint` warns).",
                        minLength=1,
                    ),
                    "Hosts (`:authority`). In cluster mode each must be granted to this "
                    "policy's namespace by a HostGrant; policy files need no grant.",
                ),
                "contextExtensions": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Envoy per-route `check_settings.context_extensions` "
                    "entries that bind a route to this policy, e.g. `{policy: orders}`. In "
                    f"cluster mode the route must also carry `{NAMESPACE_CONTEXT_KEY}: "
                    "<this policy's namespace>`.",
                },
                "workloadSelector": _obj(
                    "Sidecar mode: labels the authorizer process was given (--workload-labels). "
                    "In cluster mode only a workload in this policy's namespace is selected.",
                    {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "Labels that must all be present with these values.",
                        }
                    },
                    required=["matchLabels"],
                ),
            },
        ),
        "issuers": _list(_ISSUER_REF, "Issuers whose tokens this policy accepts."),
        "audiences": _list(
            _str("An audience.", minLength=1),
            "Accepted audiences (any of). Default: the issuer's audiences.",
        ),
        "defaultAction": {
            "type": "string",
            "enum": list(ACTIONS),
            "default": "deny",
            "description": "What happens when no rule matches.",
        },
        "dryRun": {
            "type": "boolean",
            "default": False,
            "description": "Shadow mode for a safe rollout: every decision is computed, "
            "logged (`dry_run: true`, `would_deny: <reason>`) and counted "
            "(`authz_dry_run_would_deny_total`), and the request is allowed, with identity "
            "headers when it carried a valid token.",
        },
        "xffNumTrustedHops": {
            "type": "integer",
            "minimum": 0,
            "maximum": 16,
            "description": "How rules' `remoteIpBlocks` read the client address from "
            "`X-Forwarded-For`, as Envoy's `xff_num_trusted_hops` with `use_remote_address: "
            "true` (Istio's `numTrustedProxies`): the (N+1)th address from the right, the N "
            "after it appended by proxies you trust. 0: the last address (the one the proxy "
            "appended for the peer it saw). A header with fewer addresses means the "
            "connection's source address. Set it to what your proxies really append: a "
            "larger number lets a client choose its own address.",
        },
        "denyWith": _DENY_WITH,
        "rules": _list(_RULE, "Rules in order; the first match decides.", minItems=1, maxItems=256),
        "dpop": _DPOP,
        "clientCertificate": _CLIENT_CERTIFICATE,
        "internalToken": _INTERNAL_TOKEN,
        "login": LOGIN_SPEC,
        "response": _obj(
            "What an allowed request carries to the upstream.",
            {
                "headers": _list(_HEADER_FROM_CLAIM, "Identity headers."),
                "stripAuthorization": {
                    "type": "boolean",
                    "default": False,
                    "description": "Remove the token's header before the upstream sees it.",
                },
            },
        ),
    },
    required=["targets", "rules"],
)

# `*`, or a DNS name, optionally behind `*.`; compared case-insensitively.
_LABEL = "[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?"
HOST_PATTERN = rf"^(\*|(\*\.)?{_LABEL}(\.{_LABEL})*)$"

GRANT_SPEC: JSON = _obj(
    "Hosts that AuthzPolicies in the listed namespaces may target (cluster mode). A namespaced "
    "AuthzPolicy serves a host only if a HostGrant names a pattern covering it and the "
    "policy's namespace: `*.example.com` covers `a.example.com` and `*.a.example.com`, `*` "
    "covers everything. Cluster-scoped: only cluster admins create HostGrants.",
    {
        "hosts": _list(
            _str("A host, `*.example.com` or `*`.", pattern=HOST_PATTERN, maxLength=253),
            "Host patterns granted.",
            minItems=1,
            maxItems=1000,
        ),
        "namespaces": _list(
            _str("A namespace name.", pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=63),
            "Namespaces whose AuthzPolicies may target these hosts.",
            minItems=1,
            maxItems=1000,
        ),
    },
    required=["hosts", "namespaces"],
)

_REVOCATION_ENTRY = _obj(
    "Tokens refused although they have not expired: one token (`jti`), or every token of a "
    "`subject` and/or an `issuer` issued before `issuedBefore`. Fields given must all match.",
    {
        "jti": _str(
            "The token's `jti` (JWT ID, or an introspection answer's).", minLength=1, maxLength=256
        ),
        "subject": _str("The token's `sub`.", minLength=1, maxLength=1024),
        "issuer": _str(
            "The token's `iss`, as the issuer's `issuer` names it. Absent: any issuer.",
            minLength=1,
            maxLength=2048,
        ),
        "issuedBefore": _str(
            "Refuse the matching tokens issued (`iat`) before this RFC 3339 time; a token "
            "without `iat` counts as issued before. On a `jti` entry it only dates the entry "
            "(write when the token was revoked): it lapses maxTokenLifetimeSeconds later.",
            format="date-time",
            maxLength=64,
        ),
        "expiresAt": _str(
            "A `jti` entry: the token's `exp` as an RFC 3339 time, when known; the entry "
            "lapses then.",
            format="date-time",
            maxLength=64,
        ),
        "reason": _str("Why, for the humans reading the list.", maxLength=256),
    },
)

REVOCATION_SPEC: JSON = _obj(
    "Tokens refused before they expire, whatever policy or issuer they meet: cached tokens "
    "included, checked on every request. An entry lapses on its own once no token it matches "
    "can still be valid: at its `expiresAt`, or `maxTokenLifetimeSeconds` after its "
    "`issuedBefore` (plus 10 minutes, the largest clock skew an issuer may allow).",
    {
        "maxTokenLifetimeSeconds": {
            "type": "integer",
            "minimum": 1,
            "maximum": 31536000,
            "default": DEFAULT_MAX_TOKEN_LIFETIME,
            "description": "The longest lifetime of the tokens these entries concern (exp - "
            "iat): an entry stops matching this long after its issuedBefore. Too short and a "
            "revoked token would be accepted again before it expires.",
        },
        "entries": _list(_REVOCATION_ENTRY, "The revoked tokens.", maxItems=10000),
    },
    required=["entries"],
)

SPECS: dict[str, JSON] = {
    "JWTIssuer": ISSUER_SPEC,
    "ClusterJWTIssuer": ISSUER_SPEC,
    "AuthzPolicy": POLICY_SPEC,
    "HostGrant": GRANT_SPEC,
    REVOCATION_KIND: REVOCATION_SPEC,
}


def rule_families(kind: str, *, cluster: bool) -> frozenset[str]:
    """Which `RULES` apply to a kind: `tenant-issuer` rules hold for JWTIssuers in the
    cluster (written by namespace users), not for policy files or ClusterJWTIssuers."""
    if kind in ISSUER_KINDS:
        tenant = cluster and kind not in CLUSTER_SCOPED
        return frozenset({"issuer", "tenant-issuer"} if tenant else {"issuer"})
    if kind == REVOCATION_KIND:
        return frozenset({"revocation"})
    return frozenset({"policy"} if kind == POLICY_KIND else {"grant"})


def _exactly_one(*conditions: str) -> str:
    """A CEL sum of 0/1 terms: far cheaper for the API server's cost estimate than
    filtering a list literal, which matters for rules evaluated on every list item."""
    return " + ".join(f"({c} ? 1 : 0)" for c in conditions) + " == 1"


# A field that holds any JSON value (equals, in, contains) has no type, and the API server's
# CEL cannot see a field without one: the CRD rule counts the typed operators only, and
# "exactly one" in full is checked by authz itself (a rule without CEL, below), which
# reports an object breaking it as not Ready, as for any invalid object.
_CLAIM_TYPED_OPERATORS = " + ".join(
    f"({c} ? 1 : 0)"
    for c in (
        "has(self.present)",
        "has(self.regex)",
        "has(self.atLeast) || has(self.atMost)",
        "has(self.maxAgeSeconds)",
    )
)
CLAIM_TYPED_MESSAGE = "at most one of present, regex, maxAgeSeconds, atLeast/atMost may be set"
CLAIM_OPERATOR_MESSAGE = (
    "exactly one of equals, in, present, regex, contains, maxAgeSeconds, or atLeast and/or "
    "atMost must be set"
)
_HEADER_ONE_OPERATOR = _exactly_one(
    "has(self.present)", "has(self.equals)", "has(self.__in__)", "has(self.prefix)",
    "has(self.regex)",
)  # fmt: skip
HEADER_OPERATOR_MESSAGE = "exactly one of present, equals, in, prefix, regex must be set"
_DENY_STATUS = (
    "has(self.redirect) ? (!has(self.status) || (self.status >= 300 && self.status < 400)) "
    ": (!has(self.status) || self.status >= 400)"
)
DENY_STATUS_MESSAGE = "a redirect goes with a 3xx status, and a 3xx status with a redirect"
# Headers that frame or route a response: a policy setting one could split or smuggle it.
FRAMING_HEADERS = (
    "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
    "trailer", "proxy-connection", "host",
)  # fmt: skip
_NOT_FRAMING = "!(self.name.lowerAscii() in [{}])".format(
    ", ".join(f"'{h}'" for h in FRAMING_HEADERS)
)
FRAMING_MESSAGE = "denyWith headers cannot set " + ", ".join(FRAMING_HEADERS)


def _key_sources() -> str:
    """Exactly one key source, or none on an introspection-only issuer."""
    count = " + ".join(
        f"({c} ? 1 : 0)"
        for c in (
            "has(self.jwks)",
            "has(self.jwksFile)",
            "has(self.jwksUri)",
            "has(self.discovery) && self.discovery",
            "has(self.discoveryUrl)",
            "has(self.publicKeys)",
            "has(self.x509CertificatesUri)",
            "has(self.hmacSecretFile)",
            "has(self.hmacSecretRef)",
        )
    )
    return f"{count} == 1 || ({count} == 0 && has(self.introspection))"


_SECRETS = "(has(self.clientSecretFile) ? 1 : 0) + (has(self.clientSecretRef) ? 1 : 0)"
_KEYS = "(has(self.privateKeyFile) ? 1 : 0) + (has(self.privateKeyRef) ? 1 : 0)"

# Cross-field rules: (family, field path, CEL expression for the CRD, message); `rule_families`
# says which families apply to a kind. An empty CEL expression: checked by authz only (the
# API server cannot, see _CLAIM_TYPED_OPERATORS).
# `validate` enforces the same rules in Python; a test keeps the two in step.
RULES: tuple[tuple[str, str, str, str], ...] = (
    (
        "issuer",
        "spec",
        _key_sources(),
        "exactly one key source must be set: jwks, jwksFile, jwksUri, discovery, discoveryUrl, "
        "publicKeys, x509CertificatesUri, hmacSecretFile or hmacSecretRef (none: introspection "
        "only)",
    ),
    (
        "issuer",
        "spec",
        "(!has(self.hmacSecretFile) && !has(self.hmacSecretRef)) || "
        "(has(self.algorithms) && self.algorithms.all(a, a.startsWith('HS')))",
        "hmacSecretFile and hmacSecretRef need algorithms listing only HS256, HS384 or HS512",
    ),
    (
        "issuer",
        "spec",
        "has(self.tenants) == self.issuer.contains('{tenant}')",
        "tenants and a {tenant} placeholder in issuer go together",
    ),
    (
        "issuer",
        "spec",
        "!has(self.tenantClaim) || has(self.tenants)",
        "tenantClaim needs tenants",
    ),
    ("issuer", "spec.requiredClaims[]", f"{_CLAIM_TYPED_OPERATORS} <= 1", CLAIM_TYPED_MESSAGE),
    ("issuer", "spec.requiredClaims[]", "", CLAIM_OPERATOR_MESSAGE),
    (
        "issuer",
        "spec",
        "!(((has(self.discovery) && self.discovery) || has(self.discoveryUrl)) && "
        "has(self.tenants))",
        "discovery and discoveryUrl need a fixed issuer; for an issuer template set jwksUri",
    ),
    (
        "issuer",
        "spec",
        "(has(self.fetch) && has(self.fetch.allowInsecureHttp) && self.fetch.allowInsecureHttp) || "
        "((!has(self.jwksUri) || self.jwksUri.startsWith('https://')) && "
        "(!has(self.x509CertificatesUri) || self.x509CertificatesUri.startsWith('https://')) && "
        "(!has(self.discoveryUrl) || self.discoveryUrl.startsWith('https://')) && "
        "(!has(self.discovery) || !self.discovery || self.issuer.startsWith('https://')))",
        "key URLs (jwksUri, x509CertificatesUri, discoveryUrl, the discovery issuer) must use "
        "https unless fetch.allowInsecureHttp is true",
    ),
    (
        "issuer",
        "spec",
        "!has(self.fetch) || has(self.jwksUri) || has(self.x509CertificatesUri) || "
        "has(self.discoveryUrl) || (has(self.discovery) && self.discovery)",
        "fetch applies only to remote key sources: jwksUri, discovery, discoveryUrl or "
        "x509CertificatesUri",
    ),
    (
        "issuer",
        "spec.fetch",
        "!(has(self.caFile) && has(self.caBundleRef))",
        "set at most one of fetch.caFile, fetch.caBundleRef",
    ),
    (
        "tenant-issuer",
        "spec.fetch",
        "!has(self.allowInsecureHttp) || !self.allowInsecureHttp",
        "a JWTIssuer in the cluster fetches keys over https only: fetch.allowInsecureHttp is "
        "for policy files and ClusterJWTIssuers",
    ),
    (
        "tenant-issuer",
        "spec.fetch",
        "!has(self.caFile)",
        "fetch.caFile reads the authorizer's filesystem: a JWTIssuer in the cluster names a "
        "ConfigMap with fetch.caBundleRef",
    ),
    (
        "tenant-issuer",
        "spec.fetch.caBundleRef",
        "!has(self.namespace)",
        "caBundleRef.namespace is for ClusterJWTIssuers: a JWTIssuer reads ConfigMaps in its "
        "own namespace",
    ),
    (
        "issuer",
        "spec.fetch",
        f"(has(self.minRefreshSeconds) ? self.minRefreshSeconds : "
        f"{FETCH_DEFAULTS['minRefreshSeconds']}) <= (has(self.maxRefreshSeconds) ? "
        f"self.maxRefreshSeconds : {FETCH_DEFAULTS['maxRefreshSeconds']})",
        "minRefreshSeconds must not exceed maxRefreshSeconds",
    ),
    (
        "issuer",
        "spec.publicKeys[]",
        _exactly_one("has(self.pem)", "has(self.file)"),
        "exactly one of pem, file must be set",
    ),
    (
        "issuer",
        "spec.tokenSources[]",
        _exactly_one("has(self.header)", "has(self.cookie)", "has(self.query)"),
        "exactly one of header, cookie, query must be set",
    ),
    (
        "policy",
        "spec.targets",
        "has(self.hosts) || has(self.contextExtensions) || has(self.workloadSelector)",
        "at least one target must be set: hosts, contextExtensions or workloadSelector",
    ),
    (
        "policy",
        "spec.rules[]",
        "!has(self.action) || self.action == 'requireToken' || "
        "(!has(self.requireScopes) && !has(self.requireRoles) && !has(self.claims))",
        "requireScopes, requireRoles and claims need action requireToken",
    ),
    ("policy", "spec.rules[].claims[]", f"{_CLAIM_TYPED_OPERATORS} <= 1", CLAIM_TYPED_MESSAGE),
    ("policy", "spec.rules[].claims[]", "", CLAIM_OPERATOR_MESSAGE),
    (
        "policy",
        "spec.rules[].match.headers[]",
        _HEADER_ONE_OPERATOR,
        HEADER_OPERATOR_MESSAGE,
    ),
    (
        "policy",
        "spec.rules[].match.notHeaders[]",
        _HEADER_ONE_OPERATOR,
        HEADER_OPERATOR_MESSAGE,
    ),
    (
        "policy",
        "spec",
        "has(self.xffNumTrustedHops) || !self.rules.exists(r, has(r.match) && "
        "(has(r.match.remoteIpBlocks) || has(r.match.notRemoteIpBlocks)))",
        "remoteIpBlocks and notRemoteIpBlocks need xffNumTrustedHops",
    ),
    (
        "policy",
        "spec.rules[]",
        "!has(self.action) || self.action != 'deny' || "
        "(!has(self.issuers) && !has(self.audiences))",
        "issuers and audiences do not apply to deny rules",
    ),
    *(
        ("policy", path, _DENY_STATUS, DENY_STATUS_MESSAGE)
        for path in (
            "spec.denyWith.unauthenticated",
            "spec.denyWith.unauthorized",
            "spec.rules[].denyWith.unauthenticated",
            "spec.rules[].denyWith.unauthorized",
        )
    ),
    *(
        ("policy", f"{path}.headers[]", _NOT_FRAMING, FRAMING_MESSAGE)
        for path in (
            "spec.denyWith.unauthenticated",
            "spec.denyWith.unauthorized",
            "spec.rules[].denyWith.unauthenticated",
            "spec.rules[].denyWith.unauthorized",
        )
    ),
    (
        "policy",
        "spec",
        "has(self.dpop) || !self.rules.exists(r, has(r.requireDPoP) && r.requireDPoP)",
        "rules with requireDPoP need the policy's dpop block",
    ),
    (
        "policy",
        "spec.login",
        _exactly_one(
            "has(self.clientSecretFile)",
            "has(self.clientSecretRef)",
            "has(self.privateKeyFile)",
            "has(self.privateKeyRef)",
        ),
        "login needs exactly one client credential: clientSecretFile, clientSecretRef, "
        "privateKeyFile or privateKeyRef",
    ),
    (
        "policy",
        "spec.login",
        "!has(self.clientAuthentication) || ((self.clientAuthentication == 'private_key_jwt') "
        "== (has(self.privateKeyFile) || has(self.privateKeyRef)))",
        "clientAuthentication private_key_jwt goes with privateKeyFile or privateKeyRef, "
        "the client_secret methods with a secret",
    ),
    (
        "policy",
        "spec.login",
        "!has(self.scopes) || self.scopes.exists(s, s == 'openid')",
        "login.scopes must include openid",
    ),
    (
        "policy",
        "spec.login",
        f"(has(self.callbackPath) ? self.callbackPath : '{LOGIN_DEFAULTS['callbackPath']}') != "
        f"(has(self.logoutPath) ? self.logoutPath : '{LOGIN_DEFAULTS['logoutPath']}') && "
        f"(!has(self.loginPath) || (self.loginPath != (has(self.callbackPath) ? "
        f"self.callbackPath : '{LOGIN_DEFAULTS['callbackPath']}') && self.loginPath != "
        f"(has(self.logoutPath) ? self.logoutPath : '{LOGIN_DEFAULTS['logoutPath']}')))",
        "login.callbackPath, logoutPath and loginPath must differ",
    ),
    (
        "policy",
        "spec.login.session",
        _exactly_one("has(self.keysFile)", "has(self.keysRef)"),
        "login.session needs exactly one of keysFile, keysRef",
    ),
    (
        "policy",
        "spec.login.session",
        f"(has(self.idleTimeoutSeconds) ? self.idleTimeoutSeconds : "
        f"{LOGIN_DEFAULTS['idleTimeoutSeconds']}) <= (has(self.absoluteTimeoutSeconds) ? "
        f"self.absoluteTimeoutSeconds : {LOGIN_DEFAULTS['absoluteTimeoutSeconds']})",
        "login.session.idleTimeoutSeconds must not exceed absoluteTimeoutSeconds",
    ),
    (
        "issuer",
        "spec.introspection",
        "self.endpoint.startsWith('https://') || "
        "(has(self.allowInsecureHttp) && self.allowInsecureHttp)",
        "introspection.endpoint must use https unless introspection.allowInsecureHttp is true",
    ),
    (
        "issuer",
        "spec.introspection.clientAuth",
        f"self.method == 'private_key_jwt' || self.method == 'none' || {_SECRETS} == 1",
        "client_secret_basic and client_secret_post need exactly one of clientSecretFile, "
        "clientSecretRef",
    ),
    (
        "issuer",
        "spec.introspection.clientAuth",
        f"self.method != 'private_key_jwt' || {_KEYS} == 1",
        "private_key_jwt needs exactly one of privateKeyFile, privateKeyRef",
    ),
    (
        "issuer",
        "spec.introspection.clientAuth",
        f"self.method == 'private_key_jwt' ? {_SECRETS} == 0 : {_KEYS} == 0",
        "a client secret goes with client_secret_basic or client_secret_post, a private key "
        "with private_key_jwt",
    ),
    (
        "issuer",
        "spec.introspection.clientAuth",
        f"self.method != 'none' || ({_SECRETS} == 0 && !has(self.clientId))",
        "method none sends no client credentials: no clientId, clientSecretFile or clientSecretRef",
    ),
    (
        "issuer",
        "spec.introspection.clientAuth",
        "self.method == 'none' || has(self.clientId)",
        "clientId is required unless method is none",
    ),
    (
        "issuer",
        "spec.introspection.clientAuth",
        "self.method == 'private_key_jwt' || "
        "!(has(self.signingAlgorithm) || has(self.keyId) || has(self.assertionAudience))",
        "signingAlgorithm, keyId and assertionAudience apply to private_key_jwt only",
    ),
    (
        "revocation",
        "spec.entries[]",
        "has(self.jti) || has(self.subject) || has(self.issuer)",
        "an entry names a jti, a subject or an issuer",
    ),
    (
        "revocation",
        "spec.entries[]",
        "has(self.issuedBefore) || (has(self.jti) && has(self.expiresAt))",
        "an entry needs issuedBefore (a jti entry: issuedBefore or expiresAt)",
    ),
    (
        "revocation",
        "spec.entries[]",
        "!has(self.expiresAt) || has(self.jti)",
        "expiresAt applies to jti entries only",
    ),
    (
        "tenant-issuer",
        "spec.introspection",
        "!has(self.allowInsecureHttp) || !self.allowInsecureHttp",
        "a JWTIssuer in the cluster calls its introspection endpoint over https only: "
        "introspection.allowInsecureHttp is for policy files and ClusterJWTIssuers",
    ),
    (
        "tenant-issuer",
        "spec.introspection",
        "!has(self.caFile)",
        "introspection.caFile reads the authorizer's filesystem: a JWTIssuer in the cluster "
        "verifies its introspection endpoint with the system CAs",
    ),
)
