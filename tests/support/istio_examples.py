"""Istio RequestAuthentication / AuthorizationPolicy examples, written after the examples in
Istio's own reference documentation (security/v1beta1 authorization_policy and
request_authentication), with the decisions Istio gives for a few requests each.

`authz convert istio` is tested on them: the inputs must pass Istio's real CRD schemas, and
the converted authz objects must decide each request as Istio does (where authz answers
better, a 401 with a challenge for a missing token where Istio's RBAC says 403, the case
says so). Tokens are the shared test tokens (tests.support.tokens), whose key the
RequestAuthentications carry inline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.support.tokens import AUDIENCE, ISSUER, signing_key

JWKS = json.dumps({"keys": [signing_key("ES256")[1]]})
OTHER_ISSUER = "https://other.test"
OTHER_JWKS = json.dumps({"keys": [signing_key("ES256", "o1")[1]]})


BEARER = [{"name": "Authorization", "prefix": "Bearer "}]


def _authn(name: str = "jwt", selector: str = "app: httpbin", **extra: Any) -> str:
    """A RequestAuthentication of the shared test issuer; the token only in Authorization
    unless `fromHeaders=None` (Istio's default also reads ?access_token=, authz does not)."""
    rule = {"issuer": ISSUER, "jwks": JWKS, "audiences": [AUDIENCE], "fromHeaders": BEARER}
    rule.update(extra)
    rules = [{k: v for k, v in rule.items() if v is not None}]
    return yaml.safe_dump(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": name, "namespace": "foo"},
            "spec": {
                "selector": {"matchLabels": yaml.safe_load(selector)},
                "jwtRules": rules,
            },
        }
    )


@dataclass(frozen=True)
class Case:
    """A request and the status authz answers after conversion (Istio's, unless `why`)."""

    status: int
    method: str = "GET"
    path: str = "/"
    host: str = "httpbin.foo"
    token: dict[str, Any] | None = None  # claims of a shared-key token; None: no token
    kid: str = "k1"  # the shared ES256 test key that signs it (o1: OTHER_ISSUER's)
    principal: str = ""  # the mTLS peer (SPIFFE ID)
    source: str = "10.0.0.1"
    port: int = 8000
    headers: dict[str, str] = field(default_factory=dict)
    why: str = ""


@dataclass(frozen=True)
class Example:
    name: str
    yaml: str
    cases: tuple[Case, ...]
    labels: tuple[tuple[str, str], ...] = (("app", "httpbin"),)
    options: dict[str, Any] = field(default_factory=dict)
    report: tuple[str, ...] = ()  # substrings the report must contain
    exact: bool = True

    def docs(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.yaml) if d]


SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
TEST_NS = "spiffe://cluster.local/ns/test/sa/client"
DEV = "spiffe://cluster.local/ns/dev/sa/builder"
MISSING_TOKEN = "authz answers 401 with a Bearer challenge where Istio's RBAC answers 403"

EXAMPLES: tuple[Example, ...] = (
    Example(
        "allow-nothing",
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
""",
        (Case(403), Case(403, principal=SLEEP)),
        labels=(),
    ),
    Example(
        "allow-all",
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: foo}
spec:
  rules:
  - {}
""",
        (Case(200), Case(200, method="DELETE", path="/x")),
        labels=(),
    ),
    Example(
        "deny-post-from-dev",
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source: {namespaces: ["dev"]}
    to:
    - operation: {methods: ["POST"]}
""",
        (
            Case(403, method="POST", principal=DEV),
            Case(200, method="GET", principal=DEV),  # no ALLOW policy: allowed
            Case(200, method="POST", principal=SLEEP),
            Case(200, method="POST"),  # no mTLS: no namespace, the DENY does not match
        ),
        labels=(),
    ),
    Example(
        "deny-post-on-8080",
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: {methods: ["POST"], ports: ["8080"]}
""",
        (Case(403, method="POST", port=8080), Case(200, method="POST"), Case(200, port=8080)),
        labels=(),
    ),
    Example(
        "httpbin",
        _authn()
        + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    - source: {namespaces: ["test"]}
    to:
    - operation: {methods: ["GET"], paths: ["/info*"]}
    - operation: {methods: ["POST"], paths: ["/data"]}
    when:
    - key: request.auth.claims[iss]
      values: ["https://issuer.test"]
""",
        (
            Case(200, path="/info/a", principal=SLEEP, token={}),
            Case(200, method="POST", path="/data", principal=TEST_NS, token={}),
            Case(403, method="POST", path="/info", principal=SLEEP, token={}),
            Case(403, path="/info", principal=DEV, token={}),
            Case(401, path="/info", principal=SLEEP, why=MISSING_TOKEN),
            Case(401, path="/info", principal=SLEEP, token={"exp": 1}),  # invalid: Istio 401
        ),
    ),
    Example(
        "require-jwt",
        _authn(fromHeaders=None)
        + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source: {requestPrincipals: ["*"]}
""",
        (Case(200, token={}), Case(401, why=MISSING_TOKEN), Case(401, token={"aud": "x"})),
        report=("also reads a token from the access_token query parameter",),
        exact=False,
    ),
    Example(
        "require-jwt-except-healthz",
        _authn()
        + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source: {requestPrincipals: ["*"]}
  - to:
    - operation: {paths: ["/healthz"]}
""",
        (Case(200, path="/healthz"), Case(401, path="/ip", why=MISSING_TOKEN)),
    ),
    Example(
        "issuer-per-host",
        _authn()
        + f"""---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: other, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  jwtRules:
  - issuer: {OTHER_ISSUER}
    jwks: '{OTHER_JWKS}'
    audiences: [api]
    fromHeaders: [{{name: Authorization, prefix: "Bearer "}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: httpbin, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  rules:
  - from:
    - source: {{requestPrincipals: ["{ISSUER}/*"]}}
    to:
    - operation: {{hosts: ["example.com"]}}
  - from:
    - source: {{requestPrincipals: ["{OTHER_ISSUER}/*"]}}
    to:
    - operation: {{hosts: ["another-host.com"]}}
""",
        (
            Case(200, host="example.com", token={}),
            Case(200, host="another-host.com", token={"iss": OTHER_ISSUER}, kid="o1"),
            Case(401, host="example.com", token={"iss": OTHER_ISSUER}, kid="o1", why="Istio: 403"),
            Case(403, host="third.example"),
        ),
    ),
    Example(
        "subject",
        _authn()
        + f"""---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: httpbin, namespace: foo}}
spec:
  selector: {{matchLabels: {{app: httpbin}}}}
  rules:
  - from:
    - source: {{requestPrincipals: ["{ISSUER}/alice", "*/ops-bot"]}}
    when:
    - key: request.auth.claims[groups]
      values: ["admins", "sre-*"]
""",
        (
            Case(200, token={"groups": ["admins"]}),
            Case(200, token={"sub": "ops-bot", "groups": ["sre-oncall"]}),
            Case(403, token={"sub": "mallory", "groups": ["admins"]}),
            Case(403, token={"groups": ["users"]}),
        ),
    ),
    Example(
        "require-jwt-by-deny",
        _authn()
        + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - from:
    - source: {notRequestPrincipals: ["*"]}
""",
        (Case(200, token={}), Case(401, why=MISSING_TOKEN)),
    ),
    Example(
        "addresses-headers-ports",
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source: {ipBlocks: ["10.0.0.0/16"], notIpBlocks: ["10.0.9.0/24"]}
    to:
    - operation: {notPaths: ["/admin*"], ports: ["8000"]}
    when:
    - key: request.headers[version]
      values: ["v1", "v2*"]
  - from:
    - source: {remoteIpBlocks: ["203.0.113.0/24"]}
    when:
    - key: destination.port
      values: ["8443"]
""",
        (
            Case(200, headers={"version": "v2-beta"}),
            Case(403, headers={"version": "v3"}),
            Case(403, headers={"version": "v1"}, source="10.0.9.4"),
            Case(403, headers={"version": "v1"}, path="/admin/x"),
            Case(403, headers={"version": "v1"}, port=9000),
            Case(200, port=8443, source="192.0.2.9", headers={"x-forwarded-for": "203.0.113.7"}),
            Case(403, port=8443, source="192.0.2.9", headers={"x-forwarded-for": "198.51.100.1"}),
        ),
        options={"xff_num_trusted_hops": 0},
    ),
    Example(
        "audit-and-custom",
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to:
    - operation: {methods: ["GET"], paths: ["/user/profile/*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: my-custom-authz}
  rules:
  - to:
    - operation: {paths: ["/admin/*"]}
""",
        (Case(200, path="/user/profile/me"), Case(200, path="/admin/x")),
        labels=(),
        report=("AUDIT is not converted", "CUSTOM is not converted"),
    ),
    Example(
        "not-exactly",
        _authn()
        + """---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-guests, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin*"]}
    when:
    - key: request.auth.claims[groups]
      values: ["guests"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - when:
    - key: connection.sni
      values: ["httpbin.foo.svc.cluster.local"]
  - from:
    - source: {requestPrincipals: ["*"]}
""",
        (
            # Istio allows a non-guest at /admin: the DENY's token condition cannot be
            # kept, so every /admin request is denied (stricter, and reported)
            Case(403, path="/admin/x", token={"groups": ["staff"]}, why="Istio: 200"),
            Case(200, path="/other", token={}),
            Case(401, path="/other", why="the SNI rule is left out: Istio 200 by SNI"),
        ),
        report=(
            "request.auth.claims[groups]: authz decides deny rules before it reads the token; "
            "the DENY rule is kept without it, so it denies more",
            "when[0] connection.sni: no authz equivalent; the ALLOW rule is left out",
        ),
        exact=False,
    ),
)
