"""Which forward proxy a key fetch goes through: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`
as curl and Go read them (lower case wins over upper case).

`NO_PROXY` is a comma-separated list of host names (`example.com` and `.example.com` both
match the name and every subdomain), IP addresses, CIDR ranges (`10.0.0.0/8`, as Go and
Kubernetes users write them), each optionally with `:port`; `*` bypasses the proxy for all.
Only `http://` proxies are supported (an https URL is still end-to-end TLS through the
proxy's CONNECT tunnel); credentials in the proxy URL are sent as Basic
`Proxy-Authorization` and never appear in messages.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization header value, if the URL had userinfo

    @property
    def where(self) -> str:
        """The proxy as messages name it: never its credentials."""
        return f"proxy {self.host}:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


class ProxyConfigError(ValueError):
    """The proxy variable cannot be used (message names the variable, not its credentials)."""


def _variable(name: str) -> str:
    return os.environ.get(name.lower()) or os.environ.get(name.upper()) or ""


def proxy_for(scheme: str, host: str, port: int) -> Proxy | None:
    """The proxy a request to `scheme://host:port` goes through, or None for a direct one."""
    variable = "https_proxy" if scheme == "https" else "http_proxy"
    value = _variable(variable).strip()
    if not value or bypassed(host, port, _variable("no_proxy")):
        return None
    parts = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme != "http":
        raise ProxyConfigError(
            f"{variable.upper()}: {parts.scheme}:// proxies are not supported, only http://"
        )
    try:
        proxy_port = parts.port or 80
    except ValueError:
        raise ProxyConfigError(f"{variable.upper()}: the port is not a number") from None
    if not parts.hostname:
        raise ProxyConfigError(f"{variable.upper()}: no proxy host in it")
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        authorization = f"Basic {token}"
    return Proxy(parts.hostname, proxy_port, authorization)


def bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether `NO_PROXY` says to connect to host:port directly."""
    host = host.strip("[]").lower().rstrip(".")
    address = _address(host)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if address is not None and address in network:
                return True
            continue
        if address is not None:
            if _address(entry) == address:
                return True
            continue
        name = entry.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith(f".{name}")):
            return True
    return False


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:443` -> ("host", 443); `[::1]:443` -> ("::1", 443); an IPv6 address or a CIDR
    range without brackets keeps its colons."""
    if entry.startswith("["):
        inside, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return inside, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None
