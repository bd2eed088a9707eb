"""A web app behind authz's browser sign-in, every part real: Envoy in front of the echo
upstream, `authz serve` with a policy whose `login` block names Ory Hydra, and Hydra with
the login/consent app (tests.support.hydra). Used by tests/e2e/test_browser_login.py and
by `make demo DEMO_LOGIN=1` (``python -m tests.support.login_site``).

    with ExitStack() as stack:
        provider = stack.enter_context(HydraServer(login_app=True))
        site = start_login_site(stack, provider)
        browser.driver.get(site.url("/hello"))      # -> Hydra's login form -> back, signed in

The policy (see :func:`login_policy`): `/signed-out` and `/public/**` are anonymous, `/api/**`
needs a session or token but never redirects (an API), everything else signs a browser in.
Identity headers: `x-auth-subject` (sub), `x-auth-email`, `x-auth-scopes`, `x-auth-expires`
(the ID token's exp: it changes when a refresh brings a new one). The session cookie is
stripped before the upstream (`stripAuthorization`), so the echo shows only identity.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.oidc.seal import KeyRing
from tests.support import docs
from tests.support.envoy import EnvoyProcess, envoy_bootstrap
from tests.support.hydra import HydraServer, OAuthClient
from tests.support.procs import Process, free_port, scratch_dir, wait_for_addr, wait_for_http

REPO_ROOT = Path(__file__).resolve().parents[2]
UPSTREAM_SCRIPT = REPO_ROOT / "examples" / "upstream.py"
SCOPES = ("openid", "offline_access", "email")
STARTUP_TIMEOUT = 30.0


@dataclass
class LoginSite:
    provider: HydraServer
    client: OAuthClient
    listen_port: int
    host: str
    policy_dir: Path
    keys: KeyRing  # the session key ring (a test opens cookies with it, as an operator could)
    authz: Process
    authz_http: str
    envoy: EnvoyProcess
    replicas: tuple[Process, ...] = ()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.listen_port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def callback(self) -> str:
        return self.url("/oauth2/callback")

    @property
    def signed_out(self) -> str:
        return self.url("/signed-out")


def login_policy(
    issuer: str, client: OAuthClient, listen_port: int, *, strip: bool = True, **login: Any
) -> list[dict[str, Any]]:
    """The Hydra issuer and the web app's policy (`login` entries override the block's;
    `strip`: the session cookie is removed before the upstream, which HTTP checks through
    Envoy cannot do when other cookies stay)."""
    block: dict[str, Any] = {
        "issuer": {"name": "hydra"},
        "clientId": client.client_id,
        "clientSecretFile": "client-secret",
        "scopes": list(SCOPES),
        "publicPort": listen_port,
        "loginPath": "/oauth2/login",
        "postLogoutRedirectUris": [f"http://127.0.0.1:{listen_port}/signed-out"],
        "waitMillis": 2000,
        "refreshBeforeSeconds": 2,
        "session": {"keysFile": "session-keys"},
        **login,
    }
    return [
        docs.issuer(
            "hydra", issuer, discovery=True, fetch={"allowInsecureHttp": True}, audiences=[]
        ),
        docs.policy(
            "web",
            issuers=["hydra"],
            login=block,
            rules=[
                docs.rule("public", paths=["/signed-out", "/public/**"], action="allowAnonymous"),
                docs.rule("api", paths=["/api/**"], login=False),
                docs.rule("app", paths=["/**"]),
            ],
            response={
                "headers": [
                    {"name": "x-auth-subject", "claim": "sub"},
                    {"name": "x-auth-email", "claim": "email"},
                    {"name": "x-auth-scopes", "claim": "$scopes"},
                    {"name": "x-auth-expires", "claim": "exp"},
                ],
                "stripAuthorization": strip,
            },
        ),
    ]


def start_login_site(
    stack: ExitStack,
    provider: HydraServer,
    *,
    listen_port: int | None = None,
    host: str = "127.0.0.1",
    login: Mapping[str, Any] | None = None,
    client_fields: Mapping[str, Any] | None = None,
    authz_args: Sequence[str] = (),
    envoy_timeout_ms: int = 3000,
    env: Mapping[str, str] | None = None,
    report: bool = True,
    transport: str = "grpc",
    replicas: int = 1,
) -> LoginSite:
    """Register a web client at Hydra, write the policy, start authz, the upstream and Envoy.
    `report`: print each process's log tail when it stops (pytest shows it for failures).
    `transport="http"`: Envoy asks authz over HTTP (http_service, `--browser-login`).
    `replicas`: that many authz processes on one policy, Envoy spreading checks round-robin
    (`site.authz` is the first; `site.replicas` all)."""
    stop = _stop if report else _stop_quietly
    hydra = provider.hydra
    port = listen_port or free_port()
    base = f"http://{host}:{port}"
    client = hydra.create_client(
        {
            "client_name": "web-app",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": " ".join(SCOPES),
            "redirect_uris": [f"{base}/oauth2/callback"],
            "post_logout_redirect_uris": [f"{base}/signed-out"],
            "token_endpoint_auth_method": "client_secret_basic",
            **(client_fields or {}),
        }
    )
    policy_dir = scratch_dir("login-site-")
    stack.callback(shutil.rmtree, policy_dir, ignore_errors=True)
    ring_text = base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
    (policy_dir / "session-keys").write_text(ring_text)
    (policy_dir / "client-secret").write_text(client.client_secret + "\n")
    overrides = {"postLogoutRedirectUris": [f"{base}/signed-out"], **(login or {})}
    documents = login_policy(hydra.issuer, client, port, strip=transport == "grpc", **overrides)
    docs.write(policy_dir / "policy.yaml", *documents)

    grpc = transport == "grpc"
    started: list[tuple[Process, str, str]] = []
    for _ in range(replicas):
        check_addr, http_port = f"127.0.0.1:{free_port()}", free_port()
        argv = [sys.executable, "-m", "authz", "serve", "--policy-dir", str(policy_dir)]
        argv += ["--grpc-addr", check_addr if grpc else "off"]
        argv += ["--http-check-addr", "off" if grpc else check_addr]
        argv += ["--http-addr", f"127.0.0.1:{http_port}", *authz_args]
        process = Process(argv, name="authz", env=_env(env), cwd=REPO_ROOT).start()
        stack.callback(stop, process)
        started.append((process, check_addr, f"http://127.0.0.1:{http_port}"))
    for process, check_addr, ops in started:
        wait_for_http(f"{ops}/readyz", STARTUP_TIMEOUT, proc=process)
        wait_for_addr(check_addr, STARTUP_TIMEOUT, proc=process)
    authz, check_addr, authz_http = started[0]

    upstream_port = free_port()
    upstream = Process(
        [sys.executable, str(UPSTREAM_SCRIPT), "--port", str(upstream_port)], name="upstream"
    ).start()
    stack.callback(stop, upstream)
    wait_for_http(f"http://127.0.0.1:{upstream_port}/", STARTUP_TIMEOUT, proc=upstream)

    admin_port = free_port()
    bootstrap = envoy_bootstrap(
        listen_port=port,
        admin_port=admin_port,
        authz_grpc=check_addr,
        upstream_port=upstream_port,
        timeout_ms=envoy_timeout_ms,
        transport=transport,
        browser_login=True,
        policy_routes={},
    )
    if replicas > 1:
        _spread(bootstrap, [addr for _, addr, _ in started])
    envoy = EnvoyProcess(bootstrap, admin_port=admin_port, ready_timeout=STARTUP_TIMEOUT)
    stack.callback(stop, envoy)
    envoy.start()
    return LoginSite(
        provider,
        client,
        port,
        host,
        policy_dir,
        KeyRing.parse(ring_text),
        authz,
        authz_http,
        envoy,
        tuple(p for p, _, _ in started),
    )


def _spread(bootstrap: dict[str, Any], addresses: Sequence[str]) -> None:
    """Every authz replica an endpoint of Envoy's authz cluster (round-robin)."""
    cluster = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "authz")
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    template = endpoints[0]
    endpoints[:] = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        socket_address = {"address": host, "port_value": int(port)}
        endpoints.append({**template, "endpoint": {"address": {"socket_address": socket_address}}})


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _stop(handle: Process | EnvoyProcess) -> None:
    proc = handle.process if isinstance(handle, EnvoyProcess) else handle
    handle.stop()
    if proc is not None:
        proc.print_tail(file=sys.stdout)
    handle.cleanup()


def _stop_quietly(handle: Process | EnvoyProcess) -> None:
    handle.stop()
    handle.cleanup()


def main(argv: list[str] | None = None) -> int:
    """`make demo DEMO_LOGIN=1`: the site on fixed ports; sign in as anyone in a browser.
    With --check (CI), a headless Chromium signs in as alice and the page is checked."""
    parser = argparse.ArgumentParser(description="authz browser sign-in demo")
    parser.add_argument("--port", type=int, default=8090, help="Envoy's listener")
    parser.add_argument("--check", action="store_true", help="sign in headless and check")
    parser.add_argument("--hold", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        provider = stack.enter_context(HydraServer(login_app=True))
        site = start_login_site(stack, provider, listen_port=args.port, report=False)
        print(f"sign-in demo: open {site.url('/hello')} and sign in as any user name")
        print(
            f"  Hydra (the provider) {provider.hydra.issuer}, login app {provider.app.url if provider.app else '?'}"
        )
        print(f"  sign out: {site.url('/oauth2/logout')}")
        failed = 0
        if args.check:
            failed = _check(site)
        if args.hold:
            print("running; press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 1 if failed else 0


def _check(site: LoginSite) -> int:
    from selenium.webdriver.common.by import By

    from tests.support.browser import Browser

    with Browser() as window:
        window.driver.get(site.url("/hello"))
        window.wait_for("#username", timeout=20)
        window.driver.find_element(By.ID, "username").send_keys("alice")
        window.driver.find_element(By.ID, "submit").click()
        window.wait_for_url(site.url("/hello"), timeout=20)
        text = window.driver.find_element(By.TAG_NAME, "body").text
        shot = window.screenshot("demo-signed-in")
    ok = '"x-auth-subject": "alice"' in text
    print(f"headless sign-in: {'ok' if ok else 'FAILED'}: the upstream saw alice ({shot})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
