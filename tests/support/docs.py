"""Policy documents built in code, as the schema knows them: a rule test needs no YAML file.

    docs = [issuer(jwks=jwks_of("ES256")), policy(rules=[rule("read", paths=["/r"])])]

Defaults make small valid objects that accept the shared test tokens of
tests.support.tokens (namespace `default`; issuer `idp` with the ES256 test key and the
test audience, trusted by policy `api` for every host); keyword arguments become spec
fields as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.tokens import AUDIENCE, ISSUER, signing_key

API_VERSION = "authz.io/v1alpha1"


def document(
    kind: str, name: str, spec: dict[str, Any], namespace: str | None = "default"
) -> dict[str, Any]:
    """Any authz.io object, spec exactly as given (for tests of validation itself)."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def jwks_of(alg: str = "ES256", kid: str = "k1") -> dict[str, Any]:
    """The public JWKS of the shared test key for (alg, kid) (see tests.support.tokens)."""
    return {"keys": [signing_key(alg, kid)[1]]}


def issuer(
    name: str = "idp", iss: str = ISSUER, *, namespace: str = "default", **spec: Any
) -> dict[str, Any]:
    """A JWTIssuer; without a key source it trusts the shared ES256 test key."""
    return document("JWTIssuer", name, _issuer_spec(iss, spec), namespace)


def cluster_issuer(name: str, iss: str = ISSUER, **spec: Any) -> dict[str, Any]:
    return document("ClusterJWTIssuer", name, _issuer_spec(iss, spec), None)


def _issuer_spec(iss: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Without a key source (and without introspection) the shared test key."""
    if not any(k in spec for k in _KEY_SOURCES) and "introspection" not in spec:
        spec["jwks"] = jwks_of()
    spec.setdefault("audiences", [AUDIENCE])
    return {"issuer": iss, **spec}


_KEY_SOURCES = (
    "jwks",
    "jwksFile",
    "jwksUri",
    "discovery",
    "publicKeys",
    "x509CertificatesUri",
    "hmacSecretFile",
    "hmacSecretRef",
)


def rule(
    name: str | None = None,
    *,
    paths: Sequence[str] = (),
    methods: Sequence[str] = (),
    hosts: Sequence[str] = (),
    **spec: Any,
) -> dict[str, Any]:
    """A rule; `paths`, `methods` and `hosts` go into `match`, the rest as written
    (`action`, `requireScopes`, `claims`, ...)."""
    match = {k: list(v) for k, v in (("paths", paths), ("methods", methods), ("hosts", hosts)) if v}
    out: dict[str, Any] = {**spec}
    if name is not None:
        out["name"] = name
    if match:
        out["match"] = match
    return out


def policy(
    name: str = "api",
    *,
    namespace: str = "default",
    hosts: Sequence[str] | None = ("*",),
    issuers: Sequence[str] = ("idp",),
    rules: Sequence[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An AuthzPolicy; `hosts=None` leaves targets to `spec["targets"]`."""
    body: dict[str, Any] = {
        "targets": {"hosts": list(hosts)} if hosts is not None else {},
        "rules": list(rules) if rules is not None else [rule("all")],
    }
    if issuers:
        body["issuers"] = [{"name": n} for n in issuers]
    if "targets" in spec:
        body["targets"].update(spec.pop("targets"))
    body.update(spec)
    return document("AuthzPolicy", name, body, namespace)


def host_grant(name: str, hosts: Sequence[str], namespaces: Sequence[str]) -> dict[str, Any]:
    """A HostGrant: `hosts` may be targeted by AuthzPolicies in `namespaces` (cluster mode)."""
    return document("HostGrant", name, {"hosts": list(hosts), "namespaces": list(namespaces)}, None)


def created(doc: dict[str, Any], when: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """The object as the API server returns it, created at `when` (RFC 3339)."""
    return {**doc, "metadata": {**doc["metadata"], "creationTimestamp": when}}


def write(path: Path, *docs: dict[str, Any]) -> Path:
    """Write `docs` as one YAML stream (for the tests that are about files)."""
    path.write_text(yaml.safe_dump_all(docs))
    return path
