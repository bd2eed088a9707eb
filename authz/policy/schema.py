"""The policy schema: one source of truth for file validation and the CRDs.

Written in the structural OpenAPI v3 subset Kubernetes accepts, which is also
valid JSON Schema, so `validate` checks files with exactly what the API
server will check. Cross-field rules that CEL expresses in the CRDs are
listed in `RULES` and enforced by `validate` in Python.
"""

from __future__ import annotations

from typing import Any

GROUP = "authz.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

ISSUER_KINDS = ("JWTIssuer", "ClusterJWTIssuer")
POLICY_KIND = "AuthzPolicy"
KINDS = (*ISSUER_KINDS, POLICY_KIND)
CLUSTER_SCOPED = frozenset({"ClusterJWTIssuer"})

ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ALGORITHMS = ASYMMETRIC_ALGORITHMS + HMAC_ALGORITHMS
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
ACTIONS = ("requireToken", "allowAnonymous", "deny")

JSON = dict[str, Any]


def _str(description: str, **extra: Any) -> JSON:
    return {"type": "string", "description": description, **extra}


def _list(items: JSON, description: str, **extra: Any) -> JSON:
    return {"type": "array", "items": items, "description": description, **extra}


def _obj(description: str, properties: JSON, **extra: Any) -> JSON:
    return {"type": "object", "description": description, "properties": properties, **extra}


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

ISSUER_SPEC: JSON = _obj(
    "A trusted token issuer: its `iss`, where its keys come from and how its tokens are checked.",
    {
        "issuer": _str("The exact `iss` value of this issuer's tokens.", minLength=1),
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
        "algorithms": _list(
            {"type": "string", "enum": list(ALGORITHMS)},
            "Accepted JWS algorithms. Default: all asymmetric ones. HS* only verify with an "
            "explicit `kty: oct` secret, never with a public key; `none` is never accepted.",
            minItems=1,
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
        "tokenSources": _list(
            _TOKEN_SOURCE,
            "Where this issuer's tokens are looked for. Default: `Authorization: Bearer`.",
            minItems=1,
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

_CLAIM_CONDITION = _obj(
    "A condition on one claim. Set exactly one of equals, in, present, regex. Values compare "
    'as strings: booleans as "true"/"false", numbers in JSON form; on an array claim, '
    "any element may satisfy the condition.",
    {
        "path": _CLAIM_PATH,
        "equals": _str("The claim equals this value."),
        "in": _list(_str("A value."), "The claim equals one of these values.", minItems=1),
        "present": {"type": "boolean", "description": "The claim is present (true) or absent."},
        "regex": _str(
            "The claim fully matches this regular expression (Python syntax).", minLength=1
        ),
    },
    required=["path"],
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
                    _str("A host, `*.example.com` or `*`; the port is ignored.", minLength=1),
                    "Hosts (`:authority`).",
                ),
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
        "claims": _list(_CLAIM_CONDITION, "Claim conditions; all must hold."),
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

POLICY_SPEC: JSON = _obj(
    "Which requests a policy covers, which issuers it trusts and the rules it enforces.",
    {
        "targets": _obj(
            "What the policy applies to; every target given must match. "
            "A request bound by a context extension uses that policy first.",
            {
                "hosts": _list(
                    _str("A host, `*.example.com` or `*`; the port is ignored.", minLength=1),
                    "Hosts (`:authority`).",
                ),
                "contextExtensions": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Envoy per-route `check_settings.context_extensions` "
                    "entries that bind a route to this policy, e.g. `{policy: orders}`.",
                },
                "workloadSelector": _obj(
                    "Sidecar mode: labels the authorizer process was given (--workload-labels).",
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
        "issuers": _list(
            _obj(
                "A reference to a trusted issuer.",
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
            ),
            "Issuers whose tokens this policy accepts.",
        ),
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
        "rules": _list(_RULE, "Rules in order; the first match decides.", minItems=1),
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

SPECS: dict[str, JSON] = {
    "JWTIssuer": ISSUER_SPEC,
    "ClusterJWTIssuer": ISSUER_SPEC,
    "AuthzPolicy": POLICY_SPEC,
}

# Cross-field rules: (kind, field path, CEL expression for the CRD, message).
# `validate` enforces the same rules in Python; a test keeps the two in step.
RULES: tuple[tuple[str, str, str, str], ...] = (
    (
        "issuer",
        "spec",
        "[has(self.jwks), has(self.jwksFile)].filter(x, x).size() == 1",
        "exactly one key source must be set: jwks or jwksFile",
    ),
    (
        "issuer",
        "spec.tokenSources[]",
        "[has(self.header), has(self.cookie), has(self.query)].filter(x, x).size() == 1",
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
    (
        "policy",
        "spec.rules[].claims[]",
        "[has(self.equals), has(self.in), has(self.present), has(self.regex)]"
        ".filter(x, x).size() == 1",
        "exactly one of equals, in, present, regex must be set",
    ),
)
