"""One Istio AuthorizationPolicy rule -> authz rules.

An Istio rule matches when any `from` source, any `to` operation and every `when`
condition match; each (source, operation) pair becomes one authz rule carrying the `when`
conditions, and a `requestPrincipals` list with several issuers or subjects becomes one
rule per value (authz rules AND their fields; the values of one field are ORed).

What cannot be said exactly is never said more permissively: an ALLOW rule with such a
part is left out (it allows less), a DENY rule loses that part (it denies more). A DENY
rule's token conditions cannot be kept at all: authz decides `deny` rules before it reads a
credential. The one exception, `notRequestPrincipals: ["*"]` ("a token is required"),
becomes `requireToken` on every ALLOW rule instead (`Translated.require_token`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from authz.convert import istio_values as values
from authz.convert.istio_values import Untranslatable
from authz.convert.report import Report
from authz.policy import schema


class Never(Exception):
    """The part can never match (`notHosts: ["*"]`): the rule is left out, exactly."""


@dataclass
class Draft:
    """An authz rule under construction."""

    match: dict[str, Any] = field(default_factory=dict)
    token: bool = False  # a valid token is required (requireToken)
    issuers: set[str] | None = None  # JWTIssuer names
    claims: list[dict[str, Any]] = field(default_factory=list)
    audiences: list[str] | None = None
    principal_fields: list[str] = field(default_factory=list)

    def principals(self, field_name: str, globs: list[str]) -> None:
        """One positive principal list per rule: two (principals and namespaces in one
        source, say) would have to be ANDed, and authz has one list."""
        if self.principal_fields:
            raise Untranslatable(
                f"{field_name} and {self.principal_fields[0]} together: authz has one "
                "principals list per rule"
            )
        self.principal_fields.append(field_name)
        self.match["principals"] = globs

    def extend(self, name: str, items: list[Any]) -> None:
        self.match.setdefault(name, []).extend(i for i in items if i not in self.match[name])


@dataclass(frozen=True)
class Principal:
    """One request principal alternative: issuers (JWTIssuer names; None: any the group
    trusts) and a subject condition (None: any)."""

    issuer: frozenset[str] | None
    subject: dict[str, Any] | None


def _one_subject(conditions: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Subject conditions ORed into one: `in` for exact subjects, else one regex."""
    if conditions is None:
        return None
    if all("equals" in c for c in conditions):
        found = list(dict.fromkeys(c["equals"] for c in conditions))
        return {"equals": found[0]} if len(found) == 1 else {"in": found}
    parts = [values.escape(c["equals"]) if "equals" in c else c["regex"] for c in conditions]
    return {"regex": "|".join(f"(?:{p})" for p in parts)}


@dataclass
class Context:
    """What translating one Istio rule needs of its policy and group."""

    where: str  # `AuthorizationPolicy/ns/name: spec.rules[2]`
    deny: bool
    namespace: str
    issuers: Mapping[str, str]  # iss -> JWTIssuer name, the group's
    xff_hops: int | None
    report: Report


@dataclass
class Translated:
    drafts: list[Draft] = field(default_factory=list)
    require_token: bool = False  # a DENY on notRequestPrincipals ["*"]
    uses_remote_ip: bool = False


def translate_rule(rule: Mapping[str, Any], ctx: Context) -> Translated:
    out = Translated()
    sources = [f.get("source", {}) for f in rule.get("from") or [{}]]
    operations = [t.get("operation", {}) for t in rule.get("to") or [{}]]
    when = rule.get("when") or []
    for s_index, source in enumerate(sources):
        for o_index, operation in enumerate(operations):
            where = ctx.where
            where += f".from[{s_index}]" if rule.get("from") else ""
            where += f".to[{o_index}]" if rule.get("to") else ""
            _pair((source, operation, when), where, ctx, out)
    return out


def _pair(
    parts: tuple[Mapping[str, Any], Mapping[str, Any], Sequence[Mapping[str, Any]]],
    where: str,
    ctx: Context,
    out: Translated,
) -> None:
    """One (source, operation) pair with the rule's `when` conditions -> authz rules."""
    source, operation, when = parts
    pair = _Pair(ctx, out)
    steps: list[tuple[str, Callable[[], None]]] = []
    steps += [(f"source.{n}", partial(pair.source, n, v)) for n, v in source.items()]
    steps += [(f"operation.{n}", partial(pair.operation, n, v)) for n, v in operation.items()]
    steps += [(f"when[{i}] {c.get('key')}", partial(pair.when, c)) for i, c in enumerate(when)]
    for part, step in steps:
        try:
            step()
        except Never as exc:
            ctx.report.add("note", f"{where}: {part}", f"{exc}: the rule never matches, left out")
            return
        except Untranslatable as exc:
            if not ctx.deny:
                ctx.report.add("omitted", f"{where}: {part}", f"{exc}; the ALLOW rule is left out")
                return
            ctx.report.add(
                "stricter",
                f"{where}: {part}",
                f"{exc}; the DENY rule is kept without it, so it denies more",
            )
    out.drafts.extend(pair.drafts())


def _combine(lists: list[list[Principal]]) -> list[list[Principal]]:
    """Every choice of one alternative from each list (the lists are ANDed)."""
    combos: list[list[Principal]] = [[]]
    for alternatives in lists:
        combos = [[*c, a] for c in combos for a in alternatives]
    return combos


# -- the parts of one pair ---------------------------------------------------------------------

_HEADER = re.compile(r"^request\.headers\[([^\]]+)\]$")
_CLAIM = re.compile(r"^request\.auth\.claims((?:\[[^\]]+\])+)$")


def _blocks(items: Sequence[str]) -> list[str]:
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise Untranslatable(f"{item!r} is not an address or CIDR block") from None
    return list(items)


def _ports(items: Sequence[str]) -> list[int]:
    out = []
    for item in items:
        if not str(item).isdigit() or not 0 < int(item) < 65536:
            raise Untranslatable(f"{item!r} is not a port")
        out.append(int(item))
    return out


def _methods(items: Sequence[str]) -> list[str]:
    upper = [m.upper() for m in items]
    unknown = [m for m in upper if m not in schema.METHODS]
    if unknown:
        raise Untranslatable(f"methods {unknown}: authz matches {', '.join(schema.METHODS)}")
    return upper


class _Pair:
    """The authz rule one (source, operation, when) combination is becoming."""

    def __init__(self, ctx: Context, out: Translated) -> None:
        self.ctx = ctx
        self.out = out
        self.draft = Draft()
        self.principals: list[list[Principal]] = []  # request principal lists, ANDed

    def drafts(self) -> list[Draft]:
        """The rule, once per choice of request principal alternatives that cannot be said
        in one rule (authz rules are tried in order: only the first that matches the
        request decides, so alternatives in separate rules are stricter than Istio's OR)."""
        alternatives = self._merged() if len(self.principals) == 1 else _combine(self.principals)
        if len(alternatives) > 1:
            self.ctx.report.add(
                "stricter",
                self.ctx.where,
                "request principals of several issuers with different subjects: one authz "
                "rule each, and a request is judged by the first (Istio: by any)",
            )
        out = []
        base = self.draft
        for alternative in alternatives:
            rule = Draft(
                dict(base.match), base.token, base.issuers, list(base.claims), base.audiences
            )
            for p in alternative:
                rule.token = True
                if p.issuer is not None:
                    issuers = set(p.issuer) if rule.issuers is None else rule.issuers & p.issuer
                    if not issuers:
                        break  # two lists naming different issuers: never both
                    rule.issuers = issuers
                if p.subject is not None:
                    rule.claims.append({"path": "sub", **p.subject})
            else:
                out.append(rule)
        return out

    def _merged(self) -> list[list[Principal]]:
        """One request principal list as few rules as it can be: the subjects accepted from
        each issuer (any issuer: each the group trusts) joined into one condition, and the
        issuers with the same subjects into one rule."""
        [alternatives] = self.principals
        trusted = set(self.ctx.issuers.values())
        if not trusted:  # no token can verify here: left as they are, for the report
            return [[p] for p in alternatives]
        subjects: dict[str, list[dict[str, Any]] | None] = {}
        for p in alternatives:
            for issuer in p.issuer or trusted:
                known = subjects.get(issuer, [])
                if p.subject is None or known is None:
                    subjects[issuer] = None  # any subject of this issuer
                else:
                    subjects[issuer] = [*known, p.subject]
        by_subjects: dict[str, set[str]] = {}
        conditions: dict[str, dict[str, Any] | None] = {}
        for issuer, found in sorted(subjects.items()):
            condition = _one_subject(found)
            key = repr(condition)
            by_subjects.setdefault(key, set()).add(issuer)
            conditions[key] = condition
        return [
            [Principal(None if issuers == trusted else frozenset(issuers), conditions[key])]
            for key, issuers in by_subjects.items()
        ]

    # -- from.source ---------------------------------------------------------------------

    def source(self, name: str, items: Any) -> None:
        draft, ctx = self.draft, self.ctx
        if not items:
            return
        if name == "principals":
            draft.principals(name, [values.principal(v) for v in items])
        elif name == "namespaces":
            draft.principals(name, [values.namespace_principal(v) for v in items])
        elif name == "serviceAccounts":
            globs = [values.service_account_principal(v, ctx.namespace) for v in items]
            draft.principals(name, globs)
        elif name == "trustDomains":
            draft.principals(name, [values.trust_domain_principal(v) for v in items])
        elif name == "notPrincipals":
            draft.extend("notPrincipals", [values.principal(v) for v in items])
        elif name == "notNamespaces":
            draft.extend("notPrincipals", [values.namespace_principal(v) for v in items])
        elif name == "notServiceAccounts":
            globs = [values.service_account_principal(v, ctx.namespace) for v in items]
            draft.extend("notPrincipals", globs)
        elif name == "notTrustDomains":
            draft.extend("notPrincipals", [values.trust_domain_principal(v) for v in items])
        elif name in ("ipBlocks", "notIpBlocks"):
            draft.extend(name, _blocks(items))
        elif name in ("remoteIpBlocks", "notRemoteIpBlocks"):
            if ctx.xff_hops is None:
                raise Untranslatable(
                    "the client address from X-Forwarded-For needs the number of trusted "
                    "proxies (Istio's numTrustedProxies): pass --xff-num-trusted-hops"
                )
            self.out.uses_remote_ip = True
            draft.extend(name, _blocks(items))
        elif name == "requestPrincipals":
            self.principals.append(self._request_principals(items))
        elif name == "notRequestPrincipals":
            self._not_request_principals(items)
        else:
            raise Untranslatable(f"{name}: not an Istio source field authz knows")

    def _request_principals(self, items: Sequence[str]) -> list[Principal]:
        """`iss/sub` values (Istio's request.auth.principal, the token's `iss` + "/" + `sub`):
        `*` any token, a prefix covering issuers (`iss/*`), an issuer and a subject, or a
        subject of any issuer (`*/sub`). An issuer no RequestAuthentication here trusts never
        makes a principal. Decided after authentication, which authz deny rules are not."""
        issuers = self.ctx.issuers
        if self.ctx.deny:
            raise Untranslatable("authz decides deny rules before it reads the token")
        out: list[Principal] = []
        for item in items:
            kind, core = values.form(item)
            if kind == "presence":
                out.append(Principal(None, None))
            elif kind == "suffix":
                if not core.startswith("/"):
                    raise Untranslatable(f"{item!r}: a suffix of `iss/sub` must start with '/'")
                regex = f"(?:.*/)?{values.escape(core[1:])}"
                out.append(Principal(None, {"regex": regex}))
            elif kind == "prefix" and any((i + "/").startswith(core) for i in issuers):
                covered = [n for i, n in issuers.items() if (i + "/").startswith(core)]
                out += [Principal(frozenset([n]), None) for n in covered]
            else:
                for iss, name in issuers.items():
                    if not core.startswith(iss + "/"):
                        continue
                    subject = core[len(iss) + 1 :]
                    names = frozenset([name])
                    if kind == "prefix":
                        out.append(Principal(names, {"regex": values.regex_of([subject + "*"])}))
                    else:
                        out.append(Principal(names, {"equals": subject}))
        if not out:
            raise Never("no RequestAuthentication here trusts these request principals' issuers")
        return out

    def _not_request_principals(self, items: Sequence[str]) -> None:
        if list(items) != ["*"]:
            raise Untranslatable("notRequestPrincipals other than ['*'] (no token)")
        if not self.ctx.deny:
            raise Untranslatable("an ALLOW rule for requests without a token")
        self.out.require_token = True
        raise Never("requests without a token: every ALLOW rule becomes requireToken instead")

    # -- to.operation ----------------------------------------------------------------------

    def operation(self, name: str, items: Any) -> None:
        draft = self.draft
        if not items:
            return
        if name == "hosts":
            hosts = [values.host(h) for h in items]
            if None not in hosts:
                draft.extend("hosts", hosts)
        elif name == "notHosts":
            hosts = [values.host(h) for h in items]
            if None in hosts:
                raise Never("notHosts '*'")
            draft.extend("notHosts", hosts)
        elif name in ("ports", "notPorts"):
            self._ports(name, _ports(items))
        elif name in ("methods", "notMethods"):
            draft.extend(name, _methods(items))
        elif name in ("paths", "notPaths"):
            which: Literal["paths", "notPaths"] = "paths" if name == "paths" else "notPaths"
            translated = [values.path(p, which) for p in items]
            if None in translated:
                if name == "notPaths":
                    raise Never("notPaths '*'")
                return  # `*`: every path
            for found in translated:
                assert found is not None
                draft.extend(found[0], [found[1]])
        else:
            raise Untranslatable(f"{name}: not an Istio operation field authz knows")

    def _ports(self, name: str, ports: list[int]) -> None:
        """Two port lists on one rule (`to` and a `when` on destination.port) are ANDed:
        their intersection, for positive lists."""
        match = self.draft.match
        if name == "ports" and "ports" in match:
            both = [p for p in match["ports"] if p in ports]
            if not both:
                raise Never("no port in both lists")
            match["ports"] = both
        else:
            self.draft.extend(name, ports)

    # -- when ------------------------------------------------------------------------------

    def when(self, condition: Mapping[str, Any]) -> None:
        key = str(condition.get("key", ""))
        positive = list(condition.get("values") or [])
        negative = list(condition.get("notValues") or [])
        header = _HEADER.match(key)
        if header:
            name = header.group(1).lower()
            if positive:
                self.draft.extend("headers", [{"name": name, **values.string_condition(positive)}])
            if negative:
                condition = {"name": name, **values.string_condition(negative)}
                self.draft.extend("notHeaders", [condition])
        elif key in ("source.ip", "remote.ip", "source.principal", "source.namespace"):
            names = {
                "source.ip": ("ipBlocks", "notIpBlocks"),
                "remote.ip": ("remoteIpBlocks", "notRemoteIpBlocks"),
                "source.principal": ("principals", "notPrincipals"),
                "source.namespace": ("namespaces", "notNamespaces"),
            }[key]
            for name, items in zip(names, (positive, negative), strict=True):
                self.source(name, items)
        elif key == "destination.port":
            if positive:
                self._ports("ports", _ports(positive))
            if negative:
                self._ports("notPorts", _ports(negative))
        elif key == "request.auth.principal":
            if negative:
                raise Untranslatable("notValues on request.auth.principal")
            self.principals.append(self._request_principals(positive))
        elif key.startswith("request.auth."):
            self._token_condition(key, positive, negative)
        else:
            raise Untranslatable("no authz equivalent")

    def _token_condition(self, key: str, positive: list[str], negative: list[str]) -> None:
        if self.ctx.deny:
            raise Untranslatable("authz decides deny rules before it reads the token")
        if negative:
            raise Untranslatable("notValues: authz has no negative token condition")
        draft = self.draft
        draft.token = True
        claim = _CLAIM.match(key)
        if key == "request.auth.audiences":
            if any(values.form(v)[0] != "exact" for v in positive):
                raise Untranslatable("audience globs")
            draft.audiences = positive
        elif key == "request.auth.presenter":
            draft.claims.append({"path": "azp", **values.string_condition(positive)})
        elif claim:
            names = re.findall(r"\[([^\]]+)\]", claim.group(1))
            path = ".".join(n.replace(".", "\\.") for n in names)
            draft.claims.append({"path": path, **_claim_values(positive)})
        else:
            raise Untranslatable("no authz equivalent")


def _claim_values(items: list[str]) -> dict[str, Any]:
    """Istio compares claims as strings (any element of a list claim): `in` for exact
    values, else a regex; authz compares strings alike, and non-strings never match, as in
    Istio's string matchers."""
    condition = values.string_condition(items)
    if "prefix" in condition:
        return {"regex": values.regex_of(items)}
    return condition
