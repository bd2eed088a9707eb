"""Istio wiring for authz: mesh extension providers, CUSTOM AuthorizationPolicies, sidecar mode.

Istio writes the Envoy configuration itself, so what it can be told is less than what
:mod:`authz.proxyconfig.envoy` sets: the provider (fail closed, status on error, deadline,
which headers go where) and the mesh-wide path normalisation. Objects are plain data in
Istio's field names; the tests validate them against Istio's CRD schemas and mesh-config proto.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from authz.proxyconfig.model import (
    DENIAL_CLIENT_HEADERS,
    ENVOY_CHECK_PATH,
    ENVOY_HTTP_REQUEST_HEADERS,
    GRPC_PORT,
    LOGIN_CLIENT_HEADERS_ON_ALLOW,
    Deployment,
    ServiceAddress,
    TcpAddress,
    Transport,
    UnixAddress,
    minimum_timeout_ms,
)
from authz.proxyconfig.render import Document

SECURITY_API = "security.istio.io/v1"
NETWORKING_API = "networking.istio.io/v1"
SIDECAR_SUFFIX = "-local"
SIDECAR_HOST_DOMAIN = "local"  # authz-local.local: a name for the pod's loopback


@dataclass(frozen=True)
class Mesh:
    """Istio-side inputs: provider name, and which workloads / gateway hosts are checked."""

    provider: str = "authz"
    sidecar: bool = True  # also register `<provider>-local`: authz in the workload's pod
    sidecar_port: int = GRPC_PORT
    namespace: str = "default"
    workload: dict[str, str] = field(default_factory=dict)  # selector labels
    gateway_hosts: tuple[str, ...] = ()
    gateway_namespace: str = "istio-system"
    gateway: dict[str, str] = field(default_factory=lambda: {"istio": "ingressgateway"})

    @property
    def sidecar_provider(self) -> str:
        return self.provider + SIDECAR_SUFFIX

    @property
    def sidecar_host(self) -> str:
        return f"{self.sidecar_provider}.{SIDECAR_HOST_DOMAIN}"


def seconds(ms: int) -> str:
    """Istio's duration text: 500 -> ``0.5s``."""
    return f"{ms / 1000:g}s"


def _service(d: Deployment) -> tuple[str, int]:
    if isinstance(d.authz, ServiceAddress):
        return d.authz.host, d.authz.port
    if isinstance(d.authz, TcpAddress) and not d.authz.is_ip:
        return d.authz.host, d.authz.port
    kind = "a unix socket" if isinstance(d.authz, UnixAddress) else "an IP address"
    raise ValueError(
        f"Istio resolves providers by service name, not {kind}: use --authz NAME.NAMESPACE.svc"
    )


def provider(d: Deployment, name: str, service: str, port: int) -> dict[str, object]:
    """One ``extensionProviders`` entry; failOpen stays false (its default) on purpose."""
    common: dict[str, object] = {"service": service, "port": port}
    if d.transport is Transport.GRPC:
        grpc = {**common, "timeout": seconds(d.timeout_ms), "statusOnError": str(d.status_on_error)}
        return {"name": name, "envoyExtAuthzGrpc": grpc}
    to_authz = ["authorization", *ENVOY_HTTP_REQUEST_HEADERS, *d.request_headers]
    if d.peer_certificates:
        to_authz.append("x-forwarded-client-cert")
    http = {
        **common,
        "pathPrefix": ENVOY_CHECK_PATH,
        "timeout": seconds(d.timeout_ms),
        "statusOnError": str(d.status_on_error),
        "includeRequestHeadersInCheck": to_authz,
        "headersToUpstreamOnAllow": [f"{d.identity_header_prefix}*", *d.identity_headers],
        "headersToDownstreamOnDeny": list(DENIAL_CLIENT_HEADERS),
    }
    if d.browser_login:
        http["headersToDownstreamOnAllow"] = list(LOGIN_CLIENT_HEADERS_ON_ALLOW)
    return {"name": name, "envoyExtAuthzHttp": http}


def mesh_config(d: Deployment, mesh: Mesh) -> dict[str, object]:
    service, port = _service(d)
    providers = [provider(d, mesh.provider, service, port)]
    if mesh.sidecar:
        providers.append(provider(d, mesh.sidecar_provider, mesh.sidecar_host, mesh.sidecar_port))
    return {
        "meshConfig": {
            "extensionProviders": providers,
            "pathNormalization": {"normalization": "DECODE_AND_MERGE_SLASHES"},
        }
    }


def authorization_policy(
    name: str, namespace: str, selector: dict[str, str], provider_name: str, hosts: tuple[str, ...]
) -> dict[str, object]:
    rule: dict[str, object] = {}
    if hosts:
        rule = {"to": [{"operation": {"hosts": _host_forms(hosts)}}]}
    return {
        "apiVersion": SECURITY_API,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "action": "CUSTOM",
            "provider": {"name": provider_name},
            "rules": [rule],
        },
    }


def _host_forms(hosts: tuple[str, ...]) -> list[str]:
    """Each host as clients may write it: with any port, and with a trailing dot. A form left
    out would skip the check entirely, since CUSTOM only calls authz for matching requests."""
    forms: list[str] = []
    for host in hosts:
        forms += [host, f"{host}:*", f"{host}.", f"{host}.:*"]
    return forms


def _workload_name(mesh: Mesh) -> str:
    if not mesh.workload:
        raise ValueError("name the workload's labels (--workload app=orders)")
    return next(iter(mesh.workload.values()))


# -- documents -------------------------------------------------------------------------------

MESH_HEADER = """\
Istio mesh config: register authz as ext_authz extension providers, and normalise paths
the way authz's path rules expect.

This is the `meshConfig` block of the istiod Helm values (or IstioOperator
`spec.meshConfig`; or the `mesh` key of the `istio` ConfigMap in istio-system):

  helm upgrade istiod istio/istiod -n istio-system --reuse-values -f FILE

`extensionProviders` is a list: Helm replaces it as a whole, so merge these entries with
any providers you already have. istiod picks the change up without a restart.

Generated by `{command}`. Change the inputs, not this file."""

CENTRAL = """\
Central mode: the authz Service (`helm install authz charts/authz -n authz-system`, or
manifests/install.yaml). Use it from an AuthorizationPolicy with `action: CUSTOM` and
`provider: {{name: {name}}}`."""

SIDECAR = """\
Sidecar mode: authz in the workload's own pod on 127.0.0.1:{port}, reached through the
ServiceEntry `{host}` (authz proxy-config istio-sidecar)."""

TIMEOUT = """\
Deadline for one check. A token signed with a key authz has not seen yet may wait
{wait} ms for one JWKS refetch (unknownKidWaitMillis): keep this above {minimum} ms."""

STATUS = """\
authz unreachable or timing out: {code}, never "allowed". failOpen stays false (the default):
an attacker who can break authz must not get in."""

UPSTREAM_ON_ALLOW = """\
Only authz's identity headers reach the upstream from an allow answer. Istio's sidecar
does not strip client-sent ones: the upstream must trust these only behind this check."""

PATH_NORMALIZATION = """\
Decode %2F/%5C, resolve dot segments and merge slashes before authorization and routing,
so authz judges the path the upstream receives (CVE-2021-31920). Istio's default (BASE)
keeps %2F encoded: `/public%2F..%2Fadmin` could be authorized as one path and read as
another by an upstream that decodes it."""


def mesh_document(d: Deployment, mesh: Mesh, command: str) -> Document:
    data = mesh_config(d, mesh)
    kind = "envoyExtAuthzGrpc" if d.transport is Transport.GRPC else "envoyExtAuthzHttp"
    providers = "meshConfig.extensionProviders"
    notes: dict[tuple[str, str], str] = {
        ("", f"{providers}[{mesh.provider}]"): CENTRAL.format(name=mesh.provider),
        ("", "meshConfig.pathNormalization"): PATH_NORMALIZATION,
    }
    if mesh.sidecar:
        notes[("", f"{providers}[{mesh.sidecar_provider}]")] = SIDECAR.format(
            port=mesh.sidecar_port, host=mesh.sidecar_host
        )
    first = f"{providers}[{mesh.provider}].{kind}"
    notes[("", f"{first}.timeout")] = TIMEOUT.format(
        wait=d.key_wait_ms, minimum=minimum_timeout_ms(d.key_wait_ms)
    )
    notes[("", f"{first}.statusOnError")] = STATUS.format(code=d.status_on_error)
    if d.transport is Transport.HTTP:
        notes[("", f"{first}.headersToUpstreamOnAllow")] = UPSTREAM_ON_ALLOW
    return Document(data, notes, MESH_HEADER.format(command=command))


POLICY_HEADER = """\
Send requests to authz (provider `{provider}`) with AuthorizationPolicies of action CUSTOM.
Istio then calls authz for every request the rules match; authz answers allow (with
identity headers), 401 or 403.

Generated by `{command}`. Change the inputs, not this file."""

WORKLOAD = """\
`rules: [{}]` matches every request on purpose: public paths are `allowAnonymous` rules in
the AuthzPolicy, so one place decides, and a path left out of both is denied instead of
silently public."""

GATEWAY = """\
The same at the edge: every request through the ingress gateway for these hosts is
checked once there. Each host is listed with any port and with a trailing dot: a form left
out would not call authz at all."""


def policy_document(d: Deployment, mesh: Mesh, command: str) -> list[Document]:
    """CUSTOM policies: for the workload (if labels are given) and the gateway hosts."""
    del d  # same objects for either transport: the provider carries the difference
    docs = []
    header = POLICY_HEADER.format(provider=mesh.provider, command=command)
    if mesh.workload:
        name = f"{_workload_name(mesh)}-authz"
        policy = authorization_policy(name, mesh.namespace, mesh.workload, mesh.provider, ())
        docs.append(Document(policy, {("", "spec.rules"): WORKLOAD}, header))
        header = ""
    if mesh.gateway_hosts:
        policy = authorization_policy(
            "ingress-authz", mesh.gateway_namespace, mesh.gateway, mesh.provider, mesh.gateway_hosts
        )
        docs.append(Document(policy, {}, "\n".join(filter(None, [header, GATEWAY]))))
    if not docs:
        raise ValueError("nothing to protect: give --workload LABEL=VALUE and/or --gateway-host")
    return docs


SIDECAR_HEADER = """\
Sidecar mode with Istio: authz runs in the workload's pod (charts/authz with
`mode: sidecar`, answering on 127.0.0.1:{port}), and the pod's istio-proxy calls it there.

Istio resolves an extension provider's `service` through its service registry, so the
loopback address gets a name once per mesh (this ServiceEntry); the provider
`{provider}` in the mesh config points at that name.

Generated by `{command}`. Change the inputs, not this file."""

SIDECAR_POLICY = (
    "Then, per workload that carries the sidecar: every request to it is checked by its own authz."
)


def sidecar_document(d: Deployment, mesh: Mesh, command: str) -> list[Document]:
    entry = {
        "apiVersion": NETWORKING_API,
        "kind": "ServiceEntry",
        "metadata": {"name": mesh.sidecar_provider, "namespace": mesh.gateway_namespace},
        "spec": {
            "hosts": [mesh.sidecar_host],
            "endpoints": [{"address": "127.0.0.1"}],
            "ports": [
                {
                    "name": "grpc" if d.transport is Transport.GRPC else "http",
                    "number": mesh.sidecar_port,
                    "protocol": "GRPC" if d.transport is Transport.GRPC else "HTTP",
                }
            ],
            "resolution": "STATIC",
        },
    }
    name = f"{_workload_name(mesh)}-authz{SIDECAR_SUFFIX}"
    policy = authorization_policy(name, mesh.namespace, mesh.workload, mesh.sidecar_provider, ())
    header = SIDECAR_HEADER.format(
        port=mesh.sidecar_port, provider=mesh.sidecar_provider, command=command
    )
    return [Document(entry, {}, header), Document(policy, {}, SIDECAR_POLICY)]
