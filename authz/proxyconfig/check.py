"""`authz proxy-config --check FILE`: the Envoy settings authz relies on, audited.

The file is parsed into envoy-data-plane's typed Bootstrap (so a misspelt field is reported
as Envoy would refuse it), then every static listener's HTTP connection manager with
ext_authz is held to the rules the generator follows (:mod:`authz.proxyconfig.model`). Each
:class:`Finding` names the setting, where it is, and what the wrong value lets through.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import betterproto2
import yaml
from envoy_data_plane.envoy.config.bootstrap import v3 as bootstrap_v3
from envoy_data_plane.envoy.config.common.mutation_rules import v3 as mutation_v3
from envoy_data_plane.envoy.config.route import v3 as route_v3
from envoy_data_plane.envoy.extensions.filters.http.ext_authz import v3 as ext_authz_v3
from envoy_data_plane.envoy.extensions.filters.http.header_mutation import v3 as http_mutation_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm_v3
from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation import (
    v3 as early_mutation_v3,
)
from envoy_data_plane.envoy.type.matcher import v3 as matcher_v3

from authz.proxyconfig.envoy import EXT_AUTHZ, ROUTER
from authz.proxyconfig.model import (
    CONTRACT_IDENTITY_HEADERS,
    DIALECT_REQUEST_HEADERS,
    ENVOY_CHECK_PATH,
    KEY_WAIT_DEFAULT_MS,
    minimum_timeout_ms,
)

GRPC_DEFAULT_TIMEOUT_MS = 200  # Envoy's grpc_service.timeout when unset
# Headers an HTTP check answer always carries that must never overwrite the client request's.
CHECK_RESPONSE_HEADERS = (
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "date",
    "server",
    "host",
    ":path",
    ":authority",
    "authorization",
)
Escaped = hcm_v3.HttpConnectionManagerPathWithEscapedSlashesAction
SAFE_ESCAPED_SLASHES = (
    Escaped.UNESCAPE_AND_REDIRECT,
    Escaped.UNESCAPE_AND_FORWARD,
    Escaped.REJECT_REQUEST,
)


class ConfigError(ValueError):
    """The file is not an Envoy bootstrap envoy-data-plane can read."""


@dataclass(frozen=True)
class Finding:
    setting: str  # the field, as Envoy names it
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.setting}: {self.problem}"


@dataclass(frozen=True)
class Expectations:
    """What the authz deployment behind this Envoy needs from it."""

    key_wait_ms: int = KEY_WAIT_DEFAULT_MS
    peer_certificates: bool = False
    identity_headers: tuple[str, ...] = CONTRACT_IDENTITY_HEADERS


# -- reading ---------------------------------------------------------------------------------


def load(path: Path) -> bootstrap_v3.Bootstrap:
    """Parse a YAML or JSON bootstrap into typed messages (every ``@type`` it names)."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return parse(data)


def parse(data: Any) -> bootstrap_v3.Bootstrap:
    if not isinstance(data, dict):
        raise ConfigError("an Envoy bootstrap is a mapping at the top level")
    for type_name in sorted(_type_names(data)):
        package = type_name.rpartition(".")[0]
        try:
            importlib.import_module(f"envoy_data_plane.{package}")
        except ImportError:
            raise ConfigError(f"unknown @type {type_name}") from None
    try:
        return bootstrap_v3.Bootstrap.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"not a valid Envoy bootstrap: {exc}") from exc


def _type_names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        kind = value.get("@type")
        if isinstance(kind, str) and re.fullmatch(r"[\w./-]+", kind):
            yield kind.rpartition("/")[2]
        for member in value.values():
            yield from _type_names(member)
    elif isinstance(value, list):
        for member in value:
            yield from _type_names(member)


# -- matching header names like Envoy --------------------------------------------------------


def matches(matcher: matcher_v3.StringMatcher, name: str) -> bool:
    """Envoy's StringMatcher semantics for a header name."""

    def fold(text: str) -> str:
        return text.lower() if matcher.ignore_case else text

    subject = fold(name)
    if matcher.exact is not None:
        return subject == fold(matcher.exact)
    if matcher.prefix is not None:
        return subject.startswith(fold(matcher.prefix))
    if matcher.suffix is not None:
        return subject.endswith(fold(matcher.suffix))
    if matcher.contains is not None:
        return fold(matcher.contains) in subject
    if matcher.safe_regex is not None:
        return re.fullmatch(matcher.safe_regex.regex, name) is not None
    return False


def _listed(matchers: matcher_v3.ListStringMatcher | None, name: str) -> bool:
    return matchers is not None and any(matches(m, name) for m in matchers.patterns)


def _removes(mutations: Sequence[mutation_v3.HeaderMutation], name: str) -> bool:
    for mutation in mutations:
        if mutation.remove is not None and mutation.remove.lower() == name:
            return True
        on_match = mutation.remove_on_match
        if on_match is not None and on_match.key_matcher and matches(on_match.key_matcher, name):
            return True
    return False


# -- the rules -------------------------------------------------------------------------------


def check(config: bootstrap_v3.Bootstrap, expect: Expectations = Expectations()) -> list[Finding]:
    """Every missing or unsafe setting, in file order; empty when the config is safe."""
    findings: list[Finding] = []
    managers = list(_connection_managers(config))
    if not managers:
        where = "static_resources.listeners"
        return [Finding(EXT_AUTHZ, where, "no HTTP connection manager: authz checks nothing")]
    for where, manager in managers:
        findings += _check_manager(where, manager, expect)
    return findings


def _connection_managers(
    config: bootstrap_v3.Bootstrap,
) -> Iterator[tuple[str, hcm_v3.HttpConnectionManager]]:
    resources = config.static_resources
    for listener in resources.listeners if resources else []:
        for index, chain in enumerate(listener.filter_chains):
            for network_filter in chain.filters:
                message = _unpack(network_filter.typed_config)
                if isinstance(message, hcm_v3.HttpConnectionManager):
                    yield f"listener {listener.name or '?'} chain {index}", message


def _unpack(typed: Any) -> betterproto2.Message | None:
    return typed.unpack() if typed is not None else None


def _check_manager(
    where: str, manager: hcm_v3.HttpConnectionManager, expect: Expectations
) -> list[Finding]:
    findings = _paths_and_hosts(where, manager)
    filters = manager.http_filters
    names = [f.name for f in filters]
    authz = next(
        (f for f in filters if isinstance(_unpack(f.typed_config), ext_authz_v3.ExtAuthz)), None
    )
    if authz is None:
        return [*findings, Finding(EXT_AUTHZ, where, "no ext_authz filter: nothing is checked")]
    position = filters.index(authz)
    if authz.disabled:
        findings.append(
            Finding(EXT_AUTHZ, where, "disabled: only routes that enable it are checked")
        )
    if ROUTER in names and names.index(ROUTER) < position:
        findings.append(
            Finding(EXT_AUTHZ, where, "after the router: requests are forwarded unchecked")
        )
    config = _unpack(authz.typed_config)
    assert isinstance(config, ext_authz_v3.ExtAuthz)
    findings += _filter(f"{where} {authz.name}", config, expect)
    findings += _identity_headers(where, manager, filters[:position], expect)
    findings += _routes(where, manager, http=config.http_service is not None)
    if expect.peer_certificates:
        findings += _peer_certificates(f"{where} {authz.name}", manager, config)
    return findings


def _paths_and_hosts(where: str, manager: hcm_v3.HttpConnectionManager) -> list[Finding]:
    findings = []
    if not manager.normalize_path:
        findings.append(
            Finding(
                "normalize_path",
                where,
                "not true: the upstream gets raw dot segments (/public/../admin) and may resolve "
                "them differently from authz",
            )
        )
    if not manager.merge_slashes:
        findings.append(
            Finding(
                "merge_slashes",
                where,
                "not true: the upstream gets //admin unmerged and may read it differently from authz",
            )
        )
    if manager.path_with_escaped_slashes_action not in SAFE_ESCAPED_SLASHES:
        findings.append(
            Finding(
                "path_with_escaped_slashes_action",
                where,
                f"{manager.path_with_escaped_slashes_action.name}: /public%2F..%2Fadmin is judged as one "
                "path and decoded into another upstream; use UNESCAPE_AND_REDIRECT",
            )
        )
    if not manager.strip_any_host_port:
        findings.append(
            Finding(
                "strip_any_host_port",
                where,
                "not true: authz ignores the port, Envoy routes on it (host:9999 picks another virtual host)",
            )
        )
    if not manager.strip_trailing_host_dot:
        findings.append(
            Finding(
                "strip_trailing_host_dot",
                where,
                "not true: authz ignores a trailing dot, Envoy routes on it (host. picks another virtual host)",
            )
        )
    return findings


def _ms(duration: timedelta | None, default: int | None) -> int | None:
    return round(duration.total_seconds() * 1000) if duration is not None else default


def _filter(where: str, config: ext_authz_v3.ExtAuthz, expect: Expectations) -> list[Finding]:
    findings = []
    if config.failure_mode_allow:
        findings.append(
            Finding(
                "failure_mode_allow",
                where,
                "true: an authz outage (or a forced one) lets every request in",
            )
        )
    status = config.status_on_error.code.value if config.status_on_error else None
    if status is None or not 400 <= status <= 599:
        shown = "unset (403: outages look like denials)" if status is None else str(status)
        findings.append(
            Finding("status_on_error", where, f"{shown}: set a 4xx/5xx status for errors, e.g. 503")
        )
    minimum = minimum_timeout_ms(expect.key_wait_ms)
    if config.grpc_service is not None:
        timeout = _ms(config.grpc_service.timeout, GRPC_DEFAULT_TIMEOUT_MS)
        field = "grpc_service.timeout"
    elif config.http_service is not None:
        uri = config.http_service.server_uri
        timeout = _ms(uri.timeout if uri else None, None)
        field = "http_service.server_uri.timeout"
        findings += _http_service(where, config, expect)
    else:
        return [*findings, Finding("grpc_service", where, "neither grpc_service nor http_service")]
    if timeout is None or timeout < minimum:
        findings.append(
            Finding(
                field,
                where,
                f"{timeout} ms: below authz's key-fetch wait ({expect.key_wait_ms} ms) plus headroom;"
                f" a token with a new key times out. Use at least {minimum} ms",
            )
        )
    return findings


def _http_service(where: str, config: ext_authz_v3.ExtAuthz, expect: Expectations) -> list[Finding]:
    assert config.http_service is not None
    findings = []
    if config.http_service.path_prefix != ENVOY_CHECK_PATH:
        findings.append(
            Finding(
                "http_service.path_prefix",
                where,
                f"{config.http_service.path_prefix or 'unset'}: authz serves Envoy's checks under {ENVOY_CHECK_PATH}",
            )
        )
    response = config.http_service.authorization_response
    upstream = response.allowed_upstream_headers if response else None
    missing = [n for n in expect.identity_headers if not _listed(upstream, n)]
    unsafe = [n for n in CHECK_RESPONSE_HEADERS if _listed(upstream, n)]
    if missing or unsafe:
        problems = []
        if missing:
            problems.append(f"identity headers {', '.join(missing)} never reach the upstream")
        if unsafe:
            problems.append(f"the check answer's {', '.join(unsafe)} would overwrite the request's")
        findings.append(
            Finding(
                "http_service.authorization_response.allowed_upstream_headers",
                where,
                "; ".join(problems),
            )
        )
    allowed, blocked = config.allowed_headers, config.disallowed_headers
    leaked = [n for n in DIALECT_REQUEST_HEADERS if _listed(allowed, n) and not _listed(blocked, n)]
    if leaked:
        findings.append(
            Finding(
                "allowed_headers",
                where,
                f"lets clients send {', '.join(leaked)}, which authz's other dialects read as the original request",
            )
        )
    return findings


def _identity_headers(
    where: str,
    manager: hcm_v3.HttpConnectionManager,
    before_authz: Sequence[hcm_v3.HttpFilter],
    expect: Expectations,
) -> list[Finding]:
    """Client-sent identity headers must be removed before ext_authz, on every route."""
    mutations: list[mutation_v3.HeaderMutation] = []
    for extension in manager.early_header_mutation_extensions:
        early = _unpack(extension.typed_config)
        if isinstance(early, early_mutation_v3.HeaderMutation):
            mutations += early.mutations
    for http_filter in before_authz:
        config = _unpack(http_filter.typed_config)
        if isinstance(config, http_mutation_v3.HeaderMutation) and config.mutations:
            mutations += config.mutations.request_mutations
    kept = [n for n in expect.identity_headers if not _removes(mutations, n)]
    if not kept:
        return []
    return [
        Finding(
            "early_header_mutation_extensions",
            where,
            f"client-sent {', '.join(kept)} reach the upstream as if authz had set them "
            "(on anonymous routes and wherever authz sets none); remove them before ext_authz",
        )
    ]


def _routes(where: str, manager: hcm_v3.HttpConnectionManager, *, http: bool) -> list[Finding]:
    """Routes that turn checks off, and (HTTP checks) policy bindings Envoy never sends."""
    findings = []
    config = manager.route_config
    for host in config.virtual_hosts if config else []:
        places: list[tuple[str, dict[str, Any]]] = [
            (f"virtual host {host.name}", host.typed_per_filter_config)
        ]
        places += [
            (f"virtual host {host.name} route {r.name or r.match}", r.typed_per_filter_config)
            for r in host.routes
        ]
        for place, per_filter in places:
            per_route = _unpack(per_filter.get(EXT_AUTHZ))
            if _disables_ext_authz(per_route):
                findings.append(
                    Finding(
                        "ext_authz disabled",
                        f"{where} {place}",
                        "requests here are never checked; make public paths allowAnonymous in the policy",
                    )
                )
            if http and _binds_policy(per_route):
                findings.append(
                    Finding(
                        "check_settings.context_extensions",
                        f"{where} {place}",
                        "Envoy sends context_extensions to gRPC checks only: with http_service "
                        "this binding is dropped and the policy is selected by host instead",
                    )
                )
    return findings


def _binds_policy(per_route: betterproto2.Message | None) -> bool:
    if isinstance(per_route, route_v3.FilterConfig):
        return _binds_policy(_unpack(per_route.config))
    return (
        isinstance(per_route, ext_authz_v3.ExtAuthzPerRoute)
        and per_route.check_settings is not None
        and bool(per_route.check_settings.context_extensions)
    )


def _disables_ext_authz(per_route: betterproto2.Message | None) -> bool:
    """``ExtAuthzPerRoute{disabled}``, or Envoy's generic ``FilterConfig{disabled}`` wrapper."""
    if isinstance(per_route, route_v3.FilterConfig):
        return per_route.disabled or _disables_ext_authz(_unpack(per_route.config))
    return isinstance(per_route, ext_authz_v3.ExtAuthzPerRoute) and bool(per_route.disabled)


def _peer_certificates(
    where: str, manager: hcm_v3.HttpConnectionManager, config: ext_authz_v3.ExtAuthz
) -> list[Finding]:
    if config.grpc_service is not None and not config.include_peer_certificate:
        return [
            Finding(
                "include_peer_certificate",
                where,
                "false: certificate-bound tokens and peer principals cannot be checked",
            )
        ]
    if config.http_service is None:
        return []
    forwarded = manager.forward_client_cert_details
    details = manager.set_current_client_cert_details
    sends = _listed(config.allowed_headers, "x-forwarded-client-cert")
    if forwarded != hcm_v3.HttpConnectionManagerForwardClientCertDetails.SANITIZE_SET or not (
        details and details.cert and sends
    ):
        return [
            Finding(
                "forward_client_cert_details",
                where,
                "HTTP checks see the client certificate only as x-forwarded-client-cert: set "
                "SANITIZE_SET with set_current_client_cert_details.cert and allow the header",
            )
        ]
    return []
