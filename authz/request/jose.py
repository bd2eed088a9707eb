"""Strict JWS compact serialization parsing (RFC 7515), without signature verification.

Anything a lenient decoder would guess about is rejected: padding or other base64
alphabets, non-canonical base64url, duplicate JSON members, non-finite numbers,
deep nesting, and header extensions we do not implement. Two decoders that read the
same token differently are how signature bypasses happen, so there is one reading.
Error details never include the token.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from authz.request.decision import Reason

MAX_DEPTH = 32

# The base64url alphabet and the part separator: a token is only these bytes.
_TOKEN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", None, b"==", b"=")  # indexed by len % 4; None: impossible length
# The last character of a segment whose length % 4 is 2 (or 3) carries 4 (or 2) unused
# bits, which must be zero for the encoding to be canonical: exactly these characters.
_CANONICAL_LAST = (None, None, frozenset(b"AQgw"), frozenset(b"AEIMQUYcgkosw048"))


class TokenError(Exception):
    """A token that cannot be accepted; `reason` is the Reason code, `detail` is safe to log."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A syntactically valid JWS: decoded header and claims, and what the signature covers."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class JWS:
    """A compact JWS with its payload still opaque bytes (not every JWS carries claims)."""

    header: dict[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


class Headers:
    """Decoded JOSE headers by their exact encoded bytes, bounded: for a verifier that sees
    one header again and again (every DPoP proof of a client carries the same one). A hit
    is the very header these bytes decoded to and passed the header checks as; it is
    shared, so it is never mutated."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._decoded: dict[bytes, dict[str, Any]] = {}

    def get(self, segment: bytes) -> dict[str, Any] | None:
        return self._decoded.get(segment)

    def put(self, segment: bytes, header: dict[str, Any]) -> None:
        if len(self._decoded) >= self.max_entries:
            self._decoded.clear()
        self._decoded[segment] = header


def parse(token: str, max_size: int = 16384, headers: Headers | None = None) -> ParsedToken:
    """Split, decode and JSON-parse a compact JWS; raises TokenError on anything non-canonical."""
    jws = parse_jws(token, max_size, headers)
    return ParsedToken(
        jws.header, _json_object(jws.payload, "payload"), jws.signing_input, jws.signature
    )


def claims_of(payload: bytes) -> dict[str, Any]:
    """The claims in a JWS payload, decoded exactly as `parse` does (the token cache keeps
    verified payloads as bytes and decodes them again with this)."""
    return _json_object(payload, "payload")


def parse_jws(token: str, max_size: int = 16384, headers: Headers | None = None) -> JWS:
    """The JWS layer of `parse`: header checks and strict decoding, payload left as bytes.
    With `headers`, a header seen before is not decoded again."""
    if len(token) > max_size:
        raise TokenError(Reason.TOKEN_TOO_LARGE, f"token is {len(token)} bytes, over {max_size}")
    if not token.isascii() or (raw := token.encode("ascii")).translate(None, _TOKEN_BYTES):
        raise TokenError(
            Reason.TOKEN_MALFORMED, "token has characters outside the base64url alphabet"
        )
    parts = raw.translate(_TO_STANDARD).split(b".")
    if len(parts) != 3:
        raise TokenError(
            Reason.TOKEN_MALFORMED, f"expected 3 dot-separated parts, got {len(parts)}"
        )
    header_b64, claims_b64, signature_b64 = parts
    header = headers.get(header_b64) if headers is not None else None
    if header is None:
        header = _checked_header(header_b64)
        if headers is not None:
            headers.put(header_b64, header)
    payload = _decode_b64url(claims_b64, "payload")
    signature = _decode_b64url(signature_b64, "signature")
    signing_input = raw[: len(header_b64) + 1 + len(claims_b64)]
    return JWS(header, payload, signing_input, signature)


def _checked_header(segment: bytes) -> dict[str, Any]:
    header = _decode_json(segment, "header")
    if not isinstance(header.get("alg"), str):
        raise TokenError(Reason.TOKEN_MALFORMED, "header 'alg' missing or not a string")
    if "kid" in header and not isinstance(header["kid"], str):
        raise TokenError(Reason.TOKEN_MALFORMED, "header 'kid' is not a string")
    # We implement no JWS extension, so `crit` can never be satisfied (RFC 7515 4.1.11);
    # `b64` (RFC 7797) changes what is signed and is refused even without `crit`.
    if "crit" in header:
        raise TokenError(Reason.HEADER_UNSUPPORTED, "header 'crit' is not supported")
    if "b64" in header:
        raise TokenError(Reason.HEADER_UNSUPPORTED, "header 'b64' is not supported")
    return header


def _decode_b64url(segment: bytes, name: str) -> bytes:
    """Decode an unpadded segment already mapped to the standard alphabet, canonically."""
    rest = len(segment) % 4
    pad = _PADDING[rest]
    canonical = _CANONICAL_LAST[rest]
    if not segment:
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} is empty")
    if pad is None:
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} has an invalid base64url length")
    if canonical is not None and segment[-1] not in canonical:
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} is not canonical base64url")
    return binascii.a2b_base64(segment + pad)


def _decode_json(segment: bytes, name: str) -> dict[str, Any]:
    return _json_object(_decode_b64url(segment, name), name)


def _json_object(raw: bytes, name: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and our hooks' rejections
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} is not a JSON object")
    # Bracket count bounds depth, so the walk only runs for the rare token with many containers.
    if text.count("{") + text.count("[") > MAX_DEPTH and _too_deep(value):
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} JSON is nested deeper than {MAX_DEPTH}")
    # A `\ud800` escape decodes to a lone surrogate: no UTF-8 can carry it to a header, a log
    # line or a cache key. Only escapes can make one, so the walk runs only when one appears.
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise TokenError(Reason.TOKEN_MALFORMED, f"{name} has an unpaired UTF-16 surrogate")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: object) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _too_deep(value: object) -> bool:
    """Whether containers nest deeper than MAX_DEPTH (the top-level object is depth 1)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            if depth > MAX_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in node)
    return False


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing duplicate members (which parsers resolve differently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate member {key[:64]!r}")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


# One decoder, built once: json.loads would rebuild the scanner on every call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_object,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)
