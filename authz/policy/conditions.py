"""Conditions on the request beyond method, host and path (Istio's `when`/`from`/`to`):
headers, the client address, the mTLS peer, the destination port, and negative matches.

Each is compiled once (policy/compile.py) into a matcher that answers in constant or
linear time: address blocks are sets of network numbers per prefix length, globs are one
RE2 pattern, and what is costly to read (the client certificate's SANs, a parsed address)
is read only when a rule gets that far, and memoised across requests by its text.
"""

from __future__ import annotations

import functools
import ipaddress
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cryptography import x509

from authz.policy.patterns import LinearPattern


class Peer(Protocol):
    """What a condition reads of the connection ("" or 0: not known)."""

    @property
    def source_address(self) -> str: ...
    @property
    def destination_port(self) -> int: ...
    @property
    def peer_principal(self) -> str: ...
    @property
    def peer_certificate(self) -> str: ...


class Request(Protocol):
    """What a rule reads of the request (authz.request.view.RequestView is one)."""

    @property
    def method(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def connection(self) -> Peer: ...


class TextMatcher(Protocol):
    def matches(self, text: str, /) -> bool: ...


class Condition(Protocol):
    """One condition of a rule's match; `text` says it as written, for rule traces."""

    @property
    def text(self) -> str: ...
    def holds(self, request: Request) -> bool: ...


# -- negative matches of method, host and path -------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotMethods:
    methods: frozenset[str]
    text: str

    def holds(self, request: Request) -> bool:
        return request.method not in self.methods


@dataclass(frozen=True, slots=True)
class NotPaths:
    paths: TextMatcher
    text: str

    def holds(self, request: Request) -> bool:
        return not self.paths.matches(request.path)


@dataclass(frozen=True, slots=True)
class NotHosts:
    hosts: TextMatcher
    text: str

    def holds(self, request: Request) -> bool:
        return not self.hosts.matches(request.host)


# -- headers -----------------------------------------------------------------------------------

HeaderOp = Literal["present", "equals", "prefix", "regex"]


@dataclass(frozen=True, slots=True)
class Header:
    """A request header: present (or absent), equal to one of `values`, starting with one
    of `prefixes`, or fully matching `pattern`. Repeated headers arrive joined with ","
    (as Envoy joins them), and that joined value is what is compared."""

    name: str  # lower case
    op: HeaderOp
    text: str
    present: bool = True
    values: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    pattern: LinearPattern | None = None
    negate: bool = False

    def holds(self, request: Request) -> bool:
        value = request.headers.get(self.name)
        op = self.op
        if op == "present":
            matched = (value is not None) == self.present
        elif value is None:
            matched = False
        elif op == "equals":
            matched = value in self.values
        elif op == "prefix":
            matched = value.startswith(self.prefixes)
        else:
            assert self.pattern is not None
            matched = self.pattern.fullmatch(value)
        return matched != self.negate


# -- addresses ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> tuple[int, int] | None:
    """`10.1.2.3` / `2001:db8::1` -> (IP version, address as a number); an IPv4-mapped IPv6
    address counts as the IPv4 address it maps. None if `text` is not an address."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, int(address)


@dataclass(frozen=True, slots=True)
class AddressBlocks:
    """CIDR blocks as, per IP version, the prefix lengths used and for each the set of
    network numbers: a lookup per distinct prefix length, whatever the number of blocks."""

    v4: tuple[tuple[int, frozenset[int]], ...]
    v6: tuple[tuple[int, frozenset[int]], ...]

    @classmethod
    def of(cls, blocks: Iterable[str]) -> AddressBlocks:
        """Raises ValueError for a block that is not an address or CIDR (host bits may be set:
        `10.0.0.1/8` means 10.0.0.0/8, as Istio reads it)."""
        nets: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for block in blocks:
            net = ipaddress.ip_network(block.strip(), strict=False)
            shift = net.max_prefixlen - net.prefixlen
            nets[net.version].setdefault(shift, set()).add(int(net.network_address) >> shift)

        def table(version: int) -> tuple[tuple[int, frozenset[int]], ...]:
            return tuple(sorted((s, frozenset(v)) for s, v in nets[version].items()))

        return cls(table(4), table(6))

    def contains(self, address: tuple[int, int]) -> bool:
        version, number = address
        for shift, networks in self.v4 if version == 4 else self.v6:
            if number >> shift in networks:
                return True
        return False


def client_address(request: Request, trusted_hops: int | None) -> str:
    """The address a rule's blocks apply to. Without `trusted_hops`: the connection's peer
    (the CheckRequest's source address). With it, as Envoy's `xff_num_trusted_hops` reads
    X-Forwarded-For: the (hops + 1)th address from the right, the entries right of it being
    appended by trusted proxies; a shorter header means the connection's peer."""
    peer = request.connection.source_address
    if trusted_hops is None:
        return peer
    forwarded = request.headers.get("x-forwarded-for")
    if not forwarded:
        return peer
    entries = forwarded.split(",")
    if len(entries) <= trusted_hops:
        return peer
    return entries[-1 - trusted_hops].strip()


@dataclass(frozen=True, slots=True)
class Addresses:
    """The client address is (negate: is not) in `blocks`. An address that is not known or
    not an address matches neither way: the rule does not apply."""

    blocks: AddressBlocks
    text: str
    trusted_hops: int | None = None  # None: the connection's peer; else from X-Forwarded-For
    negate: bool = False

    def holds(self, request: Request) -> bool:
        hops = self.trusted_hops
        text = request.connection.source_address if hops is None else client_address(request, hops)
        address = parse_address(text)
        if address is None:
            return False
        return self.blocks.contains(address) != self.negate


# -- destination port --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ports:
    """The destination port is (negate: is not) one of `ports`; an unknown port (0) matches
    neither way."""

    ports: frozenset[int]
    text: str
    negate: bool = False

    def holds(self, request: Request) -> bool:
        port = request.connection.destination_port
        return port != 0 and (port in self.ports) != self.negate


# -- the mTLS peer -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Globs:
    """Identities (SPIFFE IDs, URIs) compared exactly or as globs: `*` any run of characters
    but `/`, `**` any run at all (`spiffe://cluster.local/ns/shop/sa/*`)."""

    exact: frozenset[str]
    pattern: LinearPattern | None

    @classmethod
    def of(cls, globs: Sequence[str]) -> Globs:
        exact = frozenset(g for g in globs if "*" not in g)
        patterns = [glob_regex(g) for g in globs if "*" in g]
        joined = "|".join(f"(?:{p})" for p in patterns)
        return cls(exact, LinearPattern(joined) if patterns else None)

    def matches(self, text: str) -> bool:
        return text in self.exact or (self.pattern is not None and self.pattern.fullmatch(text))


def glob_regex(glob: str) -> str:
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(_escape(glob[i]))
            i += 1
    return "".join(out)


def _escape(char: str) -> str:
    return "\\" + char if char in ".^$*+?()[]{}|\\" else char


@dataclass(frozen=True, slots=True)
class Principals:
    """The mTLS peer's principal as the proxy reports it (Envoy: the certificate's first URI
    SAN, else its first DNS SAN, else its subject) matches (negate: does not match) one of
    `globs`. Without mTLS there is no principal: `principals` never holds, `notPrincipals`
    always does (as in Istio)."""

    globs: Globs
    text: str
    negate: bool = False

    def holds(self, request: Request) -> bool:
        principal = request.connection.peer_principal
        if not principal:
            return self.negate
        return self.globs.matches(principal) != self.negate


@functools.lru_cache(maxsize=1024)
def certificate_sans(certificate: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(URI SANs, DNS SANs) of a client certificate sent as URL-encoded PEM (Envoy's
    `include_peer_certificate`); nothing if it cannot be read. The proxy validated the
    certificate chain before sending it, so only its names are read here. Memoised: a
    connection's requests, and a mesh's few callers, send the same certificate again."""
    try:
        cert = x509.load_pem_x509_certificate(urllib.parse.unquote(certificate).encode("ascii"))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, UnicodeEncodeError, x509.ExtensionNotFound):
        return (), ()
    uris = tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
    return uris, tuple(n.lower() for n in sans.get_values_for_type(x509.DNSName))


@dataclass(frozen=True, slots=True)
class CertificateSans:
    """One of the client certificate's URI SANs (or DNS SANs) matches. The certificate is
    parsed only when a rule gets this far; without one, this never holds."""

    kind: Literal["uri", "dns"]
    names: TextMatcher
    text: str

    def holds(self, request: Request) -> bool:
        certificate = request.connection.peer_certificate
        if not certificate:
            return False
        uris, dns = certificate_sans(certificate)
        return any(self.names.matches(n) for n in (uris if self.kind == "uri" else dns))
