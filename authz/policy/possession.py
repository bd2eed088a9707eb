"""What a policy says about proof of possession and the credential the upstream gets.

Compiled forms of the policy's `dpop`, `clientCertificate` and `internalToken` blocks, read
by the request path: a DPoP-bound token (RFC 9449), a certificate-bound token (RFC 8705), and
the short internal token authz mints for the upstream in place of the external credential.
"""

from __future__ import annotations

from dataclasses import dataclass

# Proof algorithms accepted by default: every asymmetric JWS algorithm authz verifies.
# RFC 9449 section 11.6: never `none`, never a MAC.
DPOP_ALGORITHMS = (
    "ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
)  # fmt: skip
DPOP_DEFAULTS = {"proofMaxAgeSeconds": 60, "clockSkewSeconds": 5}
INTERNAL_TOKEN_LIFETIME = 300
INTERNAL_TOKEN_MAX_LIFETIME = 3600
INTERNAL_TOKEN_HEADER = "authorization"  # noqa: S105 (a header name)


@dataclass(frozen=True, slots=True)
class DPoPSettings:
    """How this policy checks DPoP proofs. A proof is accepted from `max_age` seconds after
    its `iat` back to `skew` seconds before it (a client clock slightly ahead)."""

    algorithms: tuple[str, ...] = DPOP_ALGORITHMS
    max_age: int = DPOP_DEFAULTS["proofMaxAgeSeconds"]
    skew: int = DPOP_DEFAULTS["clockSkewSeconds"]
    require_nonce: bool = False

    @property
    def algs(self) -> str:
        """The `algs` parameter of a DPoP challenge (RFC 9449 section 7.1)."""
        return " ".join(self.algorithms)


@dataclass(frozen=True, slots=True)
class ClientCertificateSettings:
    """Where the client certificate of a certificate-bound token is read: the connection
    (Envoy's `include_peer_certificate`), and only if trusted the `x-forwarded-client-cert`
    header a proxy in front (an Istio sidecar or gateway) set."""

    trust_forwarded: bool = False


CONNECTION_ONLY = ClientCertificateSettings()


@dataclass(frozen=True, slots=True)
class InternalTokenSpec:
    """The internal token an allowed request carries upstream instead of its credential."""

    audience: str
    lifetime: int = INTERNAL_TOKEN_LIFETIME
    header: str = INTERNAL_TOKEN_HEADER

    @property
    def value_prefix(self) -> str:
        """`Bearer ` in `Authorization`; any other header carries the bare token."""
        return "Bearer " if self.header == "authorization" else ""
