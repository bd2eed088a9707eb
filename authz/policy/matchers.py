"""Matchers built from what a rule's `match` says: hosts, paths, and the request
conditions of policy.conditions (headers, addresses, the mTLS peer, ports, negations).

Everything here runs when a policy is compiled, never per request: globs become one RE2
pattern, address blocks a table of network numbers, header values sets and tuples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from authz.policy.conditions import (
    AddressBlocks,
    Addresses,
    CertificateSans,
    Condition,
    Globs,
    Header,
    NotHosts,
    NotMethods,
    NotPaths,
    Ports,
    Principals,
)
from authz.policy.patterns import LinearPattern
from authz.policy.snapshot import HostMatcher, PathMatcher


class MatchError(ValueError):
    """A match that cannot be compiled (a bad path template, CIDR block or regex)."""


def host_matcher(hosts: Sequence[str]) -> HostMatcher | None:
    """Hosts compare as Envoy's virtual hosts do: case-insensitively, port and trailing dot
    included (see host_problems for why a policy host should have neither)."""
    if not hosts:
        return None
    names = [h.lower() for h in hosts]
    return HostMatcher(
        exact=frozenset(h for h in names if not h.startswith("*")),
        suffixes=tuple(sorted({h[1:] for h in names if h.startswith("*.")}, key=len, reverse=True)),
        any="*" in names,
    )


_PORT = re.compile(r":[0-9]*$")


def host_problems(hosts: Sequence[str], where: str) -> list[str]:
    """Hosts that can only match a proxy which keeps ports or trailing dots in the Host it
    routes on. The shipped proxy configurations strip both (strip_any_host_port,
    strip_trailing_host_dot) before ext_authz runs, so such a host never matches there."""
    problems = []
    for i, host in enumerate(hosts):
        bracket = host.rfind("]")
        if _PORT.search(host[bracket + 1 :]):
            problems.append(
                f"{where}[{i}]: {host!r} has a port; it matches only where the proxy keeps "
                "ports in the Host (the shipped configurations strip them): write the host alone"
            )
        elif host.endswith("."):
            problems.append(
                f"{where}[{i}]: {host!r} ends with a dot; it matches only where the proxy keeps "
                "it (the shipped configurations strip it): write the host without it"
            )
    return problems


_SEGMENT = "[^/]*"
_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(=\*\*|=\*)?\}")


def _glob_regex(path: str) -> str:
    """`*` one segment (or part of it), `**` any run of segments, `{x}` one segment, `{x=**}` rest."""
    out = []
    i = 0
    while i < len(path):
        template = _TEMPLATE.match(path, i)
        if template:
            out.append(".*" if template.group(2) == "=**" else "[^/]+")
            i = template.end()
        elif path.startswith("/**", i) and (i + 3 == len(path) or path[i + 3] == "/"):
            out.append("(?:/.*)?")  # "/a/**" matches "/a" and everything below it
            i += 3
        elif path.startswith("**", i):
            out.append(".*")
            i += 2
        elif path[i] == "*":
            out.append(_SEGMENT)
            i += 1
        elif path[i] in "{}":
            raise MatchError(f"path {path!r}: '{{' and '}}' only in templates like {{id}}")
        else:
            out.append(re.escape(path[i]))
            i += 1
    return "".join(out)


def path_matcher(paths: Sequence[str], prefixes: Sequence[str]) -> PathMatcher | None:
    if not paths and not prefixes:
        return None
    exact = frozenset(p for p in paths if not any(c in p for c in "*{}"))
    patterns = [_glob_regex(p) for p in paths if p not in exact]
    return PathMatcher(
        exact=exact,
        prefixes=tuple(prefixes),
        pattern=LinearPattern("|".join(f"(?:{p})" for p in patterns)) if patterns else None,
    )


def _listed(values: Sequence[Any]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _header(spec: Mapping[str, Any], negate: bool) -> Header:
    name = spec["name"].lower()
    text = f"header {name}"
    if "present" in spec:
        present = spec["present"]
        text += " present" if present else " absent"
        return Header(name, "present", text, present=present, negate=negate)
    if "equals" in spec or "in" in spec:
        values = [spec["equals"]] if "equals" in spec else list(spec["in"])
        return Header(
            name, "equals", f"{text} in {values!r}", values=frozenset(values), negate=negate
        )
    if "prefix" in spec:
        prefix = spec["prefix"]
        return Header(
            name, "prefix", f"{text} starts with {prefix!r}", prefixes=(prefix,), negate=negate
        )
    regex = spec["regex"]
    return Header(name, "regex", f"{text} ~ {regex!r}", pattern=LinearPattern(regex), negate=negate)


def compile_conditions(match: Mapping[str, Any], trusted_hops: int | None) -> tuple[Condition, ...]:
    """The conditions of a rule's `match` beyond methods, paths and hosts, cheapest first
    (a rule stops at the first that fails). Raises MatchError or PatternError."""
    out: list[Condition] = []
    if match.get("notMethods"):
        methods = match["notMethods"]
        out.append(NotMethods(frozenset(methods), f"method not in {_listed(methods)}"))
    for field, negate in (("ports", False), ("notPorts", True)):
        if match.get(field):
            ports = match[field]
            word = "not in" if negate else "in"
            out.append(Ports(frozenset(ports), f"destination port {word} {_listed(ports)}", negate))
    if match.get("notHosts"):
        hosts = host_matcher(match["notHosts"])
        assert hosts is not None
        out.append(NotHosts(hosts, f"host not in {_listed(match['notHosts'])}"))
    if match.get("notPaths"):
        paths = path_matcher(match["notPaths"], ())
        assert paths is not None
        out.append(NotPaths(paths, f"path not in {_listed(match['notPaths'])}"))
    out.extend(_header(h, False) for h in match.get("headers", ()))
    out.extend(_header(h, True) for h in match.get("notHeaders", ()))
    for field, remote, negate in (
        ("ipBlocks", False, False),
        ("notIpBlocks", False, True),
        ("remoteIpBlocks", True, False),
        ("notRemoteIpBlocks", True, True),
    ):
        if match.get(field):
            blocks = match[field]
            try:
                table = AddressBlocks.of(blocks)
            except ValueError as exc:
                raise MatchError(f"{field}: {exc}") from None
            where = "client address (X-Forwarded-For)" if remote else "source address"
            word = "not in" if negate else "in"
            hops = trusted_hops if remote else None
            if remote and hops is None:
                raise MatchError(f"{field} needs the policy's xffNumTrustedHops")
            out.append(Addresses(table, f"{where} {word} {_listed(blocks)}", hops, negate))
    for field, negate in (("principals", False), ("notPrincipals", True)):
        if match.get(field):
            globs = match[field]
            word = "matches none of" if negate else "matches one of"
            out.append(
                Principals(Globs.of(globs), f"peer principal {word} {_listed(globs)}", negate)
            )
    certificate = match.get("clientCertificate", {})
    if certificate.get("uriSans"):
        names = certificate["uriSans"]
        out.append(
            CertificateSans(
                "uri", Globs.of(names), f"client certificate URI SAN in {_listed(names)}"
            )
        )
    if certificate.get("dnsSans"):
        dns = host_matcher(certificate["dnsSans"])
        assert dns is not None
        text = f"client certificate DNS SAN in {_listed(certificate['dnsSans'])}"
        out.append(CertificateSans("dns", dns, text))
    return tuple(out)
