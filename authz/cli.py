"""`authz` command line: serve, check (offline explain), lint, and dev helpers for keys and tokens."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from authz import __version__


class UsageError(Exception):
    """Arguments that cannot work together or name nothing usable: exit 2, as argparse does."""


def _labels(text: str) -> dict[str, str]:
    """`app=orders,tier=api` -> dict; the downward API file format (`k="v"` lines) also works."""
    out: dict[str, str] = {}
    if text.startswith("@"):
        try:
            text = ",".join(Path(text[1:]).read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc}") from None
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"label {item!r} is not key=value")
        out[key.strip()] = value.strip().strip('"')
    return out


def _token_limit(text: str) -> int:
    """A token travels in one header, and a header over MAX_HEADER_BYTES is refused (400)
    before any token is read: a larger token limit could never be reached."""
    from authz.request.view import MAX_HEADER_BYTES

    value = int(text)
    if not 0 < value <= MAX_HEADER_BYTES - 1024:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_HEADER_BYTES - 1024}")
    return value


def _addr(text: str) -> str | None:
    """An address, or None for `off` (that transport is not served)."""
    return None if text == "off" else text


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _pairs(items: list[str], sep: str, what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found:
            raise UsageError(f"authz: {what} {item!r} must look like key{sep}value")
        out[key.strip().lower() if what == "header" else key.strip()] = value.strip()
    return out


def _tls_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--tls-cert-file",
        type=Path,
        help=f"PEM certificate chain: TLS on {what} (reloaded when the file changes)",
    )
    parser.add_argument("--tls-key-file", type=Path, help="PEM private key of --tls-cert-file")
    parser.add_argument(
        "--tls-client-ca-file",
        type=Path,
        help="PEM CA bundle: require client certificates signed by it (mTLS)",
    )


def _tls_files(args: argparse.Namespace, command: str, *, required: bool = False) -> Any:
    """TLSFiles from the --tls-* flags, or None; a half-given pair, or files that do not
    make a server certificate, are a usage error (before anything starts)."""
    from authz.tls import ServerCertificates, TLSError, TLSFiles

    if args.tls_cert_file is None and args.tls_key_file is None:
        if required:
            raise UsageError(f"authz {command}: --tls-cert-file and --tls-key-file are required")
        if args.tls_client_ca_file is not None:
            raise UsageError(f"authz {command}: --tls-client-ca-file needs --tls-cert-file")
        return None
    if args.tls_cert_file is None or args.tls_key_file is None:
        raise UsageError(f"authz {command}: give both --tls-cert-file and --tls-key-file")
    tls = TLSFiles(args.tls_cert_file, args.tls_key_file, args.tls_client_ca_file)
    try:
        ServerCertificates(tls)
    except TLSError as exc:
        raise UsageError(f"authz {command}: --tls-cert-file/--tls-key-file: {exc}") from None
    return tls


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authz", description=__doc__)
    parser.add_argument("--version", action="version", version=f"authz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the check server (gRPC ext_authz, HTTP ext_authz and forward auth)"
    )
    serve.add_argument(
        "--policy-dir", type=Path, help="directory of policy YAML (the embedded default)"
    )
    serve.add_argument(
        "--kubernetes", action="store_true", help="watch authz.io CRDs (cluster mode)"
    )
    serve.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account)")
    serve.add_argument("--watch-namespaces", type=_names, default=(), help="ns1,ns2 (default: all)")
    serve.add_argument(
        "--leader-election-namespace", help="where the status-writer Lease lives (default: own)"
    )
    serve.add_argument("--leader-election-id", default="authz-status", help="Lease name")
    serve.add_argument(
        "--grpc-addr",
        type=_addr,
        default="127.0.0.1:9001",
        help="gRPC ext_authz (Envoy grpc_service): HOST:PORT, unix:PATH, or off",
    )
    serve.add_argument(
        "--http-check-addr",
        type=_addr,
        default="127.0.0.1:9003",
        help="HTTP checks (Envoy http_service, NGINX auth_request, Caddy/Traefik forward "
        "auth): HOST:PORT, unix:PATH, or off",
    )
    serve.add_argument(
        "--http-proxy-secret-file",
        type=Path,
        help="HTTP checks must carry this file's content in x-authz-proxy-secret "
        "(compared in constant time); others are denied proxy_not_trusted",
    )
    serve.add_argument(
        "--http-addr", default="127.0.0.1:9002", help="HOST:PORT for /healthz, /readyz, /metrics"
    )
    _tls_arguments(serve, "the Check listeners")
    serve.add_argument("--realm", default="authz", help="realm in WWW-Authenticate challenges")
    serve.add_argument(
        "--default-action", choices=("deny", "allow"), default="deny", help="when no policy matches"
    )
    serve.add_argument(
        "--workload-labels", type=_labels, default={}, help="k=v,k=v or @FILE (sidecar mode)"
    )
    serve.add_argument("--threads", type=int, default=16, help="gRPC handler threads")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes, one per core (HTTP checks: one shared socket; gRPC: PORT shared, "
        "PORT+10+i each)",
    )
    serve.add_argument(
        "--cache-entries", type=int, default=100_000, help="verified-token cache size (0: off)"
    )
    serve.add_argument(
        "--cache-mib",
        type=int,
        default=256,
        help="verified-token cache memory bound in MiB, each entry measured (0: off)",
    )
    serve.add_argument(
        "--max-token-bytes",
        type=_token_limit,
        default=16384,
        help="longer tokens: 401 token_too_large (at most 32 KiB, the header limit, less 1 KiB)",
    )
    serve.add_argument(
        "--shutdown-delay", type=float, default=0.0, help="seconds to keep serving after SIGTERM"
    )
    serve.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="seconds for in-flight checks"
    )
    serve.add_argument(
        "--debug-endpoints",
        action="store_true",
        help="serve /debug/snapshot and /debug/explain on the ops port (they reveal policy)",
    )
    serve.add_argument(
        "--tracing",
        action="store_true",
        help="OpenTelemetry span per Check, exported by OTLP as OTEL_* says (authz[otel])",
    )
    serve.add_argument(
        "--dpop-replay-redis",
        metavar="URL",
        help="share DPoP proofs' jti values between replicas in Redis (redis://, rediss://, "
        "unix://; a password in it is never logged); default: remembered per process",
    )
    serve.add_argument(
        "--dpop-replay-redis-password-file",
        type=Path,
        metavar="FILE",
        help="file holding the password of --dpop-replay-redis (kept out of the URL and the "
        "process list)",
    )
    serve.add_argument(
        "--dpop-replay-timeout-ms",
        type=int,
        default=50,
        help="longest a Check waits for Redis; past it the request fails closed (503)",
    )
    serve.add_argument(
        "--dpop-replay-entries",
        type=int,
        default=500_000,
        help="per-process replay cache size (~150 bytes each); when full, the window narrows",
    )
    serve.add_argument(
        "--dpop-nonce-secret-file",
        type=Path,
        help="secret for DPoP server nonces, the same on every replica (default: random)",
    )
    serve.add_argument(
        "--dpop-nonce-seconds", type=int, default=120, help="a nonce lives one to two of these"
    )
    serve.add_argument(
        "--internal-token-issuer",
        metavar="URL",
        help="authz's issuer URL for internal tokens; its ops port serves "
        "/.well-known/openid-configuration and /.well-known/jwks.json under the URL's path",
    )
    serve.add_argument(
        "--internal-token-keys",
        type=Path,
        metavar="DIR",
        help="private JWKs (ES256/EdDSA) that sign internal tokens: a directory or mounted "
        "Secret, reread when it changes; the file 'active' may name the signing kid",
    )
    serve.add_argument(
        "--session-redis",
        metavar="URL",
        help="Redis for browser sign-in sessions (login.session.store: redis), shared by "
        "replicas: redis://HOST:PORT/DB, rediss://... (TLS) or unix:///PATH",
    )
    serve.add_argument(
        "--session-redis-password-file",
        type=Path,
        metavar="FILE",
        help="file holding the Redis password (kept out of the URL and the process list)",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--log-format", default="json", choices=("json", "console"))

    check = sub.add_parser(
        "check", help="explain the decision for one request (offline, or by a running server)"
    )
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("--policy-dir", type=Path, help="decide with this policy directory")
    where.add_argument(
        "--server",
        help="ask a running server: its ops URL (http://HOST:PORT, needs --debug-endpoints)",
    )
    where.add_argument(
        "--grpc",
        metavar="ADDR",
        help="send the Check to a running server's gRPC port (HOST:PORT or unix:PATH) and "
        "show its answer, as Envoy would get it",
    )
    where.add_argument(
        "--http",
        metavar="ADDR",
        help="send it to a running server's HTTP check port (HOST:PORT), as Envoy's "
        "http_service would, and show the answer",
    )
    check.add_argument(
        "--token", help="the token (or set AUTHZ_TOKEN, which stays out of shell history)"
    )
    check.add_argument("--method", default="GET")
    check.add_argument("--host", default="localhost")
    check.add_argument("--path", default="/")
    check.add_argument(
        "--scheme",
        default="https",
        choices=("https", "http"),
        help="the scheme the proxy reports (a DPoP proof's htu names it)",
    )
    check.add_argument("--header", action="append", default=[], help="extra 'Name: value' header")
    check.add_argument("--context", action="append", default=[], help="context extension key=value")
    check.add_argument(
        "--source-address", default="", help="the connection's source address (ipBlocks rules)"
    )
    check.add_argument(
        "--destination-port", type=int, default=0, help="the destination port (ports rules)"
    )
    check.add_argument(
        "--peer-principal",
        default="",
        help="the mTLS peer's principal, e.g. spiffe://cluster.local/ns/a/sa/b (principals rules)",
    )
    check.add_argument(
        "--peer-certificate",
        type=Path,
        metavar="PEM_FILE",
        help="the mTLS client certificate (clientCertificate rules)",
    )
    check.add_argument("--workload-labels", type=_labels, default={})
    check.add_argument("--realm", default="authz")
    check.add_argument(
        "--expect-status",
        type=int,
        metavar="STATUS",
        help="exit 0 when the answer has this HTTP status (200 for allow), else 1",
    )
    check.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the --grpc or --http answer"
    )
    check.add_argument(
        "--tls-ca-file",
        type=Path,
        help="--grpc/--http over TLS: the CA bundle to verify the server with",
    )
    check.add_argument("--tls-cert-file", type=Path, help="over mTLS: the client certificate")
    check.add_argument("--tls-key-file", type=Path, help="over mTLS: its private key")
    check.add_argument(
        "--tls-server-name", help="over TLS: the name the server certificate must carry"
    )

    # Arguments pass through untouched (no option parsing here): authz.proxyconfig.cli parses
    # them, imported only for this command so `authz serve` never loads envoy-data-plane.
    proxy_config = sub.add_parser(
        "proxy-config",
        help="print Envoy/Istio/NGINX/Caddy configuration for authz, or --check an Envoy file",
        add_help=False,
        prefix_chars="\0",
    )
    proxy_config.add_argument("args", nargs="*")

    convert = sub.add_parser(
        "convert", help="translate other authorization configuration into authz objects"
    ).add_subparsers(dest="convert_command", required=True)
    istio = convert.add_parser(
        "istio",
        help="RequestAuthentication and AuthorizationPolicy YAML -> JWTIssuer and AuthzPolicy "
        "YAML (stdout), with a report of what is not translated exactly (stderr)",
    )
    istio.add_argument("files", nargs="+", metavar="FILE", help="YAML files, or - for stdin")
    istio.add_argument(
        "--host",
        action="append",
        default=[],
        help="target these hosts instead of the Istio workload selectors (a gateway)",
    )
    istio.add_argument(
        "--dry-run",
        action="store_true",
        help="dryRun: true on every policy, to run next to Istio before switching",
    )
    istio.add_argument(
        "--xff-num-trusted-hops",
        type=int,
        metavar="N",
        help="Istio's numTrustedProxies: needed to translate remoteIpBlocks and remote.ip",
    )
    istio.add_argument("-o", "--output", help="write the YAML here instead of stdout")
    istio.add_argument("--report", help="write the report here instead of stderr")

    lint = sub.add_parser(
        "lint",
        help="check policy files, stdin or a live cluster: every problem in one pass",
        description="Check policy objects as the server would build them (schema, regexes, "
        "references, key material) without fetching keys, and warn about rules that can "
        "never match. Exit status: 0 no errors, 1 policy invalid (or warnings with "
        "--strict), 2 usage error, 3 the cluster could not be read.",
    )
    lint.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="policy files or directories (every .yaml/.yml below); '-' reads stdin",
    )
    lint.add_argument(
        "--kubernetes", action="store_true", help="check the objects in the live cluster"
    )
    lint.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster)")
    lint.add_argument(
        "--namespaces", type=_names, default=(), help="ns1,ns2: only these (default: all)"
    )
    lint.add_argument("--output", choices=("text", "json"), default="text")
    lint.add_argument("--strict", action="store_true", help="warnings fail the run too")

    webhook = sub.add_parser(
        "webhook",
        help="validating admission webhook: `authz lint`'s checks when objects are applied",
    )
    webhook.add_argument("--addr", default="0.0.0.0:9443", help="HOST:PORT for HTTPS")
    _tls_arguments(webhook, "the webhook (required: the API server calls it over HTTPS)")
    webhook.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster)")
    webhook.add_argument(
        "--watch-namespaces", type=_names, default=(), help="ns1,ns2 (default: all)"
    )
    webhook.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )

    keys = sub.add_parser("keys", help="dev helper: signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    generate = keys.add_parser("generate", help="write a private JWK and a public JWKS")
    generate.add_argument("--alg", default="RS256")
    generate.add_argument("--kid", default="dev-1")
    generate.add_argument("--out", type=Path, required=True)

    token = sub.add_parser("token", help="dev helper: tokens").add_subparsers(
        dest="token_command", required=True
    )
    mint = token.add_parser("mint", help="sign a token with a private JWK")
    mint.add_argument("--key", type=Path, required=True, help="private JWK file")
    mint.add_argument("--iss", required=True)
    mint.add_argument("--sub", default="dev-user")
    mint.add_argument("--aud", action="append", default=[])
    mint.add_argument("--scope", help="space-delimited scopes")
    mint.add_argument(
        "--ttl", type=int, default=3600, help="seconds until exp (negative: already expired)"
    )
    mint.add_argument("--typ", help="JOSE typ header, e.g. at+jwt")
    mint.add_argument(
        "--claim",
        action="append",
        default=[],
        help="extra claim k=v (v parsed as JSON if it can be)",
    )
    return parser


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from authz.observe import logs
    from authz.server import NONCE_SECRET_ENV, serve, well_known
    from authz.settings import ServeSettings
    from authz.workers import Supervisor

    logs.configure(args.log_level, json_output=args.log_format == "json")
    if args.policy_dir is None and not args.kubernetes:
        raise UsageError("authz serve: give --policy-dir, --kubernetes, or both")
    if args.grpc_addr is None and args.http_check_addr is None:
        raise UsageError("authz serve: --grpc-addr off and --http-check-addr off: nothing to serve")
    if (args.internal_token_issuer is None) != (args.internal_token_keys is None):
        raise UsageError(
            "authz serve: --internal-token-issuer and --internal-token-keys go together"
        )
    # Before any worker starts: a missing or empty password file is a usage error.
    replay_redis = _replay_redis_url(args.dpop_replay_redis, args.dpop_replay_redis_password_file)
    tls = _tls_files(args, "serve")  # before any worker starts
    if args.workers > 1:
        if args.grpc_addr is not None and args.grpc_addr.startswith("unix:"):
            raise UsageError("authz serve: --workers needs a TCP --grpc-addr (or --grpc-addr off)")
        # Workers must accept each other's DPoP nonces: one secret for all of them.
        os.environ.setdefault(NONCE_SECRET_ENV, secrets.token_hex(32))
        serve_args = argv[argv.index("serve") + 1 :]
        drain = args.shutdown_delay + args.shutdown_grace
        grpc_port = int(args.grpc_addr.rpartition(":")[2]) if args.grpc_addr else None
        return Supervisor(
            serve_args,
            args.workers,
            args.http_addr,
            drain,
            grpc_port,
            check_addr=args.http_check_addr,
            well_known=well_known(args.internal_token_issuer, args.internal_token_keys),
        ).run()
    return serve(
        ServeSettings(
            policy_dir=args.policy_dir,
            grpc_addr=args.grpc_addr,
            tls=tls,
            http_check_addr=args.http_check_addr,
            http_proxy_secret_file=args.http_proxy_secret_file,
            http_addr=args.http_addr,
            realm=args.realm,
            default_allow=args.default_action == "allow",
            workload_labels=args.workload_labels,
            threads=args.threads,
            cache_entries=args.cache_entries,
            cache_mib=args.cache_mib,
            max_token_bytes=args.max_token_bytes,
            shutdown_delay=args.shutdown_delay,
            shutdown_grace=args.shutdown_grace,
            debug_endpoints=args.debug_endpoints,
            tracing=args.tracing,
            kubernetes=args.kubernetes,
            kubeconfig=args.kubeconfig,
            watch_namespaces=args.watch_namespaces,
            leader_election_namespace=args.leader_election_namespace,
            leader_election_id=args.leader_election_id,
            dpop_replay_redis=replay_redis,
            dpop_replay_timeout_ms=args.dpop_replay_timeout_ms,
            dpop_replay_entries=args.dpop_replay_entries,
            dpop_nonce_secret_file=args.dpop_nonce_secret_file,
            dpop_nonce_seconds=args.dpop_nonce_seconds,
            internal_token_issuer=args.internal_token_issuer,
            internal_token_keys=args.internal_token_keys,
            session_redis=args.session_redis,
            session_redis_password_file=args.session_redis_password_file,
        )
    )


def _replay_redis_url(url: str | None, password_file: Path | None) -> str | None:
    """The DPoP replay cache's Redis URL with the password from its file put in. The cache
    takes a URL; built here, the password stays in this process's memory: never in argv
    (the `--workers` supervisor passes the file's path on, each worker reads it) and never
    logged."""
    from urllib.parse import quote, urlsplit, urlunsplit

    if password_file is None:
        return url
    if url is None:
        raise UsageError("authz serve: --dpop-replay-redis-password-file needs --dpop-replay-redis")
    password = password_file.read_text(encoding="utf-8").removesuffix("\n")
    if not password:
        raise ValueError(f"{password_file} is empty; a Redis password must not be")
    parts = urlsplit(url)
    if parts.password is not None:
        raise UsageError(
            "authz serve: --dpop-replay-redis has a password already: give it in the URL "
            "or in --dpop-replay-redis-password-file, not both"
        )
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def _load(policy_dir: Path, labels: dict[str, str], *, fetch_keys: bool) -> tuple[Any, Any]:
    """Build a store from the directory; with `fetch_keys`, wait for remote keys' first fetch
    (each is bounded by its issuer's fetch timeout: discovery plus JWKS, at most 2 x 60 s)."""
    from authz.keys.remote import KeyManager
    from authz.observe import logs
    from authz.policy.files import DirectorySource
    from authz.policy.store import PolicyStore

    logs.configure("critical")  # problems, key errors included, are in the command's output
    store = PolicyStore(labels, KeyManager(start=fetch_keys))
    source = DirectorySource(policy_dir)
    result = source.scan()
    store.update(result.objects, result.failures)
    if fetch_keys:
        store.keys.wait_attempted(timeout=125)
    return store, result


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """The connection `authz check` describes, as KnownConnection's fields."""
    certificate = ""
    if args.peer_certificate is not None:
        from urllib.parse import quote

        # as Envoy sends it: URL-encoded PEM
        certificate = quote(args.peer_certificate.read_text(encoding="ascii"), safe="")
    return {
        "source_address": args.source_address,
        "destination_port": args.destination_port,
        "peer_principal": args.peer_principal,
        "peer_certificate": certificate,
    }


def _client_tls(args: argparse.Namespace) -> Any:
    """ClientTLS for `check --grpc/--http` from the --tls-* options, or None."""
    from authz.client import ClientTLS

    if args.tls_ca_file is None:
        if args.tls_cert_file or args.tls_key_file or args.tls_server_name:
            raise UsageError("authz check: the --tls-* options need --tls-ca-file")
        return None
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        raise UsageError("authz check: give both --tls-cert-file and --tls-key-file")
    return ClientTLS(args.tls_ca_file, args.tls_cert_file, args.tls_key_file, args.tls_server_name)


def _check(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("AUTHZ_TOKEN")
    headers = _pairs(args.header, ":", "header")
    context = _pairs(args.context, "=", "context")
    connection = _connection(args)
    tls = _client_tls(args)
    if args.grpc:
        from authz.client import call, check_request

        request = check_request(
            method=args.method,
            host=args.host,
            path=args.path,
            headers=headers,
            context=context,
            token=token,
            **connection,
        )
        try:
            out = call(args.grpc, request, timeout=args.timeout, tls=tls)
        except OSError as exc:
            print(f"authz check: {exc}", file=sys.stderr)
            return 2
    elif args.http:
        from authz.client import call_http

        if any(connection.values()):
            raise UsageError(
                "authz check: an HTTP check carries no connection attributes: --source-address, "
                "--destination-port, --peer-principal and --peer-certificate need --grpc, "
                "--server or --policy-dir"
            )

        try:
            out = call_http(
                args.http,
                method=args.method,
                host=args.host,
                path=args.path,
                headers=headers,
                token=token,
                timeout=args.timeout,
                tls=tls,
            )
        except OSError as exc:
            print(f"authz check: {exc}", file=sys.stderr)
            return 2
    elif args.server:
        from authz.observe.debug import remote_explain

        try:
            out = remote_explain(
                args.server,
                method=args.method,
                host=args.host,
                path=args.path,
                headers=headers,
                context=context,
                token=token,
                connection=connection,
            )
        except OSError as exc:
            print(f"authz check: {args.server}: {exc}", file=sys.stderr)
            return 2
    else:
        from authz.request.assembly import pipeline
        from authz.request.cache import TokenCache
        from authz.request.explain import explain
        from authz.request.view import KnownConnection

        store, result = _load(args.policy_dir, args.workload_labels, fetch_keys=True)
        problems = [*result.file_errors] + [
            f"{s.key}: {p}" for s in store.statuses.values() for p in s.problems
        ]
        out = explain(
            pipeline(store, TokenCache(max_entries=0), realm=args.realm),
            method=args.method,
            host=args.host,
            path=args.path,
            headers=headers,
            context=context,
            token=token,
            problems=problems,
            connection=KnownConnection(**connection),
            scheme=args.scheme,
        )
    print(json.dumps(out, indent=2))
    if args.expect_status is not None:
        return 0 if out["status"] == args.expect_status else 1
    return 0 if out["decision"] == "allow" else 1


def _lint(args: argparse.Namespace) -> int:
    from authz.lint import report
    from authz.lint.findings import check
    from authz.lint.inputs import (
        InputError,
        Inputs,
        as_cluster_changes,
        read_cluster,
        read_paths,
    )
    from authz.observe import logs

    logs.configure("critical")  # every problem is in the report
    if not args.paths and not args.kubernetes:
        raise UsageError("authz lint: give files or directories, '-' for stdin, or --kubernetes")
    try:
        inputs = read_paths(args.paths) if args.paths else Inputs()
    except InputError as exc:
        raise UsageError(f"authz lint: {exc}") from None
    if args.kubernetes:
        try:
            cluster = read_cluster(args.kubeconfig, args.namespaces)
        except InputError as exc:
            print(f"authz lint: {exc}", file=sys.stderr)
            return report.UNAVAILABLE
        inputs = as_cluster_changes(
            inputs, cluster.items, cluster.read_secret, cluster.read_configmap
        )
        inputs.notes += cluster.notes
    checked = check(inputs.objects, inputs.failures, inputs.errors, inputs.notes)
    render = report.as_json if args.output == "json" else report.text
    print(render(checked, strict=args.strict))
    return report.exit_code(checked, strict=args.strict)


def _keys_generate(args: argparse.Namespace) -> int:
    from authz.devtools import write_key_files

    try:
        secret, verifier = write_key_files(args.out, args.alg, args.kid)
    except (FileExistsError, ValueError) as exc:
        print(f"authz keys generate: {exc}", file=sys.stderr)
        return 2
    if secret == verifier:
        print(
            f"wrote {secret} (a shared HMAC secret: whoever verifies can sign; keep it 0600 "
            f"and point the issuer's jwksFile at it)"
        )
    else:
        print(f"wrote {secret} (private, keep secret) and {verifier} (public JWKS)")
    return 0


def _claim_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _token_mint(args: argparse.Namespace) -> int:
    from authz.devtools import mint_token

    now = int(time.time())
    claims: dict[str, Any] = {"iss": args.iss, "sub": args.sub, "iat": now, "exp": now + args.ttl}
    if args.ttl < 0:
        claims["iat"] = now + args.ttl - 60
    if args.aud:
        claims["aud"] = args.aud[0] if len(args.aud) == 1 else args.aud
    if args.scope:
        claims["scope"] = args.scope
    claims.update({k: _claim_value(v) for k, v in _pairs(args.claim, "=", "claim").items()})
    private = json.loads(args.key.read_text(encoding="utf-8"))
    print(mint_token(private, claims, typ=args.typ))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command. No traceback reaches the user: a usage problem exits 2 with one
    line; anything unexpected exits 70 with one line (AUTHZ_DEBUG=1 shows the traceback)."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        return _run(args, argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:  # a file named on the command line, bad JSON in it
        print(f"authz {args.command}: {_describe(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("AUTHZ_DEBUG"):
            raise
        print(
            f"authz {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(run with AUTHZ_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 70


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def _webhook(args: argparse.Namespace) -> int:
    from authz.admission.run import run_webhook
    from authz.observe import logs
    from authz.policy.cluster import api_client

    tls = _tls_files(args, "webhook", required=True)
    host, _, port = args.addr.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"authz webhook: --addr {args.addr!r} is not HOST:PORT")
    logs.configure(args.log_level)
    from kubernetes.config.config_exception import ConfigException

    try:
        api = api_client(args.kubeconfig)
    except ConfigException as exc:
        raise UsageError(f"authz webhook: kubeconfig: {exc}") from None
    return run_webhook(
        api,
        (host.strip("[]") or "0.0.0.0", int(port)),
        tls,
        namespaces=args.watch_namespaces,
    )


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "serve":
        return _serve(args, argv)
    if args.command == "webhook":
        return _webhook(args)
    if args.command == "check":
        return _check(args)
    if args.command == "lint":
        return _lint(args)
    if args.command == "proxy-config":
        from authz.proxyconfig.cli import main as proxy_config

        return proxy_config(args.args)
    if args.command == "convert":
        from authz.convert.cli import istio

        return istio(args)
    if args.command == "keys":
        return _keys_generate(args)
    return _token_mint(args)


if __name__ == "__main__":
    sys.exit(main())
