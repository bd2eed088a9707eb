"""Certificate-bound tokens (RFC 8705) through the pipeline: a token whose `cnf.x5t#S256` is
the SHA-256 thumbprint of the client certificate the proxy reports for the connection, or,
where the policy trusts it, the one an Istio proxy wrote into `x-forwarded-client-cert`."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes

from authz.keys.thumbprint import b64url
from authz.request.credentials.binding import forwarded_certificate
from authz.request.view import KnownConnection
from tests.support.docs import issuer, policy
from tests.support.dpop import DPoPClient
from tests.support.pki import CA, pem_cert
from tests.support.snapshots import bearer_token, check, serve

CA_ = CA.create("clients")
_, ALICE = CA_.client("alice", uris=["spiffe://example.org/alice"])
_, MALLORY = CA_.client("mallory")
ALICE_PEM = pem_cert(ALICE).decode()
ALICE_X5T = b64url(ALICE.fingerprint(hashes.SHA256()))
ALICE_HEX = ALICE.fingerprint(hashes.SHA256()).hex()
TOKEN = bearer_token(cnf={"x5t#S256": ALICE_X5T})
SERVED = serve(issuer(), policy())
TRUSTING = serve(issuer(), policy(clientCertificate={"trustForwardedClientCert": True}))


def _on(pem: str) -> KnownConnection:
    """The connection as Envoy reports it: the peer certificate URL-encoded."""
    return KnownConnection(scheme="https", peer_certificate=quote(pem, safe=""))


def test_the_certificate_the_token_is_bound_to_is_accepted() -> None:
    answer, outcome = check(SERVED, path="/x", token=TOKEN, connection=_on(ALICE_PEM))
    assert (answer.status, answer.reason) == (200, "allowed")
    assert outcome.authentication is not None and outcome.authentication.binding == "x5t#S256"


def test_no_certificate_or_another_one_is_refused() -> None:
    answer, _ = check(SERVED, path="/x", token=TOKEN)
    assert (answer.status, answer.reason) == (401, "certificate_missing")
    mallory = _on(pem_cert(MALLORY).decode())
    answer, _ = check(SERVED, path="/x", token=TOKEN, connection=mallory)
    assert (answer.status, answer.reason) == (401, "certificate_mismatch")
    assert dict(answer.headers)["www-authenticate"].startswith(
        'Bearer realm="authz", error="invalid_token"'
    )


def test_an_unbound_token_needs_no_certificate() -> None:
    assert check(SERVED, path="/x", token=bearer_token())[0].status == 200


@pytest.mark.parametrize("value", [5, None, ["x"]])
def test_a_malformed_binding_is_an_invalid_claim(value: object) -> None:
    token = bearer_token(cnf={"x5t#S256": value})
    assert check(SERVED, path="/x", token=token, connection=_on(ALICE_PEM))[0].reason == (
        "claim_invalid"
    )
    assert check(SERVED, path="/x", token=bearer_token(cnf="x"))[0].reason == "claim_invalid"


def test_a_garbled_peer_certificate_counts_as_none() -> None:
    answer, _ = check(SERVED, path="/x", token=TOKEN, connection=_on("not a certificate"))
    assert answer.reason == "certificate_missing"


XFCC = f'By=spiffe://example.org/api;Hash={ALICE_HEX};Subject="CN=alice";URI=spiffe://example.org/alice'


def test_the_forwarded_client_cert_header_counts_only_when_trusted() -> None:
    headers = {"x-forwarded-client-cert": XFCC}
    answer, _ = check(SERVED, path="/x", token=TOKEN, headers=headers)
    assert answer.reason == "certificate_missing"
    answer, _ = check(TRUSTING, path="/x", token=TOKEN, headers=headers)
    assert (answer.status, answer.reason) == (200, "allowed")
    # The connection's own certificate wins over the header.
    mallory = _on(pem_cert(MALLORY).decode())
    answer, _ = check(TRUSTING, path="/x", token=TOKEN, headers=headers, connection=mallory)
    assert answer.reason == "certificate_mismatch"


def test_a_dpop_token_that_is_also_certificate_bound_needs_both() -> None:
    client = DPoPClient()
    token = bearer_token(cnf={"jkt": client.jkt, "x5t#S256": ALICE_X5T})
    served = serve(issuer(), policy(dpop={}))
    headers = client.headers(token, htu="https://api.example/x")
    assert check(served, path="/x", headers=headers)[0].reason == "certificate_missing"
    headers = client.headers(token, htu="https://api.example/x")
    answer, _ = check(served, path="/x", headers=headers, connection=_on(ALICE_PEM))
    assert answer.status == 200


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (XFCC, ALICE_X5T),
        (f"Hash={ALICE_HEX.upper()}", ALICE_X5T),
        (f'Cert="{quote(ALICE_PEM, safe="")}";Subject="CN=a,O=b;c"', ALICE_X5T),
        (f"Hash={ALICE_HEX},Hash={'00' * 32}", ALICE_X5T),  # the first element: the edge's client
        (f'Subject="a,b";Hash={ALICE_HEX}', ALICE_X5T),  # a quoted comma is not an element end
        (f"Hash={'00' * 32},Hash={ALICE_HEX}", b64url(bytes(32))),
        ("Hash=zz", None),
        ("Hash=abcd", None),
        ("Cert=garbage", None),
        ("By=spiffe://x", None),
        ("", None),
        ("Hash=" + "a" * 20_000, None),
    ],
    ids=[  # the certificates are made per run: ids that do not change with them
        "envoy-xfcc",
        "hash-upper-case",
        "cert-url-encoded",
        "first-element-alice",
        "quoted-comma",
        "first-element-zeros",
        "hash-not-hex",
        "hash-short",
        "cert-garbage",
        "no-hash-or-cert",
        "empty",
        "oversized",
    ],
)
def test_forwarded_certificate(header: str, expected: str | None) -> None:
    assert forwarded_certificate(header) == expected
