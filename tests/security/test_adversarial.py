"""Hostile tokens and requests through the real gRPC Check API, and through the HTTP
transport: the exact status and reason, the same on both.

Keys are generated at test time. The issuer's clock is fixed at NOW with 60 s of skew, so
the time cases sit exactly on the boundaries. Cases the unit tests also cover at the
verify level are repeated here on purpose: what matters is the decision Envoy receives.
Every case is one row: (name, request) -> (HTTP status, reason code).
`jku`/`x5u`/`jwk`/`x5c` headers point at a server this module runs; it must see nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from authz.policy.files import DirectorySource, load
from authz.server import policy_store
from tests.support.authz import CheckClient, check_server, header
from tests.support.http_checks import HttpCheckServer, http_check_server
from tests.support.keyserver import KeyServer, Route, self_signed_cert_pem
from tests.support.tokens import (
    AUDIENCE,
    DROP,
    ISSUER,
    NOW,
    b64url,
    b64url_decode,
    claims,
    compact,
    mint,
    signing_key,
    split,
)

LAX_ISSUER = "https://lax.test"  # misconfigured to accept HS256 next to RS256
OTHER_ISSUER = "https://other.test"
HOST = "api.test"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ATTACKER = KeyServer()  # stays up for the module; every case checks it saw nothing

ES, _ = signing_key("ES256", "k1")
RS, RS_PUBLIC = signing_key("RS256", "r1")
OTHER, _ = signing_key("ES256", "o1")
EVIL, EVIL_PUBLIC = signing_key("ES256", "evil")


def _issuer(name: str, iss: str, keys: list[dict[str, Any]], algs: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": name, "namespace": "sec"},
        "spec": {
            "issuer": iss,
            "jwks": {"keys": keys},
            "algorithms": algs,
            "clockSkewSeconds": 60,
            "tokenSources": [
                {"header": {"name": "Authorization", "prefix": "Bearer "}},
                {"query": {"name": "access_token"}},
            ],
        },
    }


POLICIES = [
    _issuer("main", ISSUER, [signing_key("ES256", "k1")[1], RS_PUBLIC], ["ES256", "RS256"]),
    _issuer("lax", LAX_ISSUER, [RS_PUBLIC], ["RS256", "HS256"]),
    _issuer("other", OTHER_ISSUER, [signing_key("ES256", "o1")[1]], ["ES256"]),
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "api", "namespace": "sec"},
        "spec": {
            "targets": {"hosts": [HOST]},
            "issuers": [{"name": "main"}, {"name": "lax"}, {"name": "other"}],
            "audiences": [AUDIENCE],
            "rules": [
                {"name": "anon", "match": {"paths": ["/anon"]}, "action": "allowAnonymous"},
                {
                    "name": "admin",
                    "match": {"paths": ["/admin"]},
                    "requireScopes": {"allOf": ["admin"]},
                },
                {"name": "any", "match": {"pathPrefixes": ["/"]}},
            ],
        },
    },
]


# --- token builders ---------------------------------------------------------------------------


def es(payload: dict[str, Any] | None = None, **headers: Any) -> str:
    """Signed with the trusted ES256 key k1; `headers` are merged into the JOSE header."""
    return mint(ES, payload, headers=headers or None)


def raw_signed(header: dict[str, Any] | bytes, payload: bytes) -> str:
    """Validly signed by k1 around arbitrary bytes (duplicate keys, non-UTF-8...)."""
    head = b64url(header if isinstance(header, bytes) else json.dumps(header).encode())
    body = b64url(payload)
    der = ECAlgorithm.from_jwk(ES).sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def with_signature(token: str, signature: bytes) -> str:
    head, body, _ = split(token)
    return f"{head}.{body}.{b64url(signature)}"


def hs256(secret: bytes, iss: str = ISSUER, kid: str | None = "r1") -> str:
    """Algorithm confusion: HS256 keyed with something public."""
    header = {"alg": "HS256", **({"kid": kid} if kid else {})}
    head, body, _ = split(compact(header, claims(iss=iss), b"x"))
    signature = hmac.digest(secret, f"{head}.{body}".encode(), hashlib.sha256)
    return f"{head}.{body}.{b64url(signature)}"


def _pem(jwk: dict[str, Any]) -> bytes:
    key = RSAAlgorithm.from_jwk(jwk) if jwk["kty"] == "RSA" else ECAlgorithm.from_jwk(jwk)
    return bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def nested(depth: int) -> bytes:
    return b'{"iss":"' + ISSUER.encode() + b'","a":' + b"[" * depth + b"]" * depth + b"}"


VALID = es()
_H, _P, _S = split(VALID)
_DER = ECAlgorithm.from_jwk(ES).sign(f"{_H}.{_P}".encode(), ec.ECDSA(hashes.SHA256()))
_CERT = self_signed_cert_pem(ECAlgorithm.from_jwk(EVIL), "evil")
_X5C = "".join(_CERT.splitlines()[1:-1])
_KEY_URLS = {"jku": f"{ATTACKER.url}/jwks", "x5u": f"{ATTACKER.url}/cert"}
ATTACKER.json("/jwks", {"keys": [EVIL_PUBLIC]})
ATTACKER.route("/cert", Route(_CERT.encode()))
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The signature's last character with its unused low bits set: a lenient decoder reads
# the same bytes, a strict one refuses the encoding.
_NONCANONICAL = _S[:-1] + _B64URL[_B64URL.index(_S[-1]) + 1]


# --- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    reason: str
    token: str | None = None  # sent as `Authorization: Bearer <token>`
    headers: dict[str, str] = field(default_factory=dict)
    path: str = "/resource"

    def request_headers(self) -> dict[str, str]:
        if self.token is None:
            return self.headers
        return {"authorization": f"Bearer {self.token}", **self.headers}


def bad(name: str, token: str, reason: str, status: int = 401) -> Case:
    return Case(name, status, reason, token)


def good(name: str, token: str) -> Case:
    return Case(name, 200, "allowed", token)


CASES: list[Case] = [
    good("baseline ES256", VALID),
    good("baseline RS256", mint(RS)),
    Case("baseline missing scope", 403, "insufficient_scope", VALID, path="/admin"),
    # alg none, every casing, with and without a signature
    *(bad(f"alg {a}", compact({"alg": a}, claims(), b"\0" * 64), "algorithm_not_allowed")
      for a in ("none", "None", "NONE", "nOnE", "NoNe")),
    *(bad(f"alg {a} kid k1", compact({"alg": a, "kid": "k1"}, claims(), b"\0"), "algorithm_not_allowed")
      for a in ("none", "NONE")),
    bad("alg none, empty signature", compact({"alg": "none"}, claims(), b"x")[:-2] + ".", "token_malformed"),
    bad("alg lower-case es256", es(alg="es256"), "algorithm_not_allowed"),
    bad("alg with a trailing space", es(alg="ES256 "), "algorithm_not_allowed"),
    bad("alg RS256 over an EC kid", es(alg="RS256"), "key_not_found"),
    # algorithm confusion
    bad("HS256 keyed with RSA PEM", hs256(_pem(RS_PUBLIC)), "algorithm_not_allowed"),
    bad("HS256 keyed with RSA PEM, no kid", hs256(_pem(RS_PUBLIC), kid=None), "algorithm_not_allowed"),
    bad("HS256 keyed with RSA JWK", hs256(json.dumps(RS_PUBLIC).encode()), "algorithm_not_allowed"),
    bad("HS256 keyed with EC PEM", hs256(_pem(signing_key("ES256", "k1")[1]), kid="k1"), "algorithm_not_allowed"),
    bad("HS256 (allowed) keyed with RSA PEM", hs256(_pem(RS_PUBLIC), LAX_ISSUER), "key_not_found"),
    bad("HS256 (allowed) keyed with RSA PEM, no kid", hs256(_pem(RS_PUBLIC), LAX_ISSUER, None), "key_not_found"),
    bad("HS256 (allowed) keyed with RSA JWK", hs256(json.dumps(RS_PUBLIC).encode(), LAX_ISSUER), "key_not_found"),
    bad("HS256 (allowed) keyed with modulus", hs256(b64url_decode(RS_PUBLIC["n"]), LAX_ISSUER), "key_not_found"),
    # kid games
    bad("kid of another issuer's key", mint({**OTHER}), "key_not_found"),
    bad("our kid, another issuer's key", mint({**OTHER, "kid": "k1"}), "signature_invalid"),
    bad("other issuer's token with our kid", mint({**ES}, claims(iss=OTHER_ISSUER)), "key_not_found"),
    bad("unknown kid", mint({**ES, "kid": "nope"}), "key_not_found"),
    bad("no kid, attacker key", mint({k: v for k, v in EVIL.items() if k != "kid"}), "signature_invalid"),
    # key references in the header are ignored, never fetched
    *(bad(f"{h} to attacker, attacker kid", mint(EVIL, headers={h: u}), "key_not_found")
      for h, u in _KEY_URLS.items()),
    *(bad(f"{h} to attacker, our kid", mint({**EVIL, "kid": "k1"}, headers={h: u}), "signature_invalid")
      for h, u in _KEY_URLS.items()),
    bad("embedded jwk, attacker kid", mint(EVIL, headers={"jwk": EVIL_PUBLIC}), "key_not_found"),
    bad("embedded jwk, our kid", mint({**EVIL, "kid": "k1"}, headers={"jwk": {**EVIL_PUBLIC, "kid": "k1"}}), "signature_invalid"),
    bad("x5c attacker cert, our kid", mint({**EVIL, "kid": "k1"}, headers={"x5c": [_X5C]}), "signature_invalid"),
    bad("all four key references", mint({**EVIL, "kid": "k1"}, headers={**_KEY_URLS, "jwk": EVIL_PUBLIC, "x5c": [_X5C]}), "signature_invalid"),
    good("key references on a valid token", es(**_KEY_URLS, jwk=EVIL_PUBLIC, x5c=[_X5C])),
    # JWS extensions
    bad("crit unknown", es(crit=["x-unknown"], **{"x-unknown": 1}), "header_unsupported"),
    bad("crit empty", es(crit=[]), "header_unsupported"),
    bad("crit exp", es(crit=["exp"]), "header_unsupported"),
    bad("b64 false", es(b64=False, crit=["b64"]), "header_unsupported"),
    bad("b64 false without crit", es(b64=False), "header_unsupported"),
    # ECDSA signatures
    bad("ES256 r=s=0 (psychic)", with_signature(VALID, bytes(64)), "signature_invalid"),
    bad("ES256 r=s=n", with_signature(VALID, P256_ORDER.to_bytes(32, "big") * 2), "signature_invalid"),
    bad("ES256 r=0 s=valid", with_signature(VALID, bytes(32) + b64url_decode(_S)[32:]), "signature_invalid"),
    bad("ES256 DER signature", with_signature(VALID, _DER), "signature_invalid"),
    bad("ES256 DER of r=s=0", with_signature(VALID, bytes.fromhex("3006020100020100")), "signature_invalid"),
    bad("ES256 63-byte signature", with_signature(VALID, b64url_decode(_S)[:-1]), "signature_invalid"),
    bad("ES256 65-byte signature", with_signature(VALID, b64url_decode(_S) + b"\0"), "signature_invalid"),
    bad("ES256 128-byte signature", with_signature(VALID, b64url_decode(_S) * 2), "signature_invalid"),
    bad("signature of another token", f"{_H}.{split(es(claims(sub='admin')))[1]}.{_S}", "signature_invalid"),
    # time claims at the skew boundaries (NOW, skew 60)
    bad("exp at now - skew", es(claims(exp=NOW - 60, iat=NOW - 600)), "token_expired"),
    good("exp just inside the skew", es(claims(exp=NOW - 59.999, iat=NOW - 600))),
    bad("exp long ago", es(claims(exp=1, iat=0)), "token_expired"),
    bad("exp negative", es(claims(exp=-1, iat=DROP)), "token_expired"),
    good("nbf at now + skew", es(claims(nbf=NOW + 60))),
    bad("nbf past now + skew", es(claims(nbf=NOW + 60.001)), "token_not_yet_valid"),
    good("iat at now + skew", es(claims(iat=NOW + 60))),
    bad("iat past now + skew", es(claims(iat=NOW + 61)), "token_issued_in_future"),
    bad("exp missing", es(claims(exp=DROP)), "claim_invalid"),
    bad("exp as a string", es(claims(exp=str(NOW + 300))), "claim_invalid"),
    good("exp as a float", es(claims(exp=NOW + 300.5))),
    good("exp huge float", es(claims(exp=1e300))),
    bad("exp beyond float range", es(claims(exp=10**400)), "claim_invalid"),
    bad("exp true", es(claims(exp=True)), "claim_invalid"),
    bad("exp null", es(claims(exp=None)), "claim_invalid"),
    bad("exp array", es(claims(exp=[NOW + 300])), "claim_invalid"),
    bad("nbf as a string", es(claims(nbf="0")), "claim_invalid"),
    bad("iat as an object", es(claims(iat={"t": NOW})), "claim_invalid"),
    # audience
    good("aud string", es(claims(aud=AUDIENCE))),
    good("aud list", es(claims(aud=["other", AUDIENCE]))),
    bad("aud wrong string", es(claims(aud="other")), "audience_mismatch"),
    bad("aud wrong list", es(claims(aud=["other", "api2"])), "audience_mismatch"),
    bad("aud empty list", es(claims(aud=[])), "audience_mismatch"),
    bad("aud missing", es(claims(aud=DROP)), "audience_mismatch"),
    bad("aud prefix of ours", es(claims(aud=AUDIENCE[:-1])), "audience_mismatch"),
    bad("aud case differs", es(claims(aud=AUDIENCE.upper())), "audience_mismatch"),
    bad("aud number", es(claims(aud=1)), "claim_invalid"),
    bad("aud list with a number", es(claims(aud=[AUDIENCE, 1])), "claim_invalid"),
    # issuer
    bad("iss with a trailing slash", es(claims(iss=ISSUER + "/")), "issuer_unknown"),
    bad("iss upper case", es(claims(iss=ISSUER.upper())), "issuer_unknown"),
    bad("iss with whitespace", es(claims(iss=ISSUER + " ")), "issuer_unknown"),
    bad("iss missing", es(claims(iss=DROP)), "claim_invalid"),
    bad("iss a list", es(claims(iss=[ISSUER])), "claim_invalid"),
    bad("sub a number", es(claims(sub=7)), "claim_invalid"),
    # JSON
    bad("duplicate sub", raw_signed({"alg": "ES256", "kid": "k1"}, json.dumps(claims()).encode()[:-1] + b',"sub":"admin"}'), "token_malformed"),
    bad("duplicate iss, escaped", raw_signed({"alg": "ES256", "kid": "k1"}, json.dumps(claims()).encode()[:-1] + b',"\\u0069ss":"x"}'), "token_malformed"),
    bad("duplicate alg in header", raw_signed(b'{"alg":"ES256","kid":"k1","alg":"none"}', json.dumps(claims()).encode()), "token_malformed"),
    bad("payload not UTF-8", raw_signed({"alg": "ES256", "kid": "k1"}, b'{"iss":"\xff"}'), "token_malformed"),
    bad("payload UTF-16", raw_signed({"alg": "ES256", "kid": "k1"}, json.dumps(claims()).encode("utf-16")), "token_malformed"),
    bad("payload with BOM", raw_signed({"alg": "ES256", "kid": "k1"}, b"\xef\xbb\xbf" + json.dumps(claims()).encode()), "token_malformed"),
    bad("payload not JSON", raw_signed({"alg": "ES256", "kid": "k1"}, b"hello"), "token_malformed"),
    bad("payload a JSON array", raw_signed({"alg": "ES256", "kid": "k1"}, b"[1]"), "token_malformed"),
    bad("payload with NaN", raw_signed({"alg": "ES256", "kid": "k1"}, b'{"exp":NaN}'), "token_malformed"),
    bad("header not JSON", f"{b64url(b'alg')}.{_P}.{_S}", "token_malformed"),
    bad("payload nested 33 deep", raw_signed({"alg": "ES256", "kid": "k1"}, nested(32)), "token_malformed"),
    bad("payload nested 5000 deep", raw_signed({"alg": "ES256", "kid": "k1"}, nested(5000)), "token_malformed"),
    # base64url
    bad("padding", f"{_H}=.{_P}.{_S}", "token_malformed"),
    bad("padded signature", f"{_H}.{_P}.{_S}==", "token_malformed"),
    bad("plus and slash", with_signature(VALID, b"\xfb\xff" * 32).replace("-", "+").replace("_", "/"), "token_malformed"),
    bad("non-canonical last char", f"{_H}.{_P}.{_NONCANONICAL}", "token_malformed"),
    bad("impossible length", f"{_H}.{_P}.{_S}AAA", "token_malformed"),
    bad("percent-encoded", f"{_H}.{_P}.{_S}%3D", "token_malformed"),
    bad("non-ASCII", f"{_H}.{_P}é.{_S}", "token_malformed"),
    # shape
    bad("1 part", _H, "token_malformed"),
    bad("2 parts", f"{_H}.{_P}", "token_malformed"),
    bad("4 parts", f"{VALID}.{_S}", "token_malformed"),
    bad("5 parts (JWE shape)", f"{VALID}.{_S}.{_S}", "token_malformed"),
    bad("empty header", f".{_P}.{_S}", "token_malformed"),
    bad("empty signature", f"{_H}.{_P}.", "token_malformed"),
    bad("dots only", "..", "token_malformed"),
    bad("16 KiB + 1 token", "A" * 16_385, "token_too_large"),
    bad("30 KB signed token", es(claims(pad="x" * 22_000)), "token_too_large"),
    bad("100 KB token (over the header limit)", es(claims(pad="x" * 75_000)), "request_invalid", 400),
    # Bearer syntax
    # issue 11, item 9: a claim with an unpaired surrogate was internal_error with a traceback
    bad("lone surrogate in a claim", es(claims(sub="\ud800")), "token_malformed"),
    bad("lone surrogate in a claim name", es(claims(**{"x\udfff": 1})), "token_malformed"),
    good("a surrogate pair (an emoji) in a claim", es(claims(name="\U0001f600"))),
    Case("no Authorization", 401, "token_missing"),
    Case("Basic credentials", 401, "token_missing", headers={"authorization": "Basic dXNlcjpwYXNz"}),
    Case("Token scheme", 401, "token_missing", headers={"authorization": f"Token {VALID}"}),
    Case("Bearer without a space", 401, "token_missing", headers={"authorization": f"Bearer{VALID}"}),
    Case("Bearer with a tab", 401, "token_missing", headers={"authorization": f"Bearer\t{VALID}"}),
    Case("Bearer alone", 401, "token_missing", headers={"authorization": "Bearer"}),
    Case("Bearer and a space", 400, "request_invalid", headers={"authorization": "Bearer "}),
    Case("Bearer and spaces", 400, "request_invalid", headers={"authorization": "Bearer    "}),
    Case("bearer lower case", 200, "allowed", headers={"authorization": f"bearer {VALID}"}),
    Case("BEARER upper case", 200, "allowed", headers={"authorization": f"BEARER {VALID}"}),
    Case("Bearer, two spaces", 200, "allowed", headers={"authorization": f"Bearer  {VALID}"}),
    Case("Bearer, trailing space", 200, "allowed", headers={"authorization": f"Bearer {VALID} "}),
    Case("two Authorization headers", 400, "token_multiple", headers={"authorization": f"Bearer {VALID},Bearer {VALID}"}),
    Case("token then garbage", 401, "token_malformed", headers={"authorization": f"Bearer {VALID} x"}),
    Case("quoted token", 401, "token_malformed", headers={"authorization": f'Bearer "{VALID}"'}),
    # header and query
    Case("token in the query", 200, "allowed", path=f"/resource?access_token={VALID}"),
    Case("token in header and query", 400, "token_multiple", VALID, path=f"/resource?access_token={VALID}"),
    Case("token twice in the query", 400, "token_multiple", path=f"/r?access_token={VALID}&access_token={VALID}"),
    Case("empty query token", 400, "request_invalid", path="/r?access_token="),
    Case("bad token on an anonymous route", 401, "token_malformed", "garbage", path="/anon"),
    Case("no token on an anonymous route", 200, "allowed_anonymous", path="/anon"),
]  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    directory = tmp_path_factory.mktemp("adversarial")
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(POLICIES))
    with ATTACKER, check_server(directory, clock=lambda: NOW) as c:
        assert all(s.accepted and not s.problems for s in c.store.statuses.values()), (
            c.store.statuses
        )
        yield c
    assert ATTACKER.total_hits() == 0


def verdict(response: Any) -> tuple[int, str]:
    """(HTTP status Envoy sends, reason code); allows carry no reason on the wire."""
    if response.status.code == 0:
        return 200, ""
    return response.denied_response.status.code, response.status.message


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial(client: CheckClient, case: Case) -> None:
    response = client.check(headers=case.request_headers(), host=HOST, path=case.path)
    status, reason = verdict(response)
    expected_reason = "" if case.status == 200 else case.reason
    assert (status, reason) == (case.status, expected_reason)
    if status == 200 and case.reason == "allowed":
        assert header(response, "x-auth-subject") == "alice"  # a verified identity, not a guess
    if case.token is not None and status != 200:
        assert case.token not in response.denied_response.body
        assert case.token not in (header(response, "www-authenticate") or "")
    assert ATTACKER.total_hits() == 0, "a key reference in a token header was fetched"


def test_case_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


# --- the same table over the HTTP transport (Envoy's http_service dialect) -------------------


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpCheckServer]:
    directory = tmp_path_factory.mktemp("adversarial-http")
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(POLICIES))
    store = policy_store({}, threads=4)
    load(DirectorySource(directory), store)
    try:
        with ATTACKER, http_check_server(store, clock=lambda: NOW) as server:
            yield server
    finally:
        store.close()
    assert ATTACKER.total_hits() == 0


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_over_http(http_server: HttpCheckServer, case: Case) -> None:
    """The HTTP answer has no reason code on the wire: authz's decision counter has it."""
    before = http_server.decisions(case.reason)
    headers = {"host": HOST, **case.request_headers()}
    response = http_server.request("GET", "/check/envoy" + case.path, headers)
    assert response.status == case.status
    assert http_server.decisions(case.reason) == before + 1
    if response.status == 200 and case.reason == "allowed":
        assert response.headers["x-auth-subject"] == "alice"
    if case.token is not None and response.status != 200:
        assert case.token.encode() not in response.body
        assert case.token not in response.headers.get("www-authenticate", "")
    assert ATTACKER.total_hits() == 0, "a key reference in a token header was fetched"
