"""The immutable, lookup-ready form of the whole policy, swapped atomically on change.

The Check path reads only a Snapshot: policy selection is dictionary lookups
(context extension, exact host, wildcard suffix), rules are precompiled
matchers, and issuers are dispatched by `iss` in O(1) inside each policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from authz.policy.issuer import ClaimPath, CompiledIssuer, TokenSource
from authz.policy.patterns import LinearPattern, PatternSet
from authz.policy.possession import (
    CONNECTION_ONLY,
    ClientCertificateSettings,
    DPoPSettings,
    InternalTokenSpec,
)

Action = Literal["requireToken", "allowAnonymous", "deny"]


@dataclass(frozen=True, slots=True)
class HostMatcher:
    """Hosts: exact names, `*.suffix` wildcards (one or more labels) and `*`."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
    any: bool = False

    def matches(self, host: str) -> bool:
        return self.any or host in self.exact or host.endswith(self.suffixes)


@dataclass(frozen=True, slots=True)
class PathMatcher:
    """Paths: an exact set, raw prefixes, and one combined regex for globs and templates."""

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    pattern: LinearPattern | None = None

    def literal(self, path: str) -> bool:
        """Matched by an exact path or a prefix (the cheap part)."""
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))

    def matches(self, path: str) -> bool:
        return self.literal(path) or (self.pattern is not None and self.pattern.fullmatch(path))


@dataclass(frozen=True, slots=True)
class Requirement:
    """All of `all_of` and, when `any_of` is non-empty, at least one of it."""

    all_of: frozenset[str] = frozenset()
    any_of: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.all_of or self.any_of)

    def satisfied_by(self, values: frozenset[str]) -> bool:
        return self.all_of <= values and (not self.any_of or not self.any_of.isdisjoint(values))

    def describe(self) -> tuple[str, ...]:
        """The values to name in a WWW-Authenticate `scope` attribute."""
        return tuple(sorted(self.all_of)) + tuple(sorted(self.any_of - self.all_of))


@dataclass(frozen=True, slots=True)
class ClaimCondition:
    """One claim check; values compare in their string form (see the schema)."""

    path: ClaimPath
    op: Literal["equals", "in", "present", "regex"]
    values: frozenset[str] = frozenset()
    present: bool = True
    pattern: LinearPattern | None = None
    text: str = ""  # the condition as written, for decisions and logs


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    action: Action
    methods: frozenset[str] | None
    paths: PathMatcher | None
    hosts: HostMatcher | None
    scopes: Requirement = Requirement()
    roles: Requirement = Requirement()
    claims: tuple[ClaimCondition, ...] = ()
    require_dpop: bool = False


@dataclass(frozen=True, slots=True)
class HeaderFromClaim:
    name: str
    claim: ClaimPath | Literal["$scopes", "$roles"]


DEFAULT_HEADERS = (
    HeaderFromClaim("x-auth-subject", ("sub",)),
    HeaderFromClaim("x-auth-issuer", ("iss",)),
)


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    headers: tuple[HeaderFromClaim, ...] = ()
    strip_authorization: bool = False


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    id: str
    issuers_by_iss: Mapping[str, CompiledIssuer]
    audiences: frozenset[str] | None  # None: each issuer's own audiences apply
    rules: tuple[CompiledRule, ...]
    default_action: Action
    token_sources: tuple[TokenSource, ...]
    response: ResponseSpec
    hosts: HostMatcher | None
    context: tuple[tuple[str, str], ...]
    dry_run: bool = False  # deny decisions are logged and counted, and the request allowed
    patterns: PatternSet | None = None  # every rule's glob pattern, matched in one pass
    dpop: DPoPSettings | None = None  # None: `Authorization: DPoP` is not read
    client_certificate: ClientCertificateSettings = CONNECTION_ONLY
    internal_token: InternalTokenSpec | None = None

    def rule_for(self, method: str, host: str, path: str) -> CompiledRule | None:
        """The first rule matching the request. Glob patterns are matched once, for all
        rules, and only if a rule gets that far."""
        globbed: frozenset[LinearPattern] | None = None
        for rule in self.rules:
            if rule.methods is not None and method not in rule.methods:
                continue
            paths = rule.paths
            if paths is not None and not paths.literal(path):
                if paths.pattern is None:
                    continue
                if globbed is None:
                    globbed = self.patterns.matching(path) if self.patterns else frozenset()
                if paths.pattern not in globbed:
                    continue
            if rule.hosts is not None and not rule.hosts.matches(host):
                continue
            return rule
        return None

    def targets(self, host: str, context: Mapping[str, str]) -> bool:
        return all(context.get(k) == v for k, v in self.context) and (
            self.hosts is None or self.hosts.matches(host)
        )


@dataclass(frozen=True)
class Snapshot:
    """Everything the Check path needs, indexed for lookup. Never mutated after build."""

    version: int
    policies: tuple[CompiledPolicy, ...] = ()
    issuers: Mapping[str, CompiledIssuer] = field(default_factory=dict)
    by_context: Mapping[tuple[str, str], tuple[CompiledPolicy, ...]] = field(default_factory=dict)
    by_host: Mapping[str, tuple[CompiledPolicy, ...]] = field(default_factory=dict)
    by_suffix: Mapping[str, tuple[CompiledPolicy, ...]] = field(default_factory=dict)
    any_host: tuple[CompiledPolicy, ...] = ()
    # Every identity header any policy sets (and the defaults): removed from a request
    # allowed by default, which no policy covers, so a client cannot send its own.
    identity_headers: tuple[str, ...] = tuple(h.name for h in DEFAULT_HEADERS)

    @classmethod
    def build(cls, version: int, policies: list[CompiledPolicy]) -> Snapshot:
        """Index policies; inside each bucket the order is the policies' ids (stable, documented)."""
        by_context: dict[tuple[str, str], list[CompiledPolicy]] = {}
        by_host: dict[str, list[CompiledPolicy]] = {}
        by_suffix: dict[str, list[CompiledPolicy]] = {}
        any_host: list[CompiledPolicy] = []
        issuers: dict[str, CompiledIssuer] = {}
        for policy in sorted(policies, key=lambda p: p.id):
            for issuer in policy.issuers_by_iss.values():
                issuers[issuer.id] = issuer
            if policy.context:
                by_context.setdefault(policy.context[0], []).append(policy)
            elif policy.hosts is None or policy.hosts.any:
                any_host.append(policy)
            else:
                for host in policy.hosts.exact:
                    by_host.setdefault(host, []).append(policy)
                for suffix in policy.hosts.suffixes:
                    by_suffix.setdefault(suffix, []).append(policy)
        return cls(
            version=version,
            policies=tuple(sorted(policies, key=lambda p: p.id)),
            issuers=issuers,
            by_context={k: tuple(v) for k, v in by_context.items()},
            by_host={k: tuple(v) for k, v in by_host.items()},
            by_suffix={k: tuple(v) for k, v in by_suffix.items()},
            any_host=tuple(any_host),
            identity_headers=tuple(
                dict.fromkeys(
                    [
                        *(h.name for h in DEFAULT_HEADERS),
                        *(h.name for p in policies for h in p.response.headers),
                        *(
                            p.internal_token.header
                            for p in policies
                            if p.internal_token is not None
                            and p.internal_token.header != "authorization"
                        ),
                    ]
                )
            ),
        )

    def select(self, host: str, context: Mapping[str, str]) -> CompiledPolicy | None:
        """The most specific policy: a context-extension binding, then exact host,
        then the longest wildcard suffix, then policies for any host."""
        if context and self.by_context:
            for item in context.items():
                for policy in self.by_context.get(item, ()):
                    if policy.targets(host, context):
                        return policy
        for policy in self.by_host.get(host, ()):
            return policy
        if self.by_suffix:
            dot = host.find(".")
            while dot != -1:
                for policy in self.by_suffix.get(host[dot:], ()):
                    return policy
                dot = host.find(".", dot + 1)
        for policy in self.any_host:
            return policy
        return None
