from __future__ import annotations

import contextlib
import dataclasses
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from authz.keys.jwk import KeySet
from authz.keys.provider import StaticKeys
from authz.policy.issuer import CompiledIssuer
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.verify import VerifiedToken, verify
from tests.support.tokens import (
    DROP,
    ISSUER,
    NOW,
    TTL,
    b64url,
    b64url_decode,
    claims,
    compact,
    make_issuer,
    mint,
    signing_key,
    split,
)

ALGORITHMS = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA", "HS256",
]  # fmt: skip


def trusted(*issuers: CompiledIssuer) -> dict[str, CompiledIssuer]:
    return {i.issuer: i for i in issuers}


def check(token: str, issuer: CompiledIssuer, now: float = NOW) -> VerifiedToken:
    return verify(token, trusted(issuer), now)


def denied(token: str, issuer: CompiledIssuer, reason: Reason, now: float = NOW) -> str:
    with pytest.raises(TokenError) as excinfo:
        check(token, issuer, now)
    assert excinfo.value.reason == reason, excinfo.value.detail
    return excinfo.value.detail


def resigned(token: str, header: dict[str, Any], private_jwk: dict[str, Any]) -> str:
    """The token's claims signed again under another header (same key)."""
    payload = json.loads(b64url_decode(split(token)[1]))
    return mint(private_jwk, payload, headers=header)


# --- accepted tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_valid_token(alg: str) -> None:
    issuer, private = make_issuer(alg)
    verified = check(mint(private, typ="JWT"), issuer)
    assert verified.issuer is issuer
    assert verified.kid == "k1"
    assert verified.kid == "k1"
    assert verified.claims == claims()
    assert verified.expires_at == NOW + TTL
    assert isinstance(verified.expires_at, float)


def test_issuer_chosen_by_iss() -> None:
    first, _ = make_issuer("ES256", kid="first", issuer="https://first.test")
    second, private = make_issuer("ES256", kid="second", issuer="https://second.test")
    token = mint(private, claims(iss="https://second.test"))
    assert verify(token, trusted(first, second), NOW).issuer is second


def test_audience_is_not_checked_here() -> None:
    issuer, private = make_issuer("ES256", audiences=("other",))
    assert check(mint(private, claims(aud=["x", "y"])), issuer).claims["aud"] == ["x", "y"]


def test_sub_and_aud_are_optional() -> None:
    issuer, private = make_issuer("ES256")
    verified = check(mint(private, claims(sub=DROP, aud=DROP)), issuer)
    assert "sub" not in verified.claims


# --- issuer --------------------------------------------------------------------------------


@pytest.mark.parametrize("iss", [DROP, None, 1, ["https://issuer.test"], {"iss": ISSUER}])
def test_iss_missing_or_not_a_string(iss: object) -> None:
    issuer, private = make_issuer("ES256")
    assert "'iss'" in denied(mint(private, claims(iss=iss)), issuer, Reason.CLAIM_INVALID)


@pytest.mark.parametrize(
    "iss", ["https://other.test", "https://issuer.test/", "HTTPS://issuer.test"]
)
def test_unknown_issuer(iss: str) -> None:
    issuer, private = make_issuer("ES256")
    denied(mint(private, claims(iss=iss)), issuer, Reason.ISSUER_UNKNOWN)


# --- algorithm -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_casing(alg: str) -> None:
    issuer, _ = make_issuer("ES256")
    token = compact({"alg": alg}, claims(), b"\0" * 64)
    denied(token, issuer, Reason.ALGORITHM_NOT_ALLOWED)
    # Even an issuer misconfigured to allow it.
    lax = dataclasses.replace(issuer, algorithms=frozenset({"ES256", alg}))
    denied(token, lax, Reason.ALGORITHM_NOT_ALLOWED)


def test_alg_none_with_empty_signature_is_malformed() -> None:
    issuer, _ = make_issuer("ES256")
    denied(compact({"alg": "none"}, claims(), b""), issuer, Reason.TOKEN_MALFORMED)


def test_alg_not_in_issuer_allowlist() -> None:
    issuer, _ = make_issuer("RS256")
    _, other = make_issuer("ES256")
    denied(mint(other), issuer, Reason.ALGORITHM_NOT_ALLOWED)
    denied(mint(signing_key("PS256")[0]), issuer, Reason.ALGORITHM_NOT_ALLOWED)


def rsa_public_pem() -> bytes:
    public = RSAAlgorithm.from_jwk(signing_key("RS256")[1])
    return bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def hs256_forgery(secret: bytes, kid: str | None = "k1") -> str:
    header = {"alg": "HS256", **({"kid": kid} if kid else {})}
    head, body, _ = split(compact(header, claims(), b"x"))
    signature = hmac.digest(secret, f"{head}.{body}".encode(), "sha256")
    return f"{head}.{body}.{b64url(signature)}"


@pytest.mark.parametrize("kid", ["k1", None])
def test_hs256_signed_with_rsa_public_key_is_refused(kid: str | None) -> None:
    """Algorithm confusion: the RSA public key (public knowledge) used as an HMAC secret."""
    pem = rsa_public_pem()
    strict, _ = make_issuer("RS256")
    denied(hs256_forgery(pem, kid), strict, Reason.ALGORITHM_NOT_ALLOWED)
    # Even when the issuer allows HS256, an RSA key never verifies HMAC.
    lax, _ = make_issuer("RS256", algorithms=frozenset({"RS256", "HS256"}))
    denied(hs256_forgery(pem, kid), lax, Reason.KEY_NOT_FOUND)
    n = b64url_decode(signing_key("RS256")[1]["n"])
    denied(hs256_forgery(n, kid), lax, Reason.KEY_NOT_FOUND)


# --- typ -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typ", ["at+jwt", "at+JWT", "AT+JWT", "application/at+jwt", "Application/At+Jwt"]
)
@pytest.mark.parametrize("required", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_typ_accepted(typ: str, required: str) -> None:
    issuer, private = make_issuer("ES256", require_typ=required)
    check(mint(private, typ=typ), issuer)


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "application/jwt", "at+jwt ", "xat+jwt"])
def test_typ_mismatch(typ: str | None) -> None:
    issuer, private = make_issuer("ES256", require_typ="at+jwt")
    denied(mint(private, typ=typ), issuer, Reason.TYP_MISMATCH)


def test_typ_not_a_string() -> None:
    issuer, private = make_issuer("ES256", require_typ="at+jwt")
    denied(mint(private, headers={"typ": ["at+jwt"]}), issuer, Reason.TYP_MISMATCH)


def test_typ_ignored_unless_required() -> None:
    issuer, private = make_issuer("ES256")
    check(mint(private, headers={"typ": 7}), issuer)


# --- time claims ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [str(NOW), None, True, False, [NOW], {"t": NOW}, 10**400])
def test_time_claim_not_a_usable_number(name: str, value: object) -> None:
    issuer, private = make_issuer("ES256")
    denied(mint(private, claims(**{name: value})), issuer, Reason.CLAIM_INVALID)


def test_exp_as_float_and_huge_float() -> None:
    issuer, private = make_issuer("ES256")
    assert check(mint(private, claims(exp=NOW + 0.5)), issuer).expires_at == NOW + 0.5
    assert check(mint(private, claims(exp=1e300)), issuer).expires_at == 1e300


def test_exp_required_by_default() -> None:
    issuer, private = make_issuer("ES256")
    assert denied(mint(private, claims(exp=DROP)), issuer, Reason.CLAIM_INVALID) == "'exp' missing"


def test_exp_optional_when_not_required() -> None:
    issuer, private = make_issuer("ES256", require_exp=False)
    assert check(mint(private, claims(exp=DROP)), issuer).expires_at is None


def test_max_lifetime_requires_exp() -> None:
    issuer, private = make_issuer("ES256", require_exp=False, max_lifetime=3600)
    denied(mint(private, claims(exp=DROP)), issuer, Reason.CLAIM_INVALID)


@pytest.mark.parametrize("skew", [0, 60])
def test_expiry_boundary(skew: int) -> None:
    issuer, private = make_issuer("ES256", clock_skew=skew)
    token = mint(private, claims(iat=NOW - 100, exp=NOW))
    denied(token, issuer, Reason.TOKEN_EXPIRED, now=NOW + skew)
    check(token, issuer, now=NOW + skew - 0.001)


@pytest.mark.parametrize(
    ("claim", "reason"),
    [("nbf", Reason.TOKEN_NOT_YET_VALID), ("iat", Reason.TOKEN_ISSUED_IN_FUTURE)],
)
@pytest.mark.parametrize("skew", [0, 60])
def test_future_boundary(claim: str, reason: Reason, skew: int) -> None:
    issuer, private = make_issuer("ES256", clock_skew=skew)
    check(mint(private, claims(**{claim: NOW + skew})), issuer)
    denied(mint(private, claims(**{claim: NOW + skew + 0.001})), issuer, reason)


def test_max_lifetime_from_iat() -> None:
    issuer, private = make_issuer("ES256", max_lifetime=3600)
    check(mint(private, claims(iat=NOW - 10, exp=NOW - 10 + 3600)), issuer)
    denied(
        mint(private, claims(iat=NOW - 10, exp=NOW - 9 + 3600)), issuer, Reason.LIFETIME_EXCEEDED
    )


def test_max_lifetime_from_now_without_iat() -> None:
    issuer, private = make_issuer("ES256", max_lifetime=3600)
    check(mint(private, claims(iat=DROP, exp=NOW + 3600)), issuer)
    denied(mint(private, claims(iat=DROP, exp=NOW + 3601)), issuer, Reason.LIFETIME_EXCEEDED)


def test_huge_exp_exceeds_max_lifetime() -> None:
    issuer, private = make_issuer("ES256", max_lifetime=3600)
    denied(mint(private, claims(exp=1e300)), issuer, Reason.LIFETIME_EXCEEDED)


def test_expired_token_with_bad_signature_is_rejected() -> None:
    issuer, private = make_issuer("ES256")
    head, body, _ = split(mint(private, claims(iat=NOW - 7200, exp=NOW - 3600)))
    forged = f"{head}.{body}.{b64url(bytes(64))}"
    denied(forged, issuer, Reason.TOKEN_EXPIRED)
    denied(forged, issuer, Reason.SIGNATURE_INVALID, now=NOW - 7200)


# --- sub and aud ---------------------------------------------------------------------------


@pytest.mark.parametrize("sub", [None, 1, ["alice"], {"id": 1}, True])
def test_sub_not_a_string(sub: object) -> None:
    issuer, private = make_issuer("ES256")
    denied(mint(private, claims(sub=sub)), issuer, Reason.CLAIM_INVALID)


@pytest.mark.parametrize("aud", [None, 1, ["api", 1], [["api"]], {"aud": "api"}, True])
def test_aud_not_a_string_or_string_list(aud: object) -> None:
    issuer, private = make_issuer("ES256")
    denied(mint(private, claims(aud=aud)), issuer, Reason.CLAIM_INVALID)


@pytest.mark.parametrize("aud", ["api", ["api"], [], ["a", "b"]])
def test_aud_shapes_accepted(aud: object) -> None:
    issuer, private = make_issuer("ES256")
    check(mint(private, claims(aud=aud)), issuer)


# --- keys ----------------------------------------------------------------------------------


def test_kid_of_another_issuer() -> None:
    ours, _ = make_issuer("ES256", kid="ours", issuer="https://ours.test")
    theirs, their_private = make_issuer("ES256", kid="theirs", issuer="https://theirs.test")
    token = mint(their_private, claims(iss="https://ours.test"))
    denied(token, ours, Reason.KEY_NOT_FOUND)
    with pytest.raises(TokenError) as excinfo:
        verify(token, trusted(ours, theirs), NOW)
    assert excinfo.value.reason == Reason.KEY_NOT_FOUND


def test_unknown_kid_is_denied_even_if_a_key_would_verify() -> None:
    issuer, private = make_issuer("ES256")
    token = mint({**private, "kid": "rotated-away"})
    assert "rotated-away" in denied(token, issuer, Reason.KEY_NOT_FOUND)


def test_known_kid_signed_by_another_key() -> None:
    issuer, _ = make_issuer("ES256")
    impostor = {**signing_key("ES256", "impostor")[0], "kid": "k1"}
    denied(mint(impostor), issuer, Reason.SIGNATURE_INVALID)


def test_no_kid_tries_every_key() -> None:
    others = tuple(signing_key("ES256", f"other{i}")[1] for i in range(3))
    issuer, _ = make_issuer("ES256", extra_jwks=others)
    assert len(issuer.keys.current().candidates(None, "ES256")) == 4
    last = {k: v for k, v in signing_key("ES256", "other2")[0].items() if k != "kid"}
    assert check(mint(last), issuer).kid is None
    stranger = {k: v for k, v in signing_key("ES256", "stranger")[0].items() if k != "kid"}
    denied(mint(stranger), issuer, Reason.SIGNATURE_INVALID)


def test_no_key_for_alg() -> None:
    issuer, private = make_issuer("ES256", algorithms=frozenset({"ES256", "EdDSA"}))
    denied(mint(signing_key("EdDSA")[0]), issuer, Reason.KEY_NOT_FOUND)
    check(mint(private), issuer)


def test_issuer_without_keys() -> None:
    issuer, private = make_issuer("ES256")
    empty = dataclasses.replace(issuer, keys=StaticKeys(KeySet.empty(), "test"))
    denied(mint(private), empty, Reason.KEYS_UNAVAILABLE)


# --- signatures ----------------------------------------------------------------------------


def with_signature(token: str, signature: bytes) -> str:
    head, body, _ = split(token)
    return f"{head}.{body}.{b64url(signature)}"


def test_ecdsa_signature_encodings() -> None:
    issuer, private = make_issuer("ES256")
    token = mint(private)
    raw = b64url_decode(split(token)[2])
    key = ec.derive_private_key(int.from_bytes(b64url_decode(private["d"]), "big"), ec.SECP256R1())
    head, body, _ = split(token)
    der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    check(token, issuer)
    for bad in (der, raw[:-1], raw + b"\0", bytes(64), bytes(32) + raw[32:], raw[:32] + bytes(32)):
        denied(with_signature(token, bad), issuer, Reason.SIGNATURE_INVALID)


@pytest.mark.parametrize("alg", ["RS256", "PS256", "EdDSA", "HS256", "ES384", "ES512"])
def test_tampered_token(alg: str) -> None:
    issuer, private = make_issuer(alg)
    token = mint(private)
    head, _, signature = split(token)
    tampered_body = split(mint(private, claims(sub="admin")))[1]
    denied(f"{head}.{tampered_body}.{signature}", issuer, Reason.SIGNATURE_INVALID)
    raw = b64url_decode(signature)
    denied(with_signature(token, raw[:-1] + bytes([raw[-1] ^ 1])), issuer, Reason.SIGNATURE_INVALID)


def test_same_claims_under_another_header_need_their_own_signature() -> None:
    issuer, private = make_issuer("ES256")
    token = mint(private)
    _, body, signature = split(token)
    other_head = split(resigned(token, {"typ": "at+jwt"}, private))[0]
    check(token, issuer)
    denied(f"{other_head}.{body}.{signature}", issuer, Reason.SIGNATURE_INVALID)


# --- malformed tokens reach verify as TokenError ---------------------------------------------


def test_duplicate_members_are_malformed() -> None:
    issuer, private = make_issuer("ES256")
    head, body, signature = split(mint(private))
    dup_body = b64url(b'{"iss":"https://issuer.test","sub":"alice","sub":"admin","exp":1700000300}')
    denied(f"{head}.{dup_body}.{signature}", issuer, Reason.TOKEN_MALFORMED)
    dup_head = b64url(b'{"alg":"ES256","kid":"k1","alg":"none"}')
    denied(f"{dup_head}.{body}.{signature}", issuer, Reason.TOKEN_MALFORMED)


def test_too_large() -> None:
    issuer, private = make_issuer("ES256")
    token = mint(private, claims(pad="x" * 100_000))
    denied(token, issuer, Reason.TOKEN_TOO_LARGE)
    assert verify(token, trusted(issuer), NOW, max_size=200_000).claims["pad"]


# --- fuzzing: verify raises nothing but TokenError ----------------------------------------------

_FUZZ_ISSUERS = {
    alg: make_issuer(alg, algorithms=frozenset({alg, "HS256"}))
    for alg in ("RS256", "ES256", "EdDSA", "HS256")
}
_FUZZ_TOKENS = {alg: mint(private) for alg, (_, private) in _FUZZ_ISSUERS.items()}
_FUZZ_SETTINGS = settings(
    max_examples=200,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def verify_or_token_error(token: str, issuer: CompiledIssuer) -> None:
    with contextlib.suppress(TokenError):
        verify(token, trusted(issuer), NOW)


@_FUZZ_SETTINGS
@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    verify_or_token_error(text, _FUZZ_ISSUERS["ES256"][0])


@_FUZZ_SETTINGS
@given(
    st.lists(
        st.text(
            alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.",
            max_size=80,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_random_base64url_parts(parts: list[str]) -> None:
    verify_or_token_error(".".join(parts), _FUZZ_ISSUERS["RS256"][0])


@_FUZZ_SETTINGS
@given(
    st.sampled_from(sorted(_FUZZ_ISSUERS)),
    st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete"]),
            st.integers(min_value=0),
            st.characters(),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_token(alg: str, mutations: list[tuple[str, int, str]]) -> None:
    issuer = _FUZZ_ISSUERS[alg][0]
    token = list(_FUZZ_TOKENS[alg])
    for op, position, char in mutations:
        i = position % (len(token) + 1)
        if op == "insert":
            token.insert(i, char)
        elif token and i < len(token):
            if op == "replace":
                token[i] = char
            else:
                del token[i]
    verify_or_token_error("".join(token), issuer)


@_FUZZ_SETTINGS
@given(
    st.sampled_from(["ES256", "EdDSA", "HS256"]),  # RSA signing is too slow to do per example
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "x5c"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    ),
    st.dictionaries(
        st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "iat"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=10)
        | st.lists(st.text(max_size=5), max_size=2),
    ),
)
def test_random_header_and_claims(
    alg: str, header: dict[str, Any], payload: dict[str, Any]
) -> None:
    issuer, private = _FUZZ_ISSUERS[alg]
    token = compact({"alg": alg, **header}, {"iss": ISSUER, **payload}, b"\1" * 64)
    verify_or_token_error(token, issuer)
    # A properly signed token with the same content must also end in a verdict, not a crash.
    verify_or_token_error(mint(private, {"iss": ISSUER, **payload}, headers=header), issuer)
