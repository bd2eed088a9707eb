from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.request.decision import Reason
from authz.request.jose import MAX_DEPTH, TokenError, parse
from tests.support.tokens import b64url, b64url_decode, compact

HEADER = {"alg": "ES256", "kid": "k1", "typ": "JWT"}
CLAIMS = {"iss": "https://issuer.test", "sub": "alice", "n": [1, {"a": None}], "f": 1.5}
SIGNATURE = bytes(range(64))
TOKEN = compact(HEADER, CLAIMS, SIGNATURE)
B64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def rejected(token: str, reason: Reason = Reason.TOKEN_MALFORMED, **kwargs: Any) -> TokenError:
    with pytest.raises(TokenError) as excinfo:
        parse(token, **kwargs)
    assert excinfo.value.reason == reason
    assert token not in excinfo.value.detail
    return excinfo.value


def with_payload(raw: bytes) -> str:
    return compact(HEADER, raw, SIGNATURE)


def with_header(raw: bytes) -> str:
    return compact(raw, CLAIMS, SIGNATURE)


def test_parses_a_compact_jws() -> None:
    parsed = parse(TOKEN)
    assert parsed.header == HEADER
    assert parsed.claims == CLAIMS
    assert parsed.signature == SIGNATURE
    assert parsed.signing_input == TOKEN.rsplit(".", 1)[0].encode()


def test_token_error_carries_reason_and_detail() -> None:
    error = rejected("a.b")
    assert str(error) == f"{Reason.TOKEN_MALFORMED}: {error.detail}"
    assert error.detail == "expected 3 dot-separated parts, got 2"


# --- size and shape ---------------------------------------------------------------------------


def test_size_limit() -> None:
    assert parse(TOKEN, max_size=len(TOKEN)).claims == CLAIMS
    rejected(TOKEN, Reason.TOKEN_TOO_LARGE, max_size=len(TOKEN) - 1)


def test_100kb_token_is_too_large() -> None:
    huge = with_payload(json.dumps({"x": "a" * 100_000}).encode())
    assert rejected(huge, Reason.TOKEN_TOO_LARGE).detail.endswith("over 16384")


@pytest.mark.parametrize("parts", [1, 2, 4, 5])
def test_wrong_number_of_parts(parts: int) -> None:
    segments = [*TOKEN.split("."), "AAAA", "AAAA"]
    rejected(".".join(segments[:parts]))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_empty_part(index: int) -> None:
    segments = TOKEN.split(".")
    segments[index] = ""
    rejected(".".join(segments))


@pytest.mark.parametrize("bad", ["=", "==", "+", "/", " ", "\n", "\t", "é", "\0", "%3D"])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_characters_outside_base64url(bad: str, index: int) -> None:
    segments = TOKEN.split(".")
    segments[index] += bad
    rejected(".".join(segments))


def test_standard_base64_alphabet_is_rejected() -> None:
    # 0xfb 0xff encodes to "-_8" in base64url and "+/8" in standard base64.
    token = compact(HEADER, CLAIMS, b"\xfb\xff" * 32)
    assert "-_" in token.split(".")[2]
    assert parse(token).signature == b"\xfb\xff" * 32
    rejected(token.replace("-", "+").replace("_", "/"))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_impossible_base64url_length(index: int) -> None:
    segments = TOKEN.split(".")
    segments[index] += "A" * (4 - len(segments[index]) % 4 + 1)
    assert len(segments[index]) % 4 == 1
    assert "invalid base64url length" in rejected(".".join(segments)).detail


@pytest.mark.parametrize("length", [1, 2])  # 1 byte: 4 unused bits; 2 bytes: 2 unused bits
def test_non_canonical_base64url(length: int) -> None:
    payload = b"{}" + b" " * (3 + length - 2)  # a JSON object of 3k + length bytes
    token = with_payload(payload)
    segment = token.split(".")[1]
    last = segment[-1]
    sibling = B64URL[B64URL.index(last) + 1]  # differs only in the unused bits
    forged = token.replace(f"{segment}.", f"{segment[:-1]}{sibling}.")
    assert b64url_decode(forged.split(".")[1]) == payload  # a lenient decoder sees no change
    assert "not canonical base64url" in rejected(forged).detail


@settings(max_examples=200, database=None)
@given(st.binary(min_size=1, max_size=8), st.sampled_from(B64URL))
def test_canonical_check_matches_reencoding(data: bytes, last: str) -> None:
    """A signature segment parses iff re-encoding its decoded bytes gives it back."""
    encoded = b64url(data)
    variant = encoded[:-1] + last
    token = f"{TOKEN.rsplit('.', 1)[0]}.{variant}"
    if b64url(b64url_decode(variant)) == variant:
        assert parse(token).signature == b64url_decode(variant)
    else:
        rejected(token)


# --- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",
        b'{"sub": "\xc3"}',
        '{"sub":"a"}'.encode("utf-16"),
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
    ],
)
def test_payload_not_utf8_json(raw: bytes) -> None:
    rejected(with_payload(raw))


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"{'a': 1}", b'{"a": 1,}', b"[]", b'"sub"', b"1", b"null", b'{"a": "\x01"}'],
)
def test_payload_not_a_json_object(raw: bytes) -> None:
    rejected(with_payload(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"alg":"ES256","alg":"none"}',
        b'{"alg":"ES256","x":{"a":1,"a":2}}',
    ],
)
def test_duplicate_members_in_header(raw: bytes) -> None:
    assert "duplicate member" in rejected(with_header(raw)).detail


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sub":"alice","sub":"admin"}',
        b'{"a":[{"b":{"c":1,"c":1}}]}',
        b'{"a":1,"\\u0061":2}',  # the same member, escaped
    ],
)
def test_duplicate_members_in_payload(raw: bytes) -> None:
    assert "duplicate member" in rejected(with_payload(raw)).detail


@pytest.mark.parametrize(
    "number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" * 5000]
)
def test_non_finite_or_absurd_numbers(number: bytes) -> None:
    rejected(with_payload(b'{"exp":' + number + b"}"), max_size=10_000)


def test_large_finite_numbers_are_fine() -> None:
    assert parse(with_payload(b'{"exp":1e300,"n":' + b"9" * 400 + b"}")).claims["exp"] == 1e300


def nested(depth: int) -> bytes:
    """A JSON object whose containers nest `depth` deep (the object itself is depth 1)."""
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_nesting_limit() -> None:
    assert parse(with_payload(nested(MAX_DEPTH))).claims["a"] is not None
    assert "nested deeper than 32" in rejected(with_payload(nested(MAX_DEPTH + 1))).detail
    assert "nested deeper" in rejected(with_header(nested(MAX_DEPTH + 1))).detail


def test_many_shallow_containers_are_fine() -> None:
    wide = {f"c{i}": [i, {"x": [i]}] for i in range(40)}
    assert parse(with_payload(json.dumps(wide).encode())).claims == wide


@pytest.mark.parametrize("depth", [1_000, 5_000, 12_000])
def test_very_deep_nesting_does_not_escape_as_recursion_error(depth: int) -> None:
    rejected(with_payload(nested(depth)), max_size=100_000)


# --- header ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [{}, {"alg": None}, {"alg": 256}, {"alg": ["ES256"]}, {"typ": "JWT"}],
)
def test_alg_missing_or_not_a_string(header: dict[str, Any]) -> None:
    assert "'alg'" in rejected(compact(header, CLAIMS, SIGNATURE)).detail


@pytest.mark.parametrize("kid", [1, None, ["k1"], {"k": 1}])
def test_kid_not_a_string(kid: object) -> None:
    assert "'kid'" in rejected(compact({**HEADER, "kid": kid}, CLAIMS, SIGNATURE)).detail


@pytest.mark.parametrize(
    "extra",
    [{"crit": []}, {"crit": ["exp"]}, {"crit": ["b64"], "b64": False}, {"b64": False}],
)
def test_unsupported_header_extensions(extra: dict[str, Any]) -> None:
    rejected(compact({**HEADER, **extra}, CLAIMS, SIGNATURE), Reason.HEADER_UNSUPPORTED)


def test_b64_true_is_still_unsupported() -> None:
    rejected(compact({**HEADER, "b64": True}, CLAIMS, SIGNATURE), Reason.HEADER_UNSUPPORTED)


def test_key_reference_headers_are_ignored() -> None:
    header = {
        **HEADER,
        "jku": "https://attacker.test/jwks",
        "x5u": "https://attacker.test/cert",
        "jwk": {"kty": "oct", "k": "AAAA"},
        "x5c": ["MIIB"],
    }
    assert parse(compact(header, CLAIMS, SIGNATURE)).header == header


def test_header_problems_come_before_payload_problems() -> None:
    rejected(
        compact({"alg": "ES256", "crit": []}, b"not json", SIGNATURE), Reason.HEADER_UNSUPPORTED
    )
