"""Hostile DPoP proofs and key-bound tokens through the real gRPC Check API: each is a 401
(or 400 for a malformed request) with its reason code, never an allow, and neither the
token nor the proof appears in the answer or in any log line.

Keys are generated at test time; the clock is fixed at NOW. One row per case:
(name, request headers) -> (HTTP status, reason code).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
import yaml

from authz.devtools import mint_token
from tests.support.authz import CheckClient, check_server, header
from tests.support.docs import issuer, policy
from tests.support.dpop import DROP, DPoPClient, ath
from tests.support.snapshots import bearer_token
from tests.support.tokens import NOW, b64url, signing_key

HOST = "api.test"
PATH = "/orders"
HTU = f"https://{HOST}{PATH}"
VICTIM = DPoPClient()
ATTACKER = DPoPClient()
RSA_CLIENT = DPoPClient("RS256")
TOKEN = bearer_token(cnf={"jkt": VICTIM.jkt})
ATTACKER_TOKEN = bearer_token(cnf={"jkt": ATTACKER.jkt}, sub="mallory")
# ES256 signatures are randomised: each token is minted once, so its proof's ath fits it.
RSA_TOKEN = bearer_token(cnf={"jkt": RSA_CLIENT.jkt})
UNBOUND = bearer_token()
JKT_NUMBER = bearer_token(cnf={"jkt": 1})
CNF_STRING = bearer_token(cnf=VICTIM.jkt)


def proof(**kw: Any) -> str:
    """A proof by the victim's key for the victim's token; `kw` replaces any part."""
    kw.setdefault("htm", "GET")
    kw.setdefault("htu", HTU)
    return VICTIM.proof(TOKEN, **kw)


def signed(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes) -> str:
    """Validly ES256-signed by the victim's key around arbitrary header and payload bytes."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from jwt.algorithms import ECAlgorithm

    head = b64url(header if isinstance(header, bytes) else json.dumps(header).encode())
    body = b64url(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    key = ECAlgorithm.from_jwk({k: v for k, v in VICTIM.private.items() if k != "kid"})
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


_HEADER = {"typ": "dpop+jwt", "alg": "ES256", "jwk": VICTIM.public}
_CLAIMS = {"jti": "j", "htm": "GET", "htu": HTU, "iat": NOW, "ath": ath(TOKEN)}
_VALID = proof()
_H, _P, _S = _VALID.split(".")


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)


def dpop(name: str, proof_value: str, reason: str, token: str = TOKEN, status: int = 401) -> Case:
    return Case(name, status, reason, {"authorization": f"DPoP {token}", "dpop": proof_value})


def _hs256(secret: bytes) -> str:
    import hmac

    head = b64url(json.dumps({"typ": "dpop+jwt", "alg": "HS256", "jwk": VICTIM.public}).encode())
    body = b64url(json.dumps(_CLAIMS).encode())
    mac = hmac.digest(secret, f"{head}.{body}".encode(), hashlib.sha256)
    return f"{head}.{body}.{b64url(mac)}"


_STD_ATH = base64.b64encode(hashlib.sha256(TOKEN.encode()).digest()).decode()

CASES: list[Case] = [
    dpop("baseline", _VALID, "", status=200),
    dpop("baseline RS256 proof", RSA_CLIENT.proof(RSA_TOKEN, "GET", HTU), "", RSA_TOKEN, 200),
    # malformed proofs
    dpop("empty proof header", "", "dpop_proof_missing"),
    dpop("proof not a JWS", "garbage", "dpop_proof_malformed"),
    dpop("proof with 2 parts", f"{_H}.{_P}", "dpop_proof_malformed"),
    dpop("proof with 4 parts", f"{_VALID}.{_S}", "dpop_proof_malformed"),
    dpop("proof padded", f"{_H}=.{_P}.{_S}", "dpop_proof_malformed"),
    dpop("proof in standard base64", _VALID.replace("-", "+").replace("_", "/"), "dpop_proof_malformed"),
    dpop("proof over 8 KiB", proof(pad="x" * 9000), "dpop_proof_malformed"),
    dpop("two proofs", f"{_VALID},{proof()}", "dpop_proof_malformed"),
    dpop("proof with crit", proof(header={"crit": ["x"], "x": 1}), "dpop_proof_malformed"),
    dpop("proof with b64 false", proof(header={"b64": False}), "dpop_proof_malformed"),
    dpop("duplicate alg in proof header", signed(b'{"typ":"dpop+jwt","alg":"ES256","alg":"none","jwk":' + json.dumps(VICTIM.public).encode() + b"}", _CLAIMS), "dpop_proof_malformed"),
    dpop("duplicate htu in proof claims", signed(_HEADER, json.dumps(_CLAIMS).encode()[:-1] + b',"htu":"https://evil.test/"}'), "dpop_proof_malformed"),
    dpop("proof claims nested 40 deep", signed(_HEADER, {**_CLAIMS, "x": json.loads("[" * 40 + "]" * 40)}), "dpop_proof_malformed"),
    dpop("lone surrogate in jti", proof(jti="\ud800"), "dpop_proof_malformed"),
    dpop("jti 10 KB", proof(jti="j" * 10_000), "dpop_proof_malformed"),
    dpop("jti a number", proof(jti=1), "dpop_proof_malformed"),
    dpop("iat NaN", signed(_HEADER, json.dumps(_CLAIMS).encode().replace(str(NOW).encode(), b"NaN")), "dpop_proof_malformed"),
    dpop("iat a string", proof(iat=str(NOW)), "dpop_proof_malformed"),
    dpop("iat true", proof(iat=True), "dpop_proof_malformed"),
    dpop("htm missing", proof(htm=DROP), "dpop_proof_malformed"),
    dpop("ath missing", proof(ath=DROP), "dpop_proof_malformed"),
    # typ and alg
    dpop("typ JWT", proof(header={"typ": "JWT"}), "dpop_proof_malformed"),
    dpop("typ at+jwt", proof(header={"typ": "at+jwt"}), "dpop_proof_malformed"),
    dpop("typ with a trailing space", proof(header={"typ": "dpop+jwt "}), "dpop_proof_malformed"),
    dpop("typ a list", proof(header={"typ": ["dpop+jwt"]}), "dpop_proof_malformed"),
    dpop("alg none", f"{b64url(json.dumps({**_HEADER, 'alg': 'none'}).encode())}.{_P}.", "dpop_proof_malformed"),
    dpop("alg none with a signature", f"{b64url(json.dumps({**_HEADER, 'alg': 'none'}).encode())}.{_P}.{_S}", "dpop_algorithm_not_allowed"),
    dpop("alg NONE", signed({**_HEADER, "alg": "NONE"}, _CLAIMS), "dpop_algorithm_not_allowed"),
    dpop("alg HS256 keyed with the jwk", _hs256(json.dumps(VICTIM.public).encode()), "dpop_algorithm_not_allowed"),
    dpop("alg HS256 keyed with x", _hs256(base64.urlsafe_b64decode(VICTIM.public["x"] + "=")), "dpop_algorithm_not_allowed"),
    dpop("alg es256 lower case", signed({**_HEADER, "alg": "es256"}, _CLAIMS), "dpop_algorithm_not_allowed"),
    dpop("alg RS256 over an EC jwk", signed({**_HEADER, "alg": "RS256"}, _CLAIMS), "dpop_signature_invalid"),
    dpop("alg ES384 over a P-256 jwk", signed({**_HEADER, "alg": "ES384"}, _CLAIMS), "dpop_signature_invalid"),
    # the key
    dpop("jwk missing", signed({"typ": "dpop+jwt", "alg": "ES256"}, _CLAIMS), "dpop_key_invalid"),
    dpop("jwk with the private d", proof(header={"jwk": {k: v for k, v in VICTIM.private.items() if k in ("kty", "crv", "x", "y", "d")}}), "dpop_key_invalid"),
    dpop("RSA jwk with private primes", RSA_CLIENT.proof(TOKEN, "GET", HTU, header={"jwk": {k: v for k, v in RSA_CLIENT.private.items() if k in ("kty", "n", "e", "p", "q")}}), "dpop_key_invalid"),
    dpop("oct jwk", proof(header={"jwk": {"kty": "oct", "k": b64url(b"s" * 32)}}), "dpop_key_invalid"),
    dpop("jwk kty none", proof(header={"jwk": {"kty": "none"}}), "dpop_key_invalid"),
    dpop("jwk a string", proof(header={"jwk": json.dumps(VICTIM.public)}), "dpop_key_invalid"),
    dpop("jwk point off the curve", proof(header={"jwk": {**VICTIM.public, "y": VICTIM.public["x"]}}), "dpop_key_invalid"),
    dpop("jwk of the attacker, signed by the victim", proof(header={"jwk": ATTACKER.public}), "dpop_signature_invalid"),
    dpop("jwk of the victim, signed by the attacker", ATTACKER.proof(TOKEN, "GET", HTU, header={"jwk": VICTIM.public}), "dpop_signature_invalid"),
    dpop("jku and x5u in the proof are never fetched", proof(header={"jku": "https://evil.test/jwks", "x5u": "https://evil.test/c"}), "", status=200),
    # binding to the request
    dpop("htm POST", proof(htm="POST"), "dpop_method_mismatch"),
    dpop("htm get", proof(htm="get"), "dpop_method_mismatch"),
    dpop("htu another host", proof(htu=f"https://evil.test{PATH}"), "dpop_uri_mismatch"),
    dpop("htu another path", proof(htu=f"https://{HOST}/admin"), "dpop_uri_mismatch"),
    dpop("htu http", proof(htu=f"http://{HOST}{PATH}"), "dpop_uri_mismatch"),
    dpop("htu with userinfo", proof(htu=f"https://{HOST}@evil.test{PATH}"), "dpop_uri_mismatch"),
    dpop("htu host as userinfo", proof(htu=f"https://evil.test@{HOST}{PATH}"), "dpop_uri_mismatch"),
    dpop("htu host suffix", proof(htu=f"https://{HOST}.evil.test{PATH}"), "dpop_uri_mismatch"),
    dpop("htu path prefix", proof(htu=f"https://{HOST}{PATH}/more"), "dpop_uri_mismatch"),
    dpop("htu dot segments back to the path", proof(htu=f"https://{HOST}/x/..{PATH}"), "", status=200),
    dpop("htu relative", proof(htu=PATH), "dpop_uri_mismatch"),
    dpop("htu with CRLF", proof(htu=f"https://{HOST}{PATH}\r\nx: y"), "dpop_uri_mismatch"),
    dpop("htu a list", proof(htu=[HTU]), "dpop_proof_malformed"),
    dpop("iat 61 s old", proof(iat=NOW - 61), "dpop_proof_expired"),
    dpop("iat 6 s ahead", proof(iat=NOW + 6), "dpop_proof_expired"),
    dpop("iat far future", proof(iat=NOW + 10**9), "dpop_proof_expired"),
    dpop("ath of another token", proof(ath=ath(ATTACKER_TOKEN)), "dpop_token_hash_mismatch"),
    dpop("ath in padded standard base64", proof(ath=_STD_ATH), "dpop_token_hash_mismatch"),
    dpop("ath of the token with a prefix", proof(ath=ath(f"DPoP {TOKEN}")), "dpop_token_hash_mismatch"),
    # binding to the token
    dpop("attacker's valid proof with the victim's token", ATTACKER.proof(TOKEN, "GET", HTU), "dpop_key_mismatch"),
    dpop("unbound token with a valid proof", VICTIM.proof(UNBOUND, "GET", HTU), "dpop_key_mismatch", UNBOUND),
    dpop("cnf.jkt a number", VICTIM.proof(JKT_NUMBER, "GET", HTU), "dpop_key_mismatch", JKT_NUMBER),
    dpop("cnf a string", VICTIM.proof(CNF_STRING, "GET", HTU), "claim_invalid", CNF_STRING),
    dpop("forged access token", VICTIM.proof("x.y.z", "GET", HTU), "token_malformed", "x.y.z"),
    Case("bound token as Bearer", 401, "dpop_bound_as_bearer", {"authorization": f"Bearer {TOKEN}", "dpop": _VALID}),
    Case("bound token as Bearer without a proof", 401, "dpop_bound_as_bearer", {"authorization": f"Bearer {TOKEN}"}),
    Case("DPoP scheme without a token", 400, "request_invalid", {"authorization": "DPoP ", "dpop": _VALID}),
    Case("DPoP and Bearer joined", 400, "token_multiple", {"authorization": f"DPoP {TOKEN},Bearer {TOKEN}", "dpop": _VALID}),
    Case("DPoP scheme lower case", 200, "", {"authorization": f"dpop {TOKEN}", "dpop": proof()}),
    Case("DPoPx scheme", 401, "token_missing", {"authorization": f"DPoPx {TOKEN}", "dpop": proof()}),
]  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckClient]:
    directory = tmp_path_factory.mktemp("adversarial-dpop")
    docs = [issuer(namespace="sec"), policy(namespace="sec", hosts=[HOST], dpop={})]
    (directory / "policies.yaml").write_text(yaml.safe_dump_all(docs))
    with check_server(directory, clock=lambda: NOW) as c:
        assert all(s.accepted and not s.problems for s in c.store.statuses.values())
        yield c


def verdict(response: Any) -> tuple[int, str]:
    if response.status.code == 0:
        return 200, ""
    return response.denied_response.status.code, response.status.message


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_dpop(client: CheckClient, case: Case) -> None:
    with structlog.testing.capture_logs() as logs:
        response = client.check(headers=case.headers, host=HOST, path=PATH, scheme="https")
    assert verdict(response) == (case.status, case.reason)
    secrets = [v for v in case.headers.values() if len(v) > 20]
    told = response.denied_response.body + (header(response, "www-authenticate") or "")
    assert any(line.get("event") == "decision" for line in logs)  # the audit line was seen
    lines = json.dumps(logs, default=str)
    for secret in secrets:
        for part in (secret, secret.removeprefix("DPoP "), *secret.split(".")):
            if len(part) > 20:
                assert part not in told and part not in lines


def test_a_replayed_proof_and_a_stolen_one(client: CheckClient) -> None:
    headers = {"authorization": f"DPoP {TOKEN}", "dpop": proof()}
    first = client.check(headers=headers, host=HOST, path=PATH, scheme="https")
    assert verdict(first) == (200, "")
    for _ in range(3):
        again = client.check(headers=headers, host=HOST, path=PATH, scheme="https")
        assert verdict(again) == (401, "dpop_proof_replayed")
    # The same proof under another (valid) token of the same key: its ath does not match.
    other = bearer_token(cnf={"jkt": VICTIM.jkt}, sub="alice2")
    stolen = {"authorization": f"DPoP {other}", "dpop": headers["dpop"]}
    assert verdict(client.check(headers=stolen, host=HOST, path=PATH, scheme="https")) == (
        401,
        "dpop_token_hash_mismatch",
    )


def test_a_signed_proof_with_a_private_jwk_never_passes(client: CheckClient) -> None:
    """Even correctly signed, a proof whose jwk carries `d` is refused before anything else."""
    jose = {"typ": "dpop+jwt", "jwk": {**VICTIM.public, "d": VICTIM.private["d"]}}
    signer = {k: v for k, v in VICTIM.private.items() if k != "kid"}
    bad = mint_token(signer, {**_CLAIMS, "jti": "private"}, headers=jose)
    response = client.check(
        headers={"authorization": f"DPoP {TOKEN}", "dpop": bad},
        host=HOST,
        path=PATH,
        scheme="https",
    )
    assert verdict(response) == (401, "dpop_key_invalid")


def test_case_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
    assert signing_key("ES256")  # the token signer is the shared test key
