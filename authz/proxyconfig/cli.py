"""`authz proxy-config`: print the proxy configuration for a deployment, or --check one.

    authz proxy-config envoy --route /bound/=bound          # a complete Envoy bootstrap
    authz proxy-config envoy-snippet --route /orders/=shop/orders   # AuthzPolicy shop/orders
    authz proxy-config envoy-snippet --authz authz.authz-system.svc
    authz proxy-config istio-mesh --transport http
    authz proxy-config istio-policy --namespace shop --workload app=orders
    authz proxy-config nginx --transport http
    authz proxy-config --check envoy.yaml                   # exit 1 when a setting is unsafe

authz/cli.py hands the arguments over untouched and imports this module only then, so
`authz serve` never loads envoy-data-plane.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from authz.proxyconfig import caddy, check, envoy_notes, istio, model, nginx
from authz.proxyconfig.model import Deployment, Transport
from authz.proxyconfig.render import to_yaml

TARGETS = (
    "envoy",
    "envoy-snippet",
    "istio-mesh",
    "istio-policy",
    "istio-sidecar",
    "nginx",
    "caddy",
)
HTTP_ONLY = frozenset({"nginx", "caddy"})
ISTIO = frozenset({"istio-mesh", "istio-policy", "istio-sidecar"})
DEFAULT_SERVICE = "authz.authz-system.svc"  # manifests/install.yaml's Service


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _route(text: str) -> model.RouteBinding:
    """PREFIX=POLICY, or PREFIX=NAMESPACE/POLICY for an AuthzPolicy in that namespace."""
    prefix, target = _pair(text)
    namespace, scoped, policy = target.partition("/")
    try:
        if scoped:
            return model.RouteBinding(prefix, policy, namespace)
        return model.RouteBinding(prefix, target)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authz proxy-config",
        description="\n\n".join((__doc__ or "").split("\n\n")[:2]),  # summary and examples
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", choices=TARGETS, help="what to print")
    parser.add_argument(
        "--check", type=Path, metavar="FILE", help="audit an Envoy bootstrap (YAML or JSON)"
    )
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")

    authz = parser.add_argument_group("authz")
    authz.add_argument("--transport", choices=[t.value for t in Transport], help="default grpc")
    authz.add_argument(
        "--authz",
        metavar="ADDR",
        help="HOST:PORT, unix:/PATH or NAME.NAMESPACE.svc[:PORT] (default: loopback, "
        f"or {DEFAULT_SERVICE} for Istio; port {model.GRPC_PORT} gRPC, {model.HTTP_CHECK_PORT} HTTP)",
    )
    authz.add_argument("--timeout-ms", type=int, default=500, help="deadline for one check")
    authz.add_argument("--connect-timeout-ms", type=int, default=250)
    authz.add_argument(
        "--key-wait-ms",
        type=int,
        default=model.KEY_WAIT_DEFAULT_MS,
        help="the largest fetch.unknownKidWaitMillis of your issuers (the timeout must exceed it)",
    )
    authz.add_argument(
        "--status-on-error", type=int, default=503, help="status when authz fails (4xx/5xx)"
    )
    authz.add_argument(
        "--route",
        type=_route,
        action="append",
        default=[],
        metavar="PREFIX=[NAMESPACE/]POLICY",
        help="bind a path prefix to a policy (context_extensions {policy: POLICY}); with "
        "NAMESPACE also authz.io/namespace: NAMESPACE, which a cluster AuthzPolicy in that "
        "namespace requires",
    )
    authz.add_argument(
        "--peer-certificates",
        action="store_true",
        help="policies use certificate-bound tokens or peer principals: forward the client cert",
    )
    authz.add_argument(
        "--identity-header-prefix",
        default=model.IDENTITY_HEADER_PREFIX,
        help="identity headers authz sets; client-sent ones are removed",
    )
    authz.add_argument(
        "--identity-header",
        action="append",
        default=[],
        metavar="NAME",
        help="another identity header your policies set (NGINX and Caddy need each name)",
    )
    authz.add_argument(
        "--proxy-secret",
        action="store_true",
        help="HTTP transport: the proxy sends the shared secret of authz serve "
        f"--http-proxy-secret-file (Envoy and Caddy from ${model.PROXY_SECRET_ENV}, NGINX from "
        "an include file)",
    )
    authz.add_argument(
        "--check-header",
        action="append",
        default=[],
        metavar="NAME",
        help="HTTP transport: a client header authz needs besides Authorization (e.g. cookie)",
    )
    authz.add_argument(
        "--browser-login",
        action="store_true",
        help="HTTP transport: policies with `login` (browser sign-in): send authz the cookie "
        "and the headers that tell a page load from a script and give its origin, and pass "
        "a renewed session cookie to the client",
    )

    proxy = parser.add_argument_group("the proxy (complete configurations)")
    proxy.add_argument("--listen", default="127.0.0.1:8080")
    proxy.add_argument("--upstream", default="127.0.0.1:8081")
    proxy.add_argument("--admin", default="127.0.0.1:9901", help="Envoy's admin listener")
    proxy.add_argument("--max-connections", type=int, default=10000)

    istio = parser.add_argument_group("Istio")
    istio.add_argument("--provider", default="authz", help="extension provider name")
    istio.add_argument(
        "--no-sidecar", action="store_true", help="no `<provider>-local` provider (sidecar mode)"
    )
    istio.add_argument(
        "--sidecar-port", type=int, help="authz's port in the pod (default: as --authz)"
    )
    istio.add_argument("--namespace", default="default", help="the workload's namespace")
    istio.add_argument(
        "--workload",
        type=_pair,
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="selector of the workload to protect",
    )
    istio.add_argument(
        "--gateway-host", action="append", default=[], help="host checked at the ingress gateway"
    )
    istio.add_argument("--gateway-namespace", default="istio-system")
    return parser


def deployment(args: argparse.Namespace) -> Deployment:
    """The inputs from the command line; ValueError for a combination that is unsafe."""
    target = args.target
    transport = Transport(args.transport or ("http" if target in HTTP_ONLY else "grpc"))
    if target in HTTP_ONLY and transport is not Transport.HTTP:
        raise ValueError(f"{target} talks to authz's HTTP transport only")
    port = model.GRPC_PORT if transport is Transport.GRPC else model.HTTP_CHECK_PORT
    default = DEFAULT_SERVICE if target in ISTIO else "127.0.0.1"
    return Deployment(
        transport=transport,
        authz=model.parse_address(args.authz or default, port),
        timeout_ms=args.timeout_ms,
        connect_timeout_ms=args.connect_timeout_ms,
        key_wait_ms=args.key_wait_ms,
        status_on_error=args.status_on_error,
        routes=tuple(args.route),
        peer_certificates=args.peer_certificates,
        identity_header_prefix=args.identity_header_prefix.lower(),
        identity_headers=tuple(n.lower() for n in args.identity_header),
        check_headers=tuple(n.lower() for n in args.check_header),
        browser_login=args.browser_login,
        proxy_secret=args.proxy_secret,
        listen=model.parse_tcp(args.listen, 8080),
        upstream=model.parse_tcp(args.upstream, 80),
        admin=model.parse_tcp(args.admin, 9901),
        max_connections=args.max_connections,
    )


def render(target: str, d: Deployment, args: argparse.Namespace, command: str) -> str:
    """The text of one target."""
    if target in ("nginx", "caddy"):
        writer: Callable[[Deployment, str], str] = (
            nginx.config if target == "nginx" else caddy.config
        )
        return writer(d, command)
    if target.startswith("envoy"):
        build = (
            envoy_notes.bootstrap_document if target == "envoy" else envoy_notes.snippet_document
        )
        return to_yaml(build(d, command))
    port = d.authz.port if not isinstance(d.authz, model.UnixAddress) else model.GRPC_PORT
    mesh = istio.Mesh(
        provider=args.provider,
        sidecar=not args.no_sidecar,
        sidecar_port=args.sidecar_port or port,
        namespace=args.namespace,
        workload=dict(args.workload),
        gateway_hosts=tuple(h.lower() for h in args.gateway_host),
        gateway_namespace=args.gateway_namespace,
    )
    if target == "istio-mesh":
        return to_yaml(istio.mesh_document(d, mesh, command))
    if target == "istio-policy":
        return to_yaml(*istio.policy_document(d, mesh, command))
    return to_yaml(*istio.sidecar_document(d, mesh, command))


def _command(argv: list[str]) -> str:
    """The command line that regenerates the output, without where it was written."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("-o", "--output"):
            skip = True
            continue
        if arg.startswith("--output="):
            continue
        kept.append(arg)
    return shlex.join(["authz", "proxy-config", *kept])


def run_check(args: argparse.Namespace) -> int:
    expect = check.Expectations(
        key_wait_ms=args.key_wait_ms,
        peer_certificates=args.peer_certificates,
        identity_headers=tuple(
            dict.fromkeys(
                (*model.CONTRACT_IDENTITY_HEADERS, *(n.lower() for n in args.identity_header))
            )
        ),
    )
    try:
        findings = check.check(check.load(args.check), expect)
    except check.ConfigError as exc:
        print(f"authz proxy-config: {exc}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    if findings:
        print(f"{args.check}: {len(findings)} unsafe or missing setting(s)")
        return 1
    print(f"{args.check}: ok, every setting authz relies on is in place")
    return 0


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.check is None) == (args.target is None):
        parser.error("give a TARGET to print, or --check FILE")
    if args.check is not None:
        return run_check(args)
    try:
        text = render(args.target, deployment(args), args, _command(argv))
    except ValueError as exc:
        print(f"authz proxy-config: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    return 0
