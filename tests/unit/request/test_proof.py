"""DPoP proof checks one by one (RFC 9449 section 4.3), with keys generated at test time,
and the `htu` comparison table (RFC 3986 syntax- and scheme-based normalisation)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from authz.devtools import mint_token
from authz.keys.jwk import JWKSError
from authz.keys.thumbprint import b64url, certificate_thumbprint, jwk_thumbprint, public_members
from authz.policy.possession import DPoPSettings
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.proof import Proof, ProofKeys, access_token_hash, parse_target, verify_proof
from authz.request.view import KnownConnection, request_view
from tests.support.dpop import DROP, DPoPClient
from tests.support.pki import CA, pem_cert
from tests.support.tokens import NOW, b64url_decode

TOKEN = "an-access-token"
CLIENT = DPoPClient()


def _verify(
    proof: str,
    *,
    method: str = "GET",
    host: str = "api.example",
    path: str = "/",
    scheme: str = "https",
    settings: DPoPSettings | None = None,
    now: float = NOW,
) -> Proof:
    request = request_view(method, host, path, {}, {}, connection=KnownConnection(scheme=scheme))
    return verify_proof(
        proof,
        request=request,
        ath=access_token_hash(TOKEN),
        now=now,
        settings=settings or DPoPSettings(),
        keys=ProofKeys(),
    )


def _reason(proof: str, **kw: Any) -> Reason:
    with pytest.raises(TokenError) as caught:
        _verify(proof, **kw)
    assert TOKEN not in caught.value.detail and proof not in caught.value.detail
    return caught.value.reason


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "PS256", "RS256"])
def test_a_valid_proof_names_its_key(alg: str) -> None:
    client = DPoPClient(alg)
    proof = _verify(client.proof(TOKEN, jti="j-1", nonce="n-1"))
    assert (proof.jkt, proof.jti, proof.iat, proof.nonce) == (client.jkt, "j-1", NOW, "n-1")


@pytest.mark.parametrize(
    ("header", "claims", "reason"),
    [
        ({"typ": "JWT"}, {}, Reason.DPOP_PROOF_MALFORMED),
        ({"typ": DROP}, {}, Reason.DPOP_PROOF_MALFORMED),
        ({"typ": "application/dpop+jwt"}, {}, None),
        ({"typ": "DPoP+JWT"}, {}, None),
        ({"jwk": DROP}, {}, Reason.DPOP_KEY_INVALID),
        ({"jwk": "not an object"}, {}, Reason.DPOP_KEY_INVALID),
        ({}, {"jti": DROP}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"jti": ""}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"jti": 7}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"jti": "j" * 257}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"jti": "j" * 256}, None),
        ({}, {"htm": DROP}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"htm": "get"}, Reason.DPOP_METHOD_MISMATCH),
        ({}, {"htm": "POST"}, Reason.DPOP_METHOD_MISMATCH),
        ({}, {"htu": DROP}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"iat": DROP}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"iat": str(NOW)}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"iat": True}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"iat": 10**400}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"iat": NOW - 60}, None),
        ({}, {"iat": NOW - 60.001}, Reason.DPOP_PROOF_EXPIRED),
        ({}, {"iat": NOW + 5}, None),
        ({}, {"iat": NOW + 5.001}, Reason.DPOP_PROOF_EXPIRED),
        ({}, {"ath": DROP}, Reason.DPOP_PROOF_MALFORMED),
        ({}, {"ath": "x"}, Reason.DPOP_TOKEN_HASH_MISMATCH),
        ({}, {"nonce": 1}, Reason.DPOP_PROOF_MALFORMED),
    ],
)
def test_each_check(header: dict[str, Any], claims: dict[str, Any], reason: Reason | None) -> None:
    jose = {k: v for k, v in header.items() if v is not DROP}
    proof = CLIENT.proof(TOKEN, header=jose, **claims)
    if DROP in header.values():  # take the member out of the header itself
        proof = _without_header_member(proof, next(k for k, v in header.items() if v is DROP))
    if reason is None:
        _verify(proof)
    else:
        assert _reason(proof) is reason


def _without_header_member(proof: str, name: str) -> str:
    """Re-sign the proof with `name` left out of its JOSE header."""
    head, body, _ = proof.split(".")
    header = json.loads(b64url_decode(head))
    header.pop(name)
    signer = {k: v for k, v in CLIENT.private.items() if k != "kid"}
    return mint_token(signer, json.loads(b64url_decode(body)), headers=header)


@pytest.mark.parametrize(
    ("alg", "reason"),
    [
        ("none", Reason.DPOP_ALGORITHM_NOT_ALLOWED),
        ("HS256", Reason.DPOP_ALGORITHM_NOT_ALLOWED),
        ("ES384", Reason.DPOP_SIGNATURE_INVALID),  # a P-256 key cannot make ES384 signatures
    ],
)
def test_only_asymmetric_algorithms_that_fit_the_key(alg: str, reason: Reason) -> None:
    assert _reason(CLIENT.proof(TOKEN, header={"alg": alg})) is reason


def test_the_policy_narrows_the_algorithms() -> None:
    proof = CLIENT.proof(TOKEN)
    assert _reason(proof, settings=DPoPSettings(algorithms=("EdDSA",))) is (
        Reason.DPOP_ALGORITHM_NOT_ALLOWED
    )


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "k"])
def test_private_key_material_in_the_jwk_is_refused(member: str) -> None:
    jwk = {**CLIENT.public, member: CLIENT.private.get("d", "AAAA")}
    assert _reason(CLIENT.proof(TOKEN, header={"jwk": jwk})) is Reason.DPOP_KEY_INVALID


def test_a_whole_private_jwk_is_refused_before_its_signature_is_looked_at() -> None:
    assert _reason(CLIENT.proof(TOKEN, header={"jwk": CLIENT.private})) is Reason.DPOP_KEY_INVALID


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},  # not on the curve
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},  # far too small
        {"kty": "XYZ"},
    ],
)
def test_unusable_keys_are_refused(jwk: dict[str, Any]) -> None:
    assert _reason(CLIENT.proof(TOKEN, header={"jwk": jwk})) is Reason.DPOP_KEY_INVALID


def test_a_proof_signed_by_another_key_than_its_jwk() -> None:
    other = DPoPClient()
    assert _reason(other.proof(TOKEN, header={"jwk": CLIENT.public})) is (
        Reason.DPOP_SIGNATURE_INVALID
    )


def test_oversized_and_malformed_proofs() -> None:
    assert _reason("x" * 8193) is Reason.DPOP_PROOF_MALFORMED
    assert _reason("a.b") is Reason.DPOP_PROOF_MALFORMED
    assert _reason(CLIENT.proof(TOKEN, header={"crit": ["x"]})) is Reason.DPOP_PROOF_MALFORMED
    big = CLIENT.proof(TOKEN, pad="x" * 9000)
    assert _reason(big) is Reason.DPOP_PROOF_MALFORMED


# -- htu ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("htu", "host", "path", "scheme", "ok"),
    [
        ("https://api.example/", "api.example", "/", "https", True),
        ("https://api.example", "api.example", "/", "https", True),  # empty path is /
        ("HTTPS://API.Example/", "api.example", "/", "https", True),  # case of scheme, host
        ("https://api.example:443/", "api.example", "/", "https", True),  # default port
        ("https://api.example:0443/", "api.example", "/", "https", True),
        ("http://api.example:80/a", "api.example", "/a", "http", True),
        ("https://api.example./a", "api.example", "/a", "https", True),  # trailing dot
        ("https://api.example/a?x=1#f", "api.example", "/a", "https", True),  # no query
        ("https://api.example/a/./b/../c", "api.example", "/a/c", "https", True),  # dots
        ("https://api.example/%7euser", "api.example", "/~user", "https", True),  # unreserved
        ("https://api.example/a%3ab", "api.example", "/a%3Ab", "https", True),  # hex case
        ("https://api.example/a", "api.example", "/b", "https", False),
        ("https://api.example/a", "api.example", "/a/", "https", False),
        ("https://api.example/A", "api.example", "/a", "https", False),  # path case counts
        ("http://api.example/a", "api.example", "/a", "https", False),  # scheme counts
        ("https://evil.example/a", "api.example", "/a", "https", False),
        ("https://api.example.evil/a", "api.example", "/a", "https", False),
        ("https://api.example:8443/a", "api.example:9443", "/a", "https", False),
        ("https://api.example:8443/a", "api.example:8443", "/a", "https", True),
        ("https://api.example/a", "api.example:8443", "/a", "https", False),
        # The shipped proxy configurations strip the port before authz sees the Host.
        ("https://api.example:8443/a", "api.example", "/a", "https", True),
        ("https://user@api.example/a", "api.example", "/a", "https", False),
        ("ftp://api.example/a", "api.example", "/a", "https", False),
        ("/a", "api.example", "/a", "https", False),
        ("https://api.example/a b", "api.example", "/a", "https", False),
        ("https://api.example/\u00e9", "api.example", "/%C3%A9", "https", False),
        ("https://[::1]:8443/a", "[::1]:8443", "/a", "https", True),
        ("https://api.example/a", "api.example", "/a", "", False),  # scheme not reported
    ],
)
def test_htu(htu: str, host: str, path: str, scheme: str, ok: bool) -> None:
    proof = CLIENT.proof(TOKEN, htu=htu)
    if ok:
        _verify(proof, host=host, path=path, scheme=scheme)
    else:
        assert _reason(proof, host=host, path=path, scheme=scheme) is Reason.DPOP_URI_MISMATCH


def test_parse_target_normalises() -> None:
    target = parse_target("HTTPS://Api.Example:443/a/../b/%7e%2f?q")
    assert target is not None
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "api.example",
        "",
        "/b/~%2F",
    )


# -- keys and thumbprints ---------------------------------------------------------------------


def test_proof_keys_are_parsed_once_per_thumbprint() -> None:
    keys = ProofKeys()
    jkt, key = keys.key({**CLIENT.public, "kid": "ignored", "alg": "ES256"})
    assert jkt == CLIENT.jkt
    assert keys.key(CLIENT.public)[1] is key


def test_thumbprint_ignores_member_order_and_optional_members() -> None:
    shuffled = dict(reversed(list(CLIENT.public.items())))
    assert jwk_thumbprint({**shuffled, "kid": "x", "use": "sig"}) == CLIENT.jkt


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "AAAA"},
        {"kty": "EC", "crv": "P-256", "x": "AA"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": 5},
        {"kty": "RSA", "n": "AA", "e": "AQAB", "d": "AA"},
    ],
)
def test_thumbprint_refuses_non_public_or_incomplete_keys(jwk: dict[str, Any]) -> None:
    with pytest.raises(JWKSError):
        public_members(jwk)


def test_certificate_thumbprint_is_sha256_of_the_der() -> None:
    cert = CA.create("test-ca").cert
    expected = b64url(cert.fingerprint(hashes.SHA256()))
    assert certificate_thumbprint(pem_cert(cert).decode()) == expected
    with pytest.raises(ValueError):
        certificate_thumbprint("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----")
    with pytest.raises(ValueError):
        certificate_thumbprint("no certificate here")
