"""What an issuer's keys are made of, and how each kind of key document is read.

Static material (PEM public keys, an HMAC secret) becomes a KeySet at compile
time. Remote sources (a JWKS URI, OIDC discovery, a Google/Firebase X.509
certificate map) are described by a hashable `RemoteSource` plus `FetchSettings`;
the key manager fetches them in the background and reads them with `parse_remote`.
This module knows nothing about the policy schema: `policy.compile` maps specs here.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from authz.keys.fetch import FetchError, FetchResult
from authz.keys.jwk import (
    JWKSError,
    KeySet,
    NoUsableKeys,
    build_key_set,
    parse_jwk,
    parse_jwks,
    parse_pem_public_key,
    parse_x509_cert,
)

RemoteKind = Literal["discovery", "jwksUri", "x509"]
DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """How a remote source is fetched and refreshed (seconds; defaults live in the schema)."""

    refresh: int
    min_refresh: int
    max_refresh: int
    cooldown: int
    wait: float  # how long a request may wait for an unknown-kid refetch
    max_stale: int
    timeout: int
    ca_pem: str | None = None
    allow_http: bool = False
    public_only: bool = False  # never connect to loopback, link-local or unspecified addresses

    def refresh_after(self, max_age: int | None) -> int:
        """Seconds until the next scheduled refresh: the server's max-age within bounds."""
        if max_age is None:
            return self.refresh
        return min(max(max_age, self.min_refresh), self.max_refresh)

    def retry_after(self, failures: int) -> int:
        """Seconds before retrying after `failures` failed refreshes in a row: 1, 2, 4 ... 60."""
        return min(1 << min(failures - 1, 6), 60, self.refresh)


@dataclass(frozen=True, slots=True)
class RemoteSource:
    """Where an issuer's keys are fetched from; equal sources share one key manager entry.

    `url` is the JWKS or certificate-map URL, or for discovery the discovery document's.
    """

    kind: RemoteKind
    url: str
    issuer: str
    algorithms: frozenset[str]

    def describe(self) -> str:
        return f"{self.kind} {self.url}"


def discovery_url(issuer: str) -> str:
    """OIDC Discovery 1.0 section 4: a trailing slash of the issuer is dropped first."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def url_problem(url: str, allow_http: bool) -> str | None:
    """Why `url` cannot be fetched, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http" and not allow_http:
        return f"{url!r} is plain http; use https or set fetch.allowInsecureHttp (dev only)"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{url!r} is not an absolute http(s) URL"
    if parts.username is not None or parts.fragment:
        return f"{url!r} must not carry credentials or a fragment"
    return None


def jwks_uri_from_discovery(doc: object, issuer: str, allow_http: bool) -> str:
    """The `jwks_uri` of a discovery document that names exactly our issuer.

    An exact match (OIDC Discovery section 4.3) stops a document served for one
    issuer from supplying keys for another.
    """
    if not isinstance(doc, dict):
        raise FetchError(FetchResult.INVALID, "discovery document is not a JSON object")
    named = doc.get("issuer")
    if named != issuer:
        raise FetchError(
            FetchResult.ISSUER_MISMATCH,
            f"discovery document names issuer {str(named)[:200]!r}, not {issuer!r}",
        )
    uri = doc.get("jwks_uri")
    if not isinstance(uri, str):
        raise FetchError(FetchResult.INVALID, "discovery document has no jwks_uri")
    problem = url_problem(uri, allow_http)
    if problem is not None:
        raise FetchError(FetchResult.INVALID, f"discovery jwks_uri {problem}")
    return uri


def parse_remote(
    kind: RemoteKind, doc: object, allowed: frozenset[str]
) -> tuple[KeySet, list[str]]:
    """A fetched JWKS or certificate map -> (KeySet, warnings about skipped keys). A valid
    document with no usable key is an answer (an empty set: the issuer revoked its keys);
    only a malformed one is an error, which keeps the last good keys."""
    try:
        if kind == "x509":
            return parse_x509_map(doc, allowed)
        return parse_jwks(doc, allowed)
    except NoUsableKeys as exc:
        return KeySet.empty(), [str(exc)]
    except JWKSError as exc:
        raise FetchError(FetchResult.INVALID, str(exc)) from None


def parse_x509_map(doc: object, allowed: frozenset[str]) -> tuple[KeySet, list[str]]:
    """Google/Firebase `{kid: PEM certificate}`: only the certificates' public keys are used."""
    if not isinstance(doc, dict):
        raise JWKSError("certificate map must be a JSON object of kid -> PEM certificate")
    keys = []
    warnings: list[str] = []
    for kid, pem in doc.items():
        if not isinstance(pem, str):
            warnings.append(f"{kid[:64]!r}: not a PEM string")
            continue
        try:
            keys.append(parse_x509_cert(pem, kid, allowed))
        except JWKSError as exc:
            warnings.append(f"{kid[:64]!r}: {exc}")
    return build_key_set(keys, warnings, "certificate map", "the map is empty"), warnings


def pem_key_set(
    entries: Sequence[tuple[str | None, str | bytes]], allowed: frozenset[str]
) -> KeySet:
    """Hand-configured `(kid, PEM)` public keys; any unusable or ambiguous one is an error."""
    keys = []
    for i, (kid, pem) in enumerate(entries):
        try:
            keys.append(parse_pem_public_key(pem, kid, allowed))
        except JWKSError as exc:
            raise JWKSError(f"[{i}]: {exc}") from None
    warnings: list[str] = []
    key_set = build_key_set(keys, warnings, "publicKeys", "no key")
    if warnings:
        raise JWKSError("; ".join(warnings))
    return key_set


def hmac_key_set(secret: bytes, allowed: frozenset[str]) -> KeySet:
    """One HMAC secret without a kid: it verifies the HS tokens that name no kid."""
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")
    jwk: dict[str, Any] = {"kty": "oct", "k": k}
    return KeySet((parse_jwk(jwk, allowed),))
