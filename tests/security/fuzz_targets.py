"""Fuzz targets: bytes in, an exception out only when authz has a bug.

Each target turns arbitrary bytes into input for one layer and checks its contract:

* `token`: the strict parser and the verifier raise nothing but TokenError, and no
  changed token verifies.
* `policy`: YAML text, or a valid policy set mutated as the bytes say, goes through
  parsing, validation, compilation and the store: nothing but the documented rejections,
  and the snapshot built still decides requests.
* `check`: a CheckRequest parsed from the bytes (protobuf wire format) or built from them
  goes through the Check handler: never an exception, never an allow without a valid token.
* `dpop`: a DPoP proof made from the bytes, with a valid bound token, goes through the
  Check handler: a 400 or 401, or an allow only for a proof a plain reader also accepts.

The same targets run under hypothesis for a few seconds in `make test`
(tests/security/test_fuzz.py) and coverage-guided under atheris in `make fuzz`
(tests/security/fuzz.py). Keys are generated when this module is imported.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf.message import DecodeError
from jwt.algorithms import ECAlgorithm

from authz.keys.remote import KeyManager
from authz.policy.files import documents
from authz.policy.store import PolicyStore
from authz.policy.validate import PolicyError, PolicyObject, validate_document
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.verify import verify
from tests.support import docs
from tests.support.authz import grpc_checker
from tests.support.dpop import DPoPClient, ath
from tests.support.snapshots import serve
from tests.support.tokens import (
    AUDIENCE,
    ISSUER,
    NOW,
    b64url,
    claims,
    compact,
    make_issuer,
    mint,
    signing_key,
)

_ISSUER, _PRIVATE = make_issuer("ES256")
ISSUERS = {ISSUER: _ISSUER}
VALID = mint(_PRIVATE)
_HEADER = {"alg": "ES256", "kid": "k1"}
_SIGNER = ECAlgorithm.from_jwk(_PRIVATE)
ORIGIN = str(Path("/nonexistent/fuzz/policy.yaml"))  # key files named by fuzzed specs do not exist


class FuzzFailure(AssertionError):
    """A contract of the layer under test was broken (a crash is any other exception)."""


def _signed(header: bytes, payload: bytes) -> str:
    """A correctly signed token around arbitrary header and payload bytes."""
    head, body = b64url(header), b64url(payload)
    der = _SIGNER.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# --- token --------------------------------------------------------------------------------------


def token(data: bytes) -> None:
    mode, rest = (data[0] % 4, data[1:]) if data else (0, b"")
    if mode == 0:
        text = rest.decode("latin-1")
    elif mode == 1:  # splice the bytes into a valid token
        at = int.from_bytes(rest[:2] or b"\0", "big") % (len(VALID) + 1)
        cut = rest[2:3][0] % 8 if len(rest) > 2 else 0
        text = VALID[:at] + rest[3:].decode("latin-1") + VALID[at + cut :]
    elif mode == 2:  # a validly signed token whose claims are the bytes
        text = _signed(json.dumps(_HEADER).encode(), rest)
    else:  # a validly signed token whose JOSE header is the bytes
        text = _signed(rest, json.dumps(claims()).encode())
    try:
        verified = verify(text, ISSUERS, NOW)
    except TokenError:
        return
    if mode == 1 and text != VALID:
        raise FuzzFailure(f"a changed token verified: {text!r}")
    if mode == 2 and not isinstance(verified.claims.get("iss"), str):
        raise FuzzFailure("verified claims without a string iss")


# --- policy -------------------------------------------------------------------------------------

BASE_DOCS: list[dict[str, Any]] = [
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "JWTIssuer",
        "metadata": {"name": "idp", "namespace": "fuzz"},
        "spec": {
            "issuer": ISSUER,
            "jwks": {"keys": [signing_key("ES256")[1]]},
            "algorithms": ["ES256"],
            "audiences": [AUDIENCE],
            "clockSkewSeconds": 60,
            "tokenSources": [{"header": {"name": "Authorization", "prefix": "Bearer "}}],
            "claims": {"scopes": ["scope"], "roles": ["realm_access.roles"]},
        },
    },
    {
        "apiVersion": "authz.io/v1alpha1",
        "kind": "AuthzPolicy",
        "metadata": {"name": "api", "namespace": "fuzz"},
        "spec": {
            "targets": {"hosts": ["api.test", "*.api.test"]},
            "issuers": [{"name": "idp"}],
            "rules": [
                {"name": "anon", "match": {"paths": ["/anon"]}, "action": "allowAnonymous"},
                {"name": "off", "match": {"pathPrefixes": ["/off/"]}, "action": "deny"},
                {
                    "name": "read",
                    "match": {"methods": ["GET"], "paths": ["/orders/{id}", "/files/**"]},
                    "requireScopes": {"allOf": ["read"], "anyOf": ["a", "b"]},
                    "claims": [{"path": "tenant", "regex": "a.*"}, {"path": "x", "in": ["1"]}],
                },
            ],
            "defaultAction": "requireToken",
            "response": {"headers": [{"name": "x-auth-subject", "claim": "sub"}]},
        },
    },
]
_PALETTE: list[Any] = [
    None, True, False, 0, -1, 1, 2**70, 1.5, "", "x", "*", "/**", "/{", "{id=**}", "(",
    "https://", "HS256", "none", "requireToken", "deny", "allowAnonymous", ISSUER, [], {},
    [""], ["x"], {"a": 1}, {"name": "idp"}, {"kind": "ClusterJWTIssuer", "name": "idp"},
    "a\\.b", ".", "[", "a" * 300, {"header": {"name": "x"}}, {"query": {"name": "t"}},
]  # fmt: skip


def _mutate(docs: Any, data: bytes) -> Any:
    """Apply one mutation per 3 bytes: walk to a node by byte choices, then replace,
    delete, add or duplicate something there."""
    for i in range(0, len(data) - 2, 3):
        op, where, what = data[i], data[i + 1], data[i + 2]
        node = docs
        for step in range(where % 6):  # descend a few levels, choosing children by bits
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            containers = [(k, v) for k, v in children if isinstance(v, dict | list) and v]
            if not containers:
                break
            _, node = containers[(where >> step) % len(containers)]
        if isinstance(node, dict) and node:
            key = sorted(node)[what % len(node)]
            if op % 4 == 0:
                node[key] = copy.deepcopy(_PALETTE[what % len(_PALETTE)])
            elif op % 4 == 1:
                del node[key]
            elif op % 4 == 2:
                node[f"unknown{what % 3}"] = _PALETTE[op % len(_PALETTE)]
            else:
                node[key] = copy.deepcopy(node[key]) if op & 4 else str(node[key])
        elif isinstance(node, list) and node:
            if op % 2:
                node.append(copy.deepcopy(node[what % len(node)]))
            else:
                node[what % len(node)] = copy.deepcopy(_PALETTE[op % len(_PALETTE)])
    return docs


def policy(data: bytes) -> None:
    if data[:1] == b"\0":  # raw YAML text
        try:
            docs = documents(data[1:].decode("utf-8", "replace"))
        except yaml.YAMLError:
            return
    else:
        docs = _mutate(copy.deepcopy(BASE_DOCS), data[1:])
    objects: list[PolicyObject] = []
    failures: dict[str, tuple[str, list[str]]] = {}
    for doc in docs:
        try:
            objects.append(validate_document(doc, ORIGIN))
        except PolicyError as exc:
            if exc.key is not None:
                failures[exc.key] = (ORIGIN, exc.problems)
    store = PolicyStore(keys=KeyManager(start=False))  # fuzzed key URLs are never fetched
    store.update(objects, failures)
    response, _ = grpc_checker(store).check(_request(b"GET", b"api.test", b"/orders/1", VALID))
    if response.status.code != 0 and response.denied_response.status.code not in (400, 401, 403):
        raise FuzzFailure(f"unexpected response {response}")


# --- check --------------------------------------------------------------------------------------

_CHECK_STORE = PolicyStore(keys=KeyManager(start=False))
_CHECK_STORE.update([validate_document(d, ORIGIN) for d in BASE_DOCS], {})
_CHECKER = grpc_checker(_CHECK_STORE, clock=lambda: NOW)
_TOKENS = [
    VALID,
    mint(_PRIVATE, claims(scope="read a", tenant="acme", x=1)),
    mint(_PRIVATE, claims(exp=NOW - 3600, iat=NOW - 7200)),
    mint(signing_key("ES256", "k2")[0], claims()),
    compact({"alg": "none"}, claims(), b"\0"),
    "garbage",
]


def _request(method: bytes, host: bytes, path: bytes, bearer: str | None) -> CheckRequest:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method = method.decode("utf-8", "replace")
    http.host = host.decode("utf-8", "replace")
    http.path = path.decode("utf-8", "replace")
    if bearer is not None:
        http.headers["authorization"] = f"Bearer {bearer}"
    return request


def _built(data: bytes) -> CheckRequest:
    """Lines: method, host, path, then `name: value` headers; byte 0 picks a token."""
    pick, *lines = data.split(b"\n") if data else [b""]
    method, host, path = [*lines, b"", b"", b""][:3]
    choice = pick[0] % (len(_TOKENS) + 1) if pick else 0
    request = _request(method, host, path, _TOKENS[choice - 1] if choice else None)
    headers = request.attributes.request.http.headers
    for line in lines[3:]:
        name, _, value = line.partition(b":")
        headers[name.decode("utf-8", "replace").lower()] = value.decode("utf-8", "replace")
    return request


def check(data: bytes) -> None:
    requests = [_built(data)]
    with contextlib.suppress(DecodeError, RecursionError):
        requests.append(CheckRequest.FromString(data))
    for request in requests:
        response, outcome = _CHECKER.check(request)
        decision = outcome.decision
        if not decision.allowed:
            if response.denied_response.status.code not in (400, 401, 403):
                raise FuzzFailure(f"denial with status {response.denied_response.status.code}")
            continue
        if decision.reason == Reason.ALLOWED_ANONYMOUS:
            continue
        verified = outcome.verified
        if verified is None or verified.claims.get("sub") != "alice":
            raise FuzzFailure(f"allowed without a valid token: {decision}")


# --- dpop ---------------------------------------------------------------------------------------

_DPOP_CLIENT = DPoPClient("ES256")
_DPOP_SIGNER = ECAlgorithm.from_jwk({k: v for k, v in _DPOP_CLIENT.private.items() if k != "kid"})
_DPOP_PUBLIC = ECAlgorithm.from_jwk(_DPOP_CLIENT.public)
_BOUND = mint(_PRIVATE, claims(cnf={"jkt": _DPOP_CLIENT.jkt}))
_DPOP_HOST, _DPOP_PATH = "dpop.test", "/r"
_DPOP_HTU = f"https://{_DPOP_HOST}{_DPOP_PATH}"
_DPOP_CHECKER = grpc_checker(
    serve(docs.issuer(), docs.policy(hosts=[_DPOP_HOST], dpop={})), clock=lambda: NOW
)
_DPOP_HEADER = {"typ": "dpop+jwt", "alg": "ES256", "jwk": _DPOP_CLIENT.public}


def _proof_signed(header: bytes, payload: bytes) -> str:
    """A proof correctly signed by the bound key around arbitrary header and payload bytes."""
    head, body = b64url(header), b64url(payload)
    der = _DPOP_SIGNER.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _honest_reading(proof: str) -> dict[str, Any]:
    """What a plain reader makes of an accepted proof: lenient base64 and json.loads, the
    signature checked with the bound key. Raises FuzzFailure if the proof is not one."""
    try:
        head, body, signature = proof.split(".")
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        r, s_ = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        _DPOP_PUBLIC.verify(
            encode_dss_signature(r, s_), f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())
        )
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        return {
            "header": header,
            **json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))),
        }
    except Exception as exc:
        raise FuzzFailure(f"an accepted proof a plain reader refuses: {exc!r}") from None


def dpop(data: bytes) -> None:
    """Byte 0: 0 the rest is the proof header's value; 1 header and claims bytes (split at
    the first newline) signed by the bound key; 2 a valid proof whose jti is the rest.
    Contract: a 400 or 401 (never an error or 503), and an allow only for a proof a plain
    reader also finds signed by the bound key, of type dpop+jwt, for this request and token."""
    mode, rest = (data[0] % 3, data[1:]) if data else (0, b"")
    if mode == 0:
        proof = rest.decode("latin-1")
    elif mode == 1:
        header, _, payload = rest.partition(b"\n")
        proof = _proof_signed(header, payload)
    else:
        proof = _DPOP_CLIENT.proof(_BOUND, "GET", _DPOP_HTU, jti=rest.hex()[:200] or "j")
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.host, http.path, http.scheme = "GET", _DPOP_HOST, _DPOP_PATH, "https"
    http.headers.update({"authorization": f"DPoP {_BOUND}", "dpop": proof})
    response, outcome = _DPOP_CHECKER.check(request)
    if not outcome.decision.allowed:
        if response.denied_response.status.code not in (400, 401):
            raise FuzzFailure(f"denial with status {response.denied_response.status.code}")
        return
    seen = _honest_reading(proof)
    expected = {"htm": "GET", "htu": _DPOP_HTU, "ath": ath(_BOUND)}
    if seen["header"].get("typ") != "dpop+jwt" or any(
        seen.get(k) != v for k, v in expected.items()
    ):
        raise FuzzFailure(f"allowed a proof for something else: {seen}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "token": token,
    "policy": policy,
    "check": check,
    "dpop": dpop,
}


def seeds(name: str) -> list[bytes]:
    """Starting inputs: a valid one of each shape, so mutation begins inside the format."""
    if name == "token":
        return [b"\0" + VALID.encode(), b"\1\0\10", b"\2" + json.dumps(claims()).encode()]
    if name == "policy":
        return [b"\0" + yaml.safe_dump_all(BASE_DOCS).encode(), b"\1", b"\1\0\3\7"]
    if name == "dpop":
        claims_ = {"jti": "j", "htm": "GET", "htu": _DPOP_HTU, "iat": NOW, "ath": ath(_BOUND)}
        return [
            b"\2seed",
            b"\1" + json.dumps(_DPOP_HEADER).encode() + b"\n" + json.dumps(claims_).encode(),
            b"\0" + _DPOP_CLIENT.proof(_BOUND, "GET", _DPOP_HTU).encode(),
        ]
    return [
        b"\2\nGET\napi.test\n/orders/1\nx-a: b",
        _request(b"GET", b"api.test", b"/anon", None).SerializeToString(),
        _request(b"GET", b"api.test", b"/orders/1", _TOKENS[1]).SerializeToString(),
    ]
