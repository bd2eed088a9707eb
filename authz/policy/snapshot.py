"""The immutable, lookup-ready form of the whole policy, swapped atomically on change.

The Check path reads only a Snapshot: policy selection is dictionary lookups
(context extension, exact host, wildcard suffix), rules are precompiled
matchers, and issuers are dispatched by `iss` in O(1) inside each policy.
Each binding and host pattern is served by exactly one policy: the build
records the others that claim it as conflicts instead of breaking the tie.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from authz.policy.claims import ClaimCondition
from authz.policy.conditions import Condition, Request
from authz.policy.deny import DenyWith
from authz.policy.issuer import ClaimPath, CompiledIssuer, TokenSource
from authz.policy.login import LoginSettings
from authz.policy.patterns import LinearPattern, PatternSet
from authz.policy.possession import (
    CONNECTION_ONLY,
    ClientCertificateSettings,
    DPoPSettings,
    InternalTokenSpec,
)
from authz.policy.revocation import NO_REVOCATIONS, Revocations
from authz.policy.schema import NAMESPACE_CONTEXT_KEY

__all__ = ["ClaimCondition"]  # re-exported: rules' claim conditions live in policy.claims

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

    def satisfied_by(self, values: Iterable[str]) -> bool:
        return self.all_of.issubset(values) and (
            not self.any_of or not self.any_of.isdisjoint(values)
        )

    def describe(self) -> tuple[str, ...]:
        """The values to name in a WWW-Authenticate `scope` attribute."""
        return tuple(sorted(self.all_of)) + tuple(sorted(self.any_of - self.all_of))


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
    # Request conditions beyond method, path and host (headers, addresses, the mTLS peer,
    # ports, negative matches): all must hold; empty for most rules, so they cost nothing.
    conditions: tuple[Condition, ...] = ()
    # The issuers (object ids) and audiences this rule accepts, narrowing the policy's.
    issuers: frozenset[str] | None = None
    audiences: frozenset[str] | None = None
    deny_with: DenyWith | None = None
    login: bool = True  # with the policy's login: a browser without a session signs in

    @property
    def timed(self) -> bool:
        """Whether deciding reads the time (a `maxAgeSeconds` claim condition): such a
        decision cannot be kept for the next request."""
        return any(c.max_age is not None for c in self.claims)


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule tried for a request: whether it matched, and if not, every part of its
    match that failed (`authz check` and /debug/explain show these)."""

    rule: str
    matched: bool
    failed: tuple[str, ...] = ()


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
class IntrospectionRoute:
    """Which of a policy's issuers introspects what: tokens that are not JWTs go to
    `opaque` (the first introspecting issuer the policy lists), JWTs whose `iss` is in
    `by_iss` to that issuer's endpoint instead of its keys."""

    opaque: CompiledIssuer | None
    by_iss: Mapping[str, CompiledIssuer] = field(default_factory=dict)


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
    deny_with: DenyWith | None = None  # custom deny answers; a rule's own ones come first
    introspection: IntrospectionRoute | None = None  # None: no issuer of it introspects
    dpop: DPoPSettings | None = None  # None: `Authorization: DPoP` is not read
    client_certificate: ClientCertificateSettings = CONNECTION_ONLY
    internal_token: InternalTokenSpec | None = None
    login: LoginSettings | None = None  # browser sign-in (OIDC code flow) and sessions
    # the rules that may match a method (rule_for), made from `rules` after init
    _by_method: Mapping[str, tuple[CompiledRule, ...]] = field(
        init=False, repr=False, compare=False
    )
    _any_method: tuple[CompiledRule, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Each method's candidate rules, in order: rule_for skips the others unread."""
        methods = {m for r in self.rules if r.methods is not None for m in r.methods}
        by_method = {
            m: tuple(r for r in self.rules if r.methods is None or m in r.methods) for m in methods
        }
        object.__setattr__(self, "_by_method", by_method)
        object.__setattr__(self, "_any_method", tuple(r for r in self.rules if r.methods is None))

    def rule_for(self, request: Request) -> CompiledRule | None:
        """The first rule matching the request. Glob patterns are matched once, for all
        rules, and only if a rule gets that far; other conditions only after method, path
        and host matched. (PathMatcher.literal, inlined: this loop runs for every Check.)"""
        method, host, path = request.method, request.host, request.path
        globbed: frozenset[str] | None = None
        for rule in self._by_method.get(method, self._any_method):
            paths = rule.paths
            if (
                paths is not None
                and path not in paths.exact
                and not (paths.prefixes and path.startswith(paths.prefixes))
            ):
                pattern = paths.pattern
                if pattern is None:
                    continue
                if globbed is None:
                    globbed = self.patterns.matching(path) if self.patterns else frozenset()
                if pattern.text not in globbed:
                    continue
            if rule.hosts is not None and not rule.hosts.matches(host):
                continue
            if rule.conditions:
                for condition in rule.conditions:
                    if not condition.holds(request):
                        break
                else:
                    return rule
                continue
            return rule
        return None

    def trace(self, request: Request) -> tuple[RuleTrace, ...]:
        """Every rule tried for `request`, in order, up to the one that matched: what
        `rule_for` decides, explained (slower: every part of every match is evaluated)."""
        out = []
        for rule in self.rules:
            failed = []
            if rule.methods is not None and request.method not in rule.methods:
                failed.append(f"method {request.method} not in {sorted(rule.methods)}")
            if rule.paths is not None and not rule.paths.matches(request.path):
                failed.append(f"path {request.path[:200]!r} matches none of its paths")
            if rule.hosts is not None and not rule.hosts.matches(request.host):
                failed.append(f"host {request.host[:200]!r} matches none of its hosts")
            failed.extend(f"not: {c.text}" for c in rule.conditions if not c.holds(request))
            out.append(RuleTrace(rule.name, not failed, tuple(failed)))
            if not failed:
                break
        return tuple(out)

    def targets(self, host: str, context: Mapping[str, str]) -> bool:
        return all(context.get(k) == v for k, v in self.context) and (
            self.hosts is None or self.hosts.matches(host)
        )


class Claim(NamedTuple):
    """What a policy takes in selection: a context-extension binding, or one host pattern
    (an exact host, `*.suffix` or `*`). One policy serves a claim; others that make the same
    claim conflict with it. (A tuple: every rebuild makes one per host of every policy.)"""

    binding: tuple[tuple[str, str], ...] = ()
    host: str = ""

    def __str__(self) -> str:
        if self.binding:
            return "contextExtensions {" + ", ".join(f"{k}: {v}" for k, v in self.binding) + "}"
        return f"host {self.host!r}"


def claims_of(policy: CompiledPolicy) -> tuple[Claim, ...]:
    """A bound policy claims its binding (its hosts only narrow it); any other claims each
    of its host patterns, and `*` when it names no host (a workloadSelector alone)."""
    if policy.context:
        return (Claim(binding=policy.context),)
    hosts = policy.hosts
    if hosts is None or hosts.any:
        return (Claim(host="*"),)
    exact = [Claim(host=h) for h in sorted(hosts.exact)]
    return (*exact, *(Claim(host="*" + suffix) for suffix in hosts.suffixes))


@dataclass(frozen=True, slots=True)
class Conflict:
    """`loser` makes the same claim as `winner`, which serves it."""

    claim: Claim
    loser: str
    winner: str


def _binding_key(context: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """The entry a binding is indexed by: not the namespace qualifier when there is another,
    so one namespace's bindings do not share a bucket."""
    return next((item for item in context if item[0] != NAMESPACE_CONTEXT_KEY), context[0])


@dataclass(frozen=True)
class Snapshot:
    """Everything the Check path needs, indexed for lookup. Never mutated after build."""

    version: int
    policies: tuple[CompiledPolicy, ...] = ()
    issuers: Mapping[str, CompiledIssuer] = field(default_factory=dict)
    # binding entry -> (rank, policy): a lower rank wins when several bindings match
    by_context: Mapping[tuple[str, str], tuple[tuple[int, CompiledPolicy], ...]] = field(
        default_factory=dict
    )
    by_host: Mapping[str, CompiledPolicy] = field(default_factory=dict)
    by_suffix: Mapping[str, CompiledPolicy] = field(default_factory=dict)
    any_host: CompiledPolicy | None = None
    conflicts: tuple[Conflict, ...] = ()  # claims refused to a policy because another has them
    # Every identity header any policy sets (and the defaults): removed from a request
    # allowed by default, which no policy covers, so a client cannot send its own.
    identity_headers: tuple[str, ...] = tuple(h.name for h in DEFAULT_HEADERS)
    # Every TokenRevocation, indexed: checked on every request that presents a valid token.
    revocations: Revocations = NO_REVOCATIONS

    @classmethod
    def build(cls, version: int, policies: Sequence[CompiledPolicy]) -> Snapshot:
        """Index policies given in precedence order: the first to make a claim serves it, and
        each later one making the same claim is recorded as a conflict, never tie-broken."""
        owners: dict[Claim, CompiledPolicy] = {}
        conflicts: list[Conflict] = []
        for policy in policies:
            for claim in claims_of(policy):
                winner = owners.setdefault(claim, policy)
                if winner is not policy:
                    conflicts.append(Conflict(claim, policy.id, winner.id))
        serving = {p.id: p for p in owners.values()}
        issuers = {i.id: i for p in serving.values() for i in p.issuers_by_iss.values()}
        bound = [(c, p) for c, p in owners.items() if c.binding]
        # The binding with the most entries is the most specific; then precedence.
        precedence = {p.id: i for i, p in enumerate(policies)}
        bound.sort(key=lambda cp: (-len(cp[0].binding), precedence[cp[1].id]))
        by_context: dict[tuple[str, str], list[tuple[int, CompiledPolicy]]] = {}
        for rank, (claim, policy) in enumerate(bound):
            by_context.setdefault(_binding_key(claim.binding), []).append((rank, policy))
        hosts = {c.host: p for c, p in owners.items() if not c.binding}
        return cls(
            version=version,
            policies=tuple(sorted(serving.values(), key=lambda p: p.id)),
            issuers=issuers,
            by_context={k: tuple(v) for k, v in by_context.items()},
            by_host={h: p for h, p in hosts.items() if not h.startswith("*")},
            by_suffix={h[1:]: p for h, p in hosts.items() if h.startswith("*.")},
            any_host=hosts.get("*"),
            conflicts=tuple(conflicts),
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
        """The most specific policy: the matching context-extension binding with the most
        entries, then the exact host, then the longest wildcard suffix, then `*`."""
        if context and self.by_context:
            best: tuple[int, CompiledPolicy] | None = None
            for item in context.items():
                for rank, policy in self.by_context.get(item, ()):
                    if best is not None and rank >= best[0]:
                        break  # buckets are in rank order
                    if policy.targets(host, context):
                        best = (rank, policy)
                        break
            if best is not None:
                return best[1]
        exact = self.by_host.get(host)
        if exact is not None:
            return exact
        if self.by_suffix:
            dot = host.find(".")
            while dot != -1:
                wildcard = self.by_suffix.get(host[dot:])
                if wildcard is not None:
                    return wildcard
                dot = host.find(".", dot + 1)
        return self.any_host
