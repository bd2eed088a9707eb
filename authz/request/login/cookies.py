"""Cookies as browser sign-in writes them: HttpOnly, Secure, SameSite=Lax, and split across
`<name>`, `<name>.1`, ... when a value is larger than a browser keeps in one cookie.

SameSite=Lax sends the cookie on top-level navigations (the provider's redirect back to
the callback is one) and on same-site requests, never on a cross-site POST. Values are
sealed (base64url), so they need no quoting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from authz.request.decision import Reason
from authz.request.jose import TokenError

# RFC 6265 section 6.1: browsers keep at least 4096 bytes per cookie, name and attributes
# included; 3800 leaves room for the name and `Path=/; Max-Age=...; HttpOnly; Secure; ...`.
CHUNK = 3800
MAX_CHUNKS = 8
_ATTRIBUTES = "HttpOnly; Secure; SameSite=Lax"


def parse(header: str) -> dict[str, list[str]]:
    """The Cookie header's values by name, in order (a name sent twice has two values)."""
    found: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            found.setdefault(name, []).append(value.strip())
    return found


def set_cookie(name: str, value: str, *, path: str = "/", max_age: int | None = None) -> str:
    age = f"; Max-Age={max(0, max_age)}" if max_age is not None else ""
    return f"{name}={value}; Path={path}{age}; {_ATTRIBUTES}"


def clear_cookie(name: str, *, path: str = "/") -> str:
    return f"{name}=; Path={path}; Max-Age=0; {_ATTRIBUTES}"


def chunk_names(name: str) -> tuple[str, ...]:
    return (name, *(f"{name}.{i}" for i in range(1, MAX_CHUNKS)))


def read_chunked(cookies: Mapping[str, list[str]], name: str) -> str | None:
    """The value split across `name`, `name.1`, ... (None when `name` is absent); raises
    TokenError when a part is sent twice (two sessions: which one would be meant?)."""
    parts = []
    for part in chunk_names(name):
        values = cookies.get(part)
        if values is None:
            break
        if len(values) > 1:
            raise TokenError(Reason.TOKEN_MULTIPLE, f"cookie {part} sent more than once")
        parts.append(values[0])
    return "".join(parts) if parts else None


def write_chunked(
    name: str, value: str, present: Iterable[str], *, max_age: int
) -> tuple[str, ...]:
    """Set-Cookie values for `value` in as many parts as it needs, clearing parts of a
    larger earlier value the browser still holds; raises ValueError when it cannot fit."""
    parts = [value[i : i + CHUNK] for i in range(0, len(value), CHUNK)] or [""]
    if len(parts) > MAX_CHUNKS:
        raise ValueError(f"{len(value)} bytes do not fit in {MAX_CHUNKS} cookies")
    names = chunk_names(name)
    out = [set_cookie(names[i], part, max_age=max_age) for i, part in enumerate(parts)]
    held = set(present)
    out.extend(clear_cookie(n) for n in names[len(parts) :] if n in held)
    return tuple(out)


def clear_chunked(name: str, present: Iterable[str]) -> tuple[str, ...]:
    """Set-Cookie values that remove every part of `name` the browser holds."""
    held = set(present)
    return tuple(clear_cookie(n) for n in chunk_names(name) if n in held)
