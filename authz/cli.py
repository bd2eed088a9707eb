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


def _labels(text: str) -> dict[str, str]:
    """`app=orders,tier=api` -> dict; the downward API file format (`k="v"` lines) also works."""
    out: dict[str, str] = {}
    if text.startswith("@"):
        text = ",".join(Path(text[1:]).read_text(encoding="utf-8").splitlines())
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
            raise SystemExit(f"authz: {what} {item!r} must look like key{sep}value")
        out[key.strip().lower() if what == "header" else key.strip()] = value.strip()
    return out


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

    # Arguments pass through untouched (no option parsing here): authz.proxyconfig.cli parses
    # them, imported only for this command so `authz serve` never loads envoy-data-plane.
    proxy_config = sub.add_parser(
        "proxy-config",
        help="print Envoy/Istio/NGINX/Caddy configuration for authz, or --check an Envoy file",
        add_help=False,
        prefix_chars="\0",
    )
    proxy_config.add_argument("args", nargs="*")

    lint = sub.add_parser("lint", help="validate a policy directory")
    lint.add_argument("policy_dir", type=Path)

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
        raise SystemExit("authz serve: give --policy-dir, --kubernetes, or both")
    if args.grpc_addr is None and args.http_check_addr is None:
        raise SystemExit("authz serve: --grpc-addr off and --http-check-addr off: nothing to serve")
    if (args.internal_token_issuer is None) != (args.internal_token_keys is None):
        raise SystemExit(
            "authz serve: --internal-token-issuer and --internal-token-keys go together"
        )
    if args.workers > 1:
        if args.grpc_addr is not None and args.grpc_addr.startswith("unix:"):
            raise SystemExit("authz serve: --workers needs a TCP --grpc-addr (or --grpc-addr off)")
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
            dpop_replay_redis=args.dpop_replay_redis,
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


def _check(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("AUTHZ_TOKEN")
    headers = _pairs(args.header, ":", "header")
    context = _pairs(args.context, "=", "context")
    if args.grpc:
        from authz.client import call, check_request

        request = check_request(
            method=args.method,
            host=args.host,
            path=args.path,
            headers=headers,
            context=context,
            token=token,
        )
        try:
            out = call(args.grpc, request, timeout=args.timeout)
        except OSError as exc:
            print(f"authz check: {exc}", file=sys.stderr)
            return 2
    elif args.http:
        from authz.client import call_http

        try:
            out = call_http(
                args.http,
                method=args.method,
                host=args.host,
                path=args.path,
                headers=headers,
                token=token,
                timeout=args.timeout,
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
            )
        except OSError as exc:
            print(f"authz check: {args.server}: {exc}", file=sys.stderr)
            return 2
    else:
        from authz.request.assembly import pipeline
        from authz.request.cache import TokenCache
        from authz.request.explain import explain

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
            scheme=args.scheme,
        )
    print(json.dumps(out, indent=2))
    if args.expect_status is not None:
        return 0 if out["status"] == args.expect_status else 1
    return 0 if out["decision"] == "allow" else 1


def _lint(args: argparse.Namespace) -> int:
    store, result = _load(args.policy_dir, {}, fetch_keys=False)
    failed = bool(result.file_errors)
    for error in result.file_errors:
        print(f"ERROR {error}")
    for status in sorted(store.statuses.values(), key=lambda s: s.key):
        if status.accepted and not status.problems:
            print(f"ok    {status.key} ({status.origin})")
            continue
        failed = failed or not status.accepted
        level = "WARN " if status.accepted else "ERROR"
        for problem in status.problems:
            print(f"{level} {status.origin}: {status.key}: {problem}")
    print(f"{len(store.statuses)} object(s), {'errors found' if failed else 'no errors'}")
    return 1 if failed else 0


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
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args, argv)
    if args.command == "check":
        return _check(args)
    if args.command == "lint":
        return _lint(args)
    if args.command == "proxy-config":
        from authz.proxyconfig.cli import main as proxy_config

        return proxy_config(args.args)
    if args.command == "keys":
        return _keys_generate(args)
    return _token_mint(args)


if __name__ == "__main__":
    sys.exit(main())
