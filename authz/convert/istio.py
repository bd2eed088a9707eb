"""`authz convert istio`: RequestAuthentication + AuthorizationPolicy -> JWTIssuer + AuthzPolicy.

Istio applies every policy of a workload: DENY policies first (any match denies), then
ALLOW policies (when there is one, a request must match one), and a RequestAuthentication
refuses invalid tokens but lets requests without one through. authz selects one policy per
request and its first matching rule. So the objects that apply to one workload selector in
a namespace, with the namespace-wide ones, become one AuthzPolicy: the DENY rules first,
then the ALLOW rules, `defaultAction: deny` when there was an ALLOW policy and
`allowAnonymous` (a sent token must be valid) when there was none. Each jwtRule becomes a
JWTIssuer. What cannot be said exactly is said more strictly or left out, and reported
(authz.convert.istio_rules). Run the result with `dryRun: true` next to Istio first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authz.convert.istio_rules import Context, Draft, translate_rule
from authz.convert.report import Report
from authz.policy import schema

ISTIO_API = ("security.istio.io/v1", "security.istio.io/v1beta1")
KINDS = ("RequestAuthentication", "AuthorizationPolicy")
DRY_RUN_ANNOTATION = "istio.io/dry-run"
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Options:
    hosts: tuple[str, ...] = ()  # target these hosts instead of workload selectors
    dry_run: bool = False  # every AuthzPolicy in shadow mode, to run next to Istio
    xff_num_trusted_hops: int | None = None  # Istio's numTrustedProxies, for remoteIpBlocks


@dataclass
class Result:
    objects: list[dict[str, Any]]
    report: Report


@dataclass(frozen=True)
class IstioObject:
    kind: str
    namespace: str
    name: str
    spec: Mapping[str, Any]
    annotations: Mapping[str, str]

    @property
    def where(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def selector(self) -> Labels | None:
        labels = (self.spec.get("selector") or {}).get("matchLabels") or {}
        return tuple(sorted(labels.items())) if labels else None


@dataclass
class Group:
    """The objects that apply to one workload selector of a namespace (None: all)."""

    namespace: str
    selector: Labels | None
    authentications: list[IstioObject] = field(default_factory=list)
    policies: list[IstioObject] = field(default_factory=list)


def convert(docs: Iterable[Any], options: Options = Options()) -> Result:
    report = Report()
    objects = list(_istio_objects(docs, report))
    issuers, names = _issuers(objects, report)
    out: list[dict[str, Any]] = list(issuers)
    for group in _groups(objects, report):
        out.append(_policy(group, names, options, report))
    return Result(out, report)


def _istio_objects(docs: Iterable[Any], report: Report) -> Iterable[IstioObject]:
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            continue
        kind, meta = doc.get("kind"), doc.get("metadata") or {}
        where = f"{kind}/{meta.get('namespace', 'default')}/{meta.get('name', f'#{i}')}"
        if doc.get("apiVersion") not in ISTIO_API or kind not in KINDS:
            report.add("note", where, f"{doc.get('apiVersion')} {kind} is not converted")
            continue
        obj = IstioObject(
            kind,
            meta.get("namespace", "default"),
            meta["name"],
            doc.get("spec") or {},
            meta.get("annotations") or {},
        )
        if obj.spec.get("targetRef") or obj.spec.get("targetRefs"):
            report.add(
                "note",
                obj.where,
                "targetRefs (a Gateway, waypoint or ServiceEntry): authz selects a policy by "
                "host: pass --host for these",
            )
        yield obj


def _groups(objects: list[IstioObject], report: Report) -> list[Group]:
    """One group per (namespace, selector); namespace-wide objects join every group of
    their namespace, as they apply to every workload there."""
    groups: dict[tuple[str, Labels | None], Group] = {}
    for obj in objects:
        groups.setdefault((obj.namespace, obj.selector), Group(obj.namespace, obj.selector))
    for obj in objects:
        for (namespace, selector), group in groups.items():
            if namespace != obj.namespace or obj.selector not in (None, selector):
                continue
            (group.policies if obj.kind == "AuthorizationPolicy" else group.authentications).append(
                obj
            )
    selectors: dict[str, int] = {}
    for namespace, selector in groups:
        selectors[namespace] = selectors.get(namespace, 0) + (selector is not None)
    for namespace, count in selectors.items():
        if count > 1:
            report.add(
                "review",
                f"namespace {namespace}",
                f"{count} workload selectors: a workload that several of them select gets "
                "all their Istio policies, but only one authz policy (authz lint reports "
                "which policy a workload selects; merge them if they overlap)",
            )
    return list(groups.values())


# -- issuers -----------------------------------------------------------------------------------


def _dns_name(text: str, limit: int = 63) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return name or "istio"


def _issuers(
    objects: list[IstioObject], report: Report
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    """A JWTIssuer per jwtRule (one per `iss` in a namespace) and (namespace, iss) -> name."""
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    names: dict[tuple[str, str], str] = {}
    for obj in objects:
        if obj.kind != "RequestAuthentication":
            continue
        rules = obj.spec.get("jwtRules") or []
        for i, rule in enumerate(rules):
            where = f"{obj.where}: spec.jwtRules[{i}]"
            spec = _issuer_spec(rule, where, report)
            if spec is None:
                continue
            key = (obj.namespace, rule["issuer"])
            if key in docs:
                if docs[key]["spec"] != spec:
                    report.add(
                        "review",
                        where,
                        f"issuer {rule['issuer']!r} is also configured by "
                        f"{docs[key]['metadata']['name']} with other settings: that one is kept",
                    )
                continue
            name = _dns_name(obj.name if len(rules) == 1 else f"{obj.name}-{i}")
            while name in {n for (ns, _), n in names.items() if ns == obj.namespace}:
                name = _dns_name(f"{name}-{len(names)}")
            names[key] = name
            docs[key] = {
                "apiVersion": schema.API_VERSION,
                "kind": "JWTIssuer",
                "metadata": {"name": name, "namespace": obj.namespace},
                "spec": spec,
            }
    return list(docs.values()), names


def _duration_seconds(text: str) -> int | None:
    found = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", text.strip())
    if not found:
        return None
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[found.group(2)]
    return max(1, min(60, math.ceil(float(found.group(1)) * scale)))


def _issuer_spec(rule: Mapping[str, Any], where: str, report: Report) -> dict[str, Any] | None:
    iss = rule["issuer"]
    spec: dict[str, Any] = {"issuer": iss}
    uri = rule.get("jwksUri") or rule.get("jwks_uri")
    if uri:
        spec["jwksUri"] = uri
    elif rule.get("jwks"):
        try:
            spec["jwks"] = json.loads(rule["jwks"])
        except ValueError:
            report.add("omitted", where, "jwks is not JSON: the issuer is left out")
            return None
    elif iss.startswith("https://"):
        spec["discovery"] = True
    else:
        report.add(
            "omitted",
            where,
            f"no jwksUri, and {iss!r} is not an https URL to discover keys at: the issuer "
            "is left out (its tokens are refused); add jwksUri",
        )
        return None
    remote = "jwksUri" in spec or "discovery" in spec
    fetch: dict[str, Any] = {}
    if uri and uri.startswith("http://"):
        fetch["allowInsecureHttp"] = True
        report.add("review", where, "plain-http jwksUri: anyone on the path can replace the keys")
    if remote and rule.get("timeout"):
        seconds = _duration_seconds(str(rule["timeout"]))
        if seconds is not None:
            fetch["timeoutSeconds"] = seconds
    if fetch:
        spec["fetch"] = fetch
    if rule.get("audiences"):
        spec["audiences"] = list(rule["audiences"])
    else:
        report.add(
            "stricter",
            where,
            "no audiences: Istio then accepts any audience, authz refuses a token that "
            "names one: list the API's audiences",
        )
    sources = _token_sources(rule, where, report)
    if sources:
        spec["tokenSources"] = sources
    delimited = rule.get("spaceDelimitedClaims") or []
    if delimited:
        spec["claims"] = {"scopes": list(dict.fromkeys(["scope", "scp", *delimited]))}
        report.add(
            "note",
            where,
            "spaceDelimitedClaims are read as scopes (requireScopes), with scope and scp",
        )
    if rule.get("outputPayloadToHeader"):
        report.add(
            "omitted",
            where,
            "outputPayloadToHeader: authz sends chosen claims as headers (response.headers), "
            "not the whole payload",
        )
    return spec


def _token_sources(rule: Mapping[str, Any], where: str, report: Report) -> list[dict[str, Any]]:
    sources: list[dict[str, Any]] = [
        {"header": {"name": h["name"], "prefix": h.get("prefix", "")}}
        for h in rule.get("fromHeaders") or []
    ]
    sources += [{"query": {"name": q}} for q in rule.get("fromParams") or []]
    sources += [{"cookie": {"name": c}} for c in rule.get("fromCookies") or []]
    if not sources:
        report.add(
            "stricter",
            where,
            "Istio also reads a token from the access_token query parameter; authz reads "
            "Authorization: Bearer only (add a query tokenSource if clients need it)",
        )
    return sources[:16]


# -- policies ---------------------------------------------------------------------------------


def _policy(
    group: Group, names: Mapping[tuple[str, str], str], options: Options, report: Report
) -> dict[str, Any]:
    issuers = {
        rule["issuer"]: names[(group.namespace, rule["issuer"])]
        for ra in group.authentications
        for rule in ra.spec.get("jwtRules") or []
        if (group.namespace, rule["issuer"]) in names
    }
    deny: list[dict[str, Any]] = []
    allow: list[tuple[str, Draft]] = []
    has_allow = require_token = remote_ip = False
    for obj in sorted(group.policies, key=lambda o: (o.selector is not None, o.name)):
        action = obj.spec.get("action", "ALLOW")
        if action in ("AUDIT", "CUSTOM"):
            report.add(
                "note",
                obj.where,
                f"{action} is not converted ("
                + (
                    "it decides nothing"
                    if action == "AUDIT"
                    else "authz is the external authorizer"
                )
                + ")",
            )
            continue
        has_allow = has_allow or action == "ALLOW"
        for i, rule in enumerate(obj.spec.get("rules") or []):
            ctx = Context(
                f"{obj.where}: spec.rules[{i}]",
                action == "DENY",
                group.namespace,
                issuers,
                options.xff_num_trusted_hops,
                report,
            )
            translated = translate_rule(rule, ctx)
            require_token = require_token or translated.require_token
            remote_ip = remote_ip or translated.uses_remote_ip
            for j, draft in enumerate(translated.drafts):
                name = f"{obj.name}-{i}" + (f"-{j}" if len(translated.drafts) > 1 else "")
                if ctx.deny:
                    deny.append(_rule(name, draft, "deny"))
                else:
                    allow.append((name, draft))
    rules = deny + _allow_rules(allow, require_token, bool(issuers), group, report)
    default = "deny" if has_allow else "requireToken" if require_token else "allowAnonymous"
    if default == "requireToken" and not issuers:
        default = "deny"  # Istio never sees a request principal here: every request denied
    spec: dict[str, Any] = {"targets": _targets(group, options, report)}
    if issuers:
        spec["issuers"] = [{"name": n} for n in sorted(set(issuers.values()))]
    spec["rules"] = _names_unique(rules) or [{"name": "default", "action": default}]
    spec["defaultAction"] = default
    if remote_ip:
        spec["xffNumTrustedHops"] = options.xff_num_trusted_hops
    dry_run = [p for p in group.policies if p.annotations.get(DRY_RUN_ANNOTATION) == "true"]
    if options.dry_run or dry_run:
        spec["dryRun"] = True
        if dry_run and len(dry_run) < len(group.policies):
            report.add(
                "review",
                f"namespace {group.namespace}",
                f"{', '.join(p.name for p in dry_run)}: istio.io/dry-run on some policies "
                "only; the merged authz policy is all dry-run",
            )
    response = _response(group)
    if response:
        spec["response"] = response
    return {
        "apiVersion": schema.API_VERSION,
        "kind": "AuthzPolicy",
        "metadata": {"name": _group_name(group), "namespace": group.namespace},
        "spec": spec,
    }


def _allow_rules(
    allow: list[tuple[str, Draft]],
    require_token: bool,
    have_issuers: bool,
    group: Group,
    report: Report,
) -> list[dict[str, Any]]:
    """Istio allows a request if any ALLOW rule matches; authz decides by the first rule
    that matches the request. Rules needing nothing go first, then those needing just a
    valid token: a request matching one of them is allowed by Istio whatever else matches.
    Rules with token conditions go last, and where several could match one request, only
    the first one's conditions count (reported)."""

    def needs(draft: Draft) -> int:
        token = draft.token or require_token
        return (
            0 if not token else 1 if not (draft.issuers or draft.claims or draft.audiences) else 2
        )

    allow = sorted(allow, key=lambda item: needs(item[1]))
    conditioned = [d for _, d in allow if needs(d) == 2]
    if any(
        _requirements(a) != _requirements(b) and not _disjoint(a, b)
        for i, a in enumerate(conditioned)
        for b in conditioned[i + 1 :]
    ):
        report.add(
            "stricter",
            f"namespace {group.namespace}",
            "several ALLOW rules with token conditions: where one request matches more than "
            "one, authz applies the first one's conditions (Istio: any one's)",
        )
    out = []
    for name, draft in allow:
        token = draft.token or require_token
        if token and not have_issuers:
            report.add(
                "note",
                f"{group.namespace}/{name}",
                "needs a token but no RequestAuthentication applies here: Istio never "
                "matches it, left out",
            )
            continue
        out.append(_rule(name, draft, "requireToken" if token else "allowAnonymous"))
    return out


def _requirements(draft: Draft) -> str:
    return repr((sorted(draft.issuers or ()), draft.claims, draft.audiences))


def _disjoint(a: Draft, b: Draft) -> bool:
    """No request matches both: different exact hosts, methods, ports or exact paths."""

    def apart(name: str, exact: bool = False) -> bool:
        left, right = a.match.get(name), b.match.get(name)
        if not left or not right or set(left) & set(right):
            return False
        return not exact or not any("*" in str(v) or "{" in str(v) for v in [*left, *right])

    only_paths = all("pathPrefixes" not in d.match for d in (a, b))
    return (
        apart("hosts", exact=True)
        or apart("methods")
        or apart("ports")
        or (only_paths and apart("paths", exact=True))
    )


def _rule(name: str, draft: Draft, action: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name}
    if draft.match:
        rule["match"] = draft.match
    rule["action"] = action
    if action == "requireToken":
        if draft.issuers:
            rule["issuers"] = [{"name": n} for n in sorted(draft.issuers)]
        if draft.audiences:
            rule["audiences"] = draft.audiences
        if draft.claims:
            rule["claims"] = draft.claims
    return rule


def _names_unique(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for rule in rules:
        name = _rule_name(rule["name"])
        while name in seen:
            name = _rule_name(f"{name[:58]}-{len(seen)}")
        seen.add(name)
        rule["name"] = name
    return rules


def _rule_name(text: str) -> str:
    name = re.sub(r"[^-a-zA-Z0-9_.]+", "-", text)[:63].strip("-_.")
    return name or "rule"


def _targets(group: Group, options: Options, report: Report) -> dict[str, Any]:
    if options.hosts:
        return {"hosts": list(options.hosts)}
    labels = dict(group.selector or ())
    if not labels:
        report.add(
            "note",
            f"namespace {group.namespace}",
            "namespace-wide policies: workloadSelector {} selects every workload whose "
            "authz sidecar reads this namespace (pass --host for a gateway)",
        )
    return {"workloadSelector": {"matchLabels": labels}}


def _group_name(group: Group) -> str:
    if group.selector is None:
        return "istio-namespace"
    return _dns_name("istio-" + "-".join(f"{k}-{v}" for k, v in group.selector))


def _response(group: Group) -> dict[str, Any]:
    """Claims copied to headers (outputClaimToHeaders) and whether the token is forwarded:
    Istio removes it unless forwardOriginalToken."""
    rules = [r for ra in group.authentications for r in ra.spec.get("jwtRules") or []]
    if not rules:
        return {}
    headers = {
        h["header"].lower(): {"name": h["header"].lower(), "claim": h["claim"]}
        for r in rules
        for h in r.get("outputClaimToHeaders") or []
    }
    response: dict[str, Any] = {
        "stripAuthorization": not all(r.get("forwardOriginalToken") for r in rules)
    }
    if headers:
        response["headers"] = list(headers.values())
    return response
