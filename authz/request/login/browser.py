"""What a request says about the browser behind it: is it a navigation (a person following
a link, who can be sent to sign in) or a script (which gets 401), and does a
state-changing request come from the site itself (CSRF)?

Fetch Metadata (`Sec-Fetch-Mode`, `Sec-Fetch-Dest`) decides where the browser sends it;
older clients are judged by `Accept: text/html` and `X-Requested-With`. The origin check
compares `Origin` (or, without one, the `Referer`'s origin) with the origin the request
was made to: its scheme, host and port, the port being the host's own, else the policy's
`publicPort`, else the scheme's default (the shipped proxy configurations strip ports).
"""

from __future__ import annotations

import urllib.parse

from authz.policy.login import LoginSettings
from authz.request.view import RequestView

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def wants_page(request: RequestView) -> bool:
    """A person is looking (a navigation, a form post): an error is better shown as a page
    than as JSON."""
    headers = request.headers
    mode = headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    if headers.get("x-requested-with", "").lower() == "xmlhttprequest":
        return False
    return "text/html" in headers.get("accept", "").lower()


def is_navigation(request: RequestView) -> bool:
    """A top-level page load: the only request a redirect to the provider helps."""
    if request.method not in ("GET", "HEAD") or not wants_page(request):
        return False
    return request.headers.get("sec-fetch-dest", "document") == "document"


def scheme_of(request: RequestView) -> str:
    """The scheme the browser used, as the proxy reports it (https when it does not)."""
    scheme = request.connection.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        scheme = forwarded if forwarded in _DEFAULT_PORTS else "https"
    return scheme


def _split(host: str) -> tuple[str, int | None]:
    """`host[:port]` (or `[v6]:port`) -> (host, port or None)."""
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
        return host[: end + 1], int(port) if port.isdigit() else None
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        return name, int(port)
    return host, None


def origin_of(request: RequestView, login: LoginSettings) -> str:
    """`scheme://host[:port]` of the request, as a browser writes its origin."""
    scheme = scheme_of(request)
    host, port = _split(request.host)
    if port is None:
        port = login.public_port
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _normalized(origin: str) -> str | None:
    parts = urllib.parse.urlsplit(origin.strip().lower())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.netloc.rpartition("@")[2]
    name, _ = _split(host)
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{name}"
    return f"{parts.scheme}://{name}:{port}"


def cross_origin(request: RequestView, login: LoginSettings) -> str | None:
    """Why a state-changing request must be refused as cross-site, or None."""
    if request.method in SAFE_METHODS or login.csrf == "off":
        return None
    sent = request.headers.get("origin")
    where = "Origin"
    if sent == "null":
        return "Origin is null (an opaque origin: a sandbox, a file, a cross-site redirect)"
    if sent is None:
        referer = request.headers.get("referer")
        if referer is None:
            return "no Origin or Referer on a state-changing request"
        sent, where = referer, "Referer"
    origin = _normalized(sent)
    if origin is None:
        return f"{where} is not an http(s) origin"
    allowed = {
        origin_of(request, login),
        *(o for o in map(_normalized, login.trusted_origins) if o),
    }
    if origin not in allowed:
        return f"{where} {origin[:100]} is not this site's origin"
    return None


def safe_return(path: str) -> str:
    """A path on this host to send the browser back to: anything that could leave it
    (`//evil.example`, `/\\evil.example`, a scheme, control characters) becomes `/`."""
    if (
        not path.startswith("/")
        or path.startswith(("//", "/\\"))
        or any(ord(c) < 0x21 or c == "\x7f" for c in path)
        or len(path) > 2048
    ):
        return "/"
    return path
