"""The RFCs' own examples as test vectors: RFC 7638 section 3.1 (a JWK thumbprint) and
RFC 9449 (the proof key of section 4.1 and its thumbprint, the token-request proof of
Figure 3, the resource-request proof with `ath` of Figure 13 and the access token it is for).

The proofs are the RFC's bytes, signed by its authors' key: they must verify here exactly
as written, and fail as soon as anything they are bound to differs.
"""

from __future__ import annotations

from typing import Any

import pytest

from authz.keys.thumbprint import jwk_thumbprint
from authz.policy.possession import DPoPSettings
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.proof import ProofKeys, access_token_hash, verify_proof
from authz.request.view import KnownConnection, RequestView, request_view

RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
        "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

# RFC 9449 section 4.1: the example proof key (EC P-256) and its RFC 7638 thumbprint.
RFC9449_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
RFC9449_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
# Figure 3: the proof of a token request, POST https://server.example.com/token.
TOKEN_REQUEST_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0Vj"
    "NoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5"
    "VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVC"
    "IsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP"
    "4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
# Figure 13: a DPoP-protected resource request and its proof, which carries `ath`.
ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
ATH = "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
RESOURCE_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0Vj"
    "NoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5"
    "VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIi"
    "wiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2"
    "MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhr"
    "tNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA"
)
RESOURCE_IAT = 1562262618


def _resource_request(
    method: str = "GET", host: str = "resource.example.org", path: str = "/protectedresource"
) -> RequestView:
    return request_view(method, host, path, {}, {}, connection=KnownConnection(scheme="https"))


def test_rfc7638_thumbprint() -> None:
    assert jwk_thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


def test_rfc9449_proof_key_thumbprint() -> None:
    assert jwk_thumbprint(RFC9449_JWK) == RFC9449_JKT


def test_rfc9449_access_token_hash() -> None:
    assert access_token_hash(ACCESS_TOKEN) == ATH


def test_rfc9449_resource_request_proof_verifies_as_written() -> None:
    proof = verify_proof(
        RESOURCE_PROOF,
        request=_resource_request(),
        ath=access_token_hash(ACCESS_TOKEN),
        now=RESOURCE_IAT,
        settings=DPoPSettings(),
        keys=ProofKeys(),
    )
    assert (proof.jkt, proof.jti, proof.iat, proof.nonce) == (
        RFC9449_JKT,
        "e1j3V_bKic8-LAEB",
        RESOURCE_IAT,
        None,
    )


_REQ = {"method": "GET", "host": "resource.example.org", "path": "/protectedresource"}
_ARGS = {"token": ACCESS_TOKEN, "now": RESOURCE_IAT, "settings": DPoPSettings()}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"method": "POST"}, Reason.DPOP_METHOD_MISMATCH),
        ({"path": "/otherresource"}, Reason.DPOP_URI_MISMATCH),
        ({"host": "resource.example.com"}, Reason.DPOP_URI_MISMATCH),
        ({"token": ACCESS_TOKEN + "x"}, Reason.DPOP_TOKEN_HASH_MISMATCH),
        ({"now": RESOURCE_IAT + 61}, Reason.DPOP_PROOF_EXPIRED),
        ({"now": RESOURCE_IAT - 6}, Reason.DPOP_PROOF_EXPIRED),
        ({"settings": DPoPSettings(algorithms=("EdDSA",))}, Reason.DPOP_ALGORITHM_NOT_ALLOWED),
    ],
)
def test_rfc9449_resource_proof_fails_for_anything_else(
    change: dict[str, Any], reason: Reason
) -> None:
    req = {**_REQ, **{k: v for k, v in change.items() if k in _REQ}}
    args = {**_ARGS, **{k: v for k, v in change.items() if k in _ARGS}}
    with pytest.raises(TokenError) as caught:
        verify_proof(
            RESOURCE_PROOF,
            request=_resource_request(req["method"], req["host"], req["path"]),
            ath=access_token_hash(args["token"]),
            now=args["now"],
            settings=args["settings"],
            keys=ProofKeys(),
        )
    assert caught.value.reason is reason


def test_rfc9449_token_request_proof_signature_and_claims() -> None:
    """Figure 3 is a token-request proof: no `ath`, so a resource server refuses it (as
    malformed), but only after its header, key and signature-relevant claims parse."""
    request = request_view(
        "POST", "server.example.com", "/token", {}, {}, connection=KnownConnection(scheme="https")
    )
    with pytest.raises(TokenError) as caught:
        verify_proof(
            TOKEN_REQUEST_PROOF,
            request=request,
            ath=access_token_hash(ACCESS_TOKEN),
            now=1562262616,
            settings=DPoPSettings(),
            keys=ProofKeys(),
        )
    assert caught.value.reason is Reason.DPOP_PROOF_MALFORMED
    assert "ath" in caught.value.detail


def test_rfc9449_proof_with_a_flipped_signature_bit_fails() -> None:
    head, body, signature = RESOURCE_PROOF.split(".")
    flipped = ("B" if signature[0] != "B" else "C") + signature[1:]
    with pytest.raises(TokenError) as caught:
        verify_proof(
            f"{head}.{body}.{flipped}",
            request=_resource_request(),
            ath=access_token_hash(ACCESS_TOKEN),
            now=RESOURCE_IAT,
            settings=DPoPSettings(),
            keys=ProofKeys(),
        )
    assert caught.value.reason is Reason.DPOP_SIGNATURE_INVALID
