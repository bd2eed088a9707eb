"""Request paths normalised exactly as Envoy normalises them, so authz decides on the path
the proxy routes and the upstream receives.

Envoy's `normalize_path` runs Chromium's URL path canonicaliser (Google's `url` library);
`merge_slashes` then collapses runs of `/`. In that order: dot segments are resolved before
slashes merge (`/admin//../x` is `/admin/x`, not `/x`), `\\` is a `/`, `%2e` is a dot, a
segment of literal dots followed by `;` is a dot segment (`/..;x`), escapes of unreserved
characters are decoded, other escapes are kept as sent (hex case included), and characters
a URL may not carry are escaped. tests/e2e/test_path_normalisation.py holds this to a real
Envoy, path by path.
"""

from __future__ import annotations

import re

_HEX = frozenset("0123456789abcdefABCDEF")
# Decoded when escaped: RFC 3986 unreserved (the dot is handled as a dot).
_DECODE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")
# Escaped when sent raw: controls, space, and what Chromium's table escapes.
_ESCAPE = frozenset('"#<>`{|}^ \x7f') | frozenset(map(chr, range(0x20)))
_SLASHES = "/\\"
# Anything outside these needs the slow path (a `%`, a `\`, a character to escape).
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/\[\]]*")
_SLASH_RUN = re.compile(r"/{2,}")
ENCODED_SLASH = re.compile(r"%(?:2[fF]|5[cC])")


def normalize_path(path: str) -> str:
    """`path` (no query) as Envoy forwards it with normalize_path and merge_slashes on."""
    if _PLAIN.fullmatch(path) and "/." not in path:
        return _SLASH_RUN.sub("/", path) if "//" in path else path
    return _SLASH_RUN.sub("/", _canonical(path))


def _dot(path: str, i: int) -> int:
    """The length of a dot at `i`: `.` is 1, `%2e` (any case) is 3, anything else 0."""
    if path.startswith(".", i):
        return 1
    if path.startswith("%", i) and path[i + 1 : i + 3] in ("2e", "2E"):
        return 3
    return 0


def _up(out: list[str]) -> None:
    """Drop the last segment: `out` ends in `/`; back up to the slash before (never past
    the first)."""
    out.pop()
    while out and out[-1] != "/":
        out.pop()
    if not out:
        out.append("/")


def _canonical(path: str) -> str:
    out: list[str] = []  # one character per item: backing up is a few pops
    n = len(path)
    i = 0
    invalid_percent = -4  # index in `out` of a `%` that began no valid escape
    while i < n:
        c = path[i]
        dot = _dot(path, i)
        if dot and out and out[-1] == "/":
            i = _dot_segment(path, i, dot, out)
            continue
        if dot:
            out.append(".")
            i += dot
            continue
        if c == "\\":
            out.append("/")
        elif c == "%":
            if i + 2 < n and path[i + 1] in _HEX and path[i + 2] in _HEX:
                value = chr(int(path[i + 1 : i + 3], 16))
                i += 3
                if value in _DECODE:
                    out.append(value)
                    if invalid_percent >= len(out) - 3:
                        _nested_escape(path, i, invalid_percent, out)
                else:
                    out.extend(path[i - 3 : i])
                continue
            invalid_percent = len(out)
            out.append("%")
        elif c in _ESCAPE or c > "\x7f":
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass"))
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _dot_segment(path: str, i: int, dot: int, out: list[str]) -> int:
    """A dot right after a slash: `.` or `..` (each dot literal or `%2e`) ending the segment
    is the current or parent directory; literal `.` or `..` followed by `;` right after a
    literal `/` is too, with everything up to the next literal `/` (Envoy reads those
    segments before the canonicaliser turns `\\` into `/`). Returns where to continue."""
    n = len(path)
    after = i + dot
    if after == n or path[after] in _SLASHES:
        return after + 1
    second = _dot(path, after)
    end = after + second
    if second and (end == n or path[end] in _SLASHES):
        _up(out)
        return end + 1
    literal = 0
    if i and path[i - 1] == "/":  # the `;` form counts only after a literal slash
        literal = 2 if path.startswith("..;", i) else 1 if path.startswith(".;", i) else 0
    if literal:
        if literal == 2:
            _up(out)
        slash = path.find("/", i)
        return n if slash < 0 else slash + 1
    out.append(".")
    return i + dot


def _nested_escape(path: str, i: int, percent: int, out: list[str]) -> None:
    """A decoded character just completed `%` + two characters that read as an escape
    (`%%30` became `%0`, then `0` follows): escape that `%` as `%25`, as Chromium does, so
    the result cannot decode to something else the next time it is normalised."""
    length = len(out)
    last = out[-1]
    append_next = percent == length - 2
    if append_next:
        if i >= len(path) or path[i] > "\x7f":
            return
        out.append(path[i])
    # As Chromium's DecodeEscaped: bounds and hex digits only (after backing up over a
    # segment, `percent` may point at something else by now).
    if (
        percent >= 0
        and percent + 3 <= len(out)
        and out[percent + 1] in _HEX
        and out[percent + 2] in _HEX
    ):
        if not append_next:
            out.append(out[percent + 1])
        out[percent + 1] = "2"
        out[percent + 2] = "5"
        out.append(last)
    elif append_next:
        del out[length:]
