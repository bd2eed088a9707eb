"""Caddy (built from its Go module into the test-binary cache) from a temp dir.

The caller gives the site blocks of a Caddyfile; this module puts a global options block in
front that keeps Caddy off the system and the network: no admin endpoint, no automatic HTTPS,
storage and logs in the temp dir, a short shutdown grace period. Even with ``admin off`` Caddy
writes ``autosave.json`` and ``instance.uuid`` under ``$XDG_CONFIG_HOME`` / ``$XDG_DATA_HOME``,
so HOME and both XDG variables point into the temp dir too. ``caddy validate`` runs first.

Caddyfiles are indented with tabs (Caddy warns about anything else). Sites should be written
``http://:PORT`` plus ``bind 127.0.0.1``: a site address with a host is also a Host matcher.

    site = forward_auth_site(listen_port=p, auth="127.0.0.1:9001", upstream="127.0.0.1:9002")
    with CaddyServer(site, port=p) as caddy:
        http_request(caddy.url, "GET", "/")
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Self

from tests.support import testbin
from tests.support.managed import ManagedServer
from tests.support.procs import Process, ProcessError, alarm_paused, scratch_dir, wait_for_tcp

_GLOBAL = """{{
\tadmin off
\tauto_https off
\tpersist_config off
\tgrace_period 2s
\tstorage file_system {dir}/data
\tlog {{
\t\toutput file {dir}/caddy.log
\t\tformat json
\t\tlevel INFO
\t}}
}}

"""


def forward_auth_site(
    *,
    listen_port: int,
    auth: str,
    upstream: str,
    auth_path: str = "/check/forward",
    identity_headers: tuple[str, ...] = ("X-Auth-Subject",),
) -> str:
    """A minimal ``forward_auth`` site block, for auth servers other than authz (authz's own,
    complete one is ``authz.proxyconfig.caddy.site``).

    Caddy sends each request's headers to ``auth`` (``host:port``) as a bodiless GET to
    ``auth_path`` plus the original query, with ``X-Forwarded-Method`` and ``X-Forwarded-Uri``;
    2xx lets it through to ``upstream`` with ``identity_headers`` copied from the auth
    response (a client-sent value is removed when the auth server sends none); any other
    answer is relayed to the client unchanged: status, ``WWW-Authenticate`` and body.
    """
    return "\n".join(
        [
            f"http://:{listen_port} {{",
            "\tbind 127.0.0.1",
            f"\tforward_auth {auth} {{",
            f"\t\turi {auth_path}",
            f"\t\tcopy_headers {' '.join(identity_headers)}",
            "\t}",
            f"\treverse_proxy {upstream}",
            "}",
            "",
        ]
    )


class CaddyServer(ManagedServer):
    """``with CaddyServer(sites, port=p) as caddy:``; SIGTERM on exit."""

    def __init__(self, sites: str, *, port: int, ready_timeout: float = 10.0) -> None:
        self.sites = sites
        self.port = port
        self.ready_timeout = ready_timeout
        self.dir: Path | None = None
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """Caddy's own JSON log so far (errors reaching the auth service or the upstream)."""
        return self.scratch_text("caddy.log")

    def start(self) -> Self:
        with alarm_paused():  # the first run builds Caddy (minutes), not a test's time
            caddy = testbin.path("caddy")
        self.dir = scratch_dir("caddy-")
        config = self.dir / "Caddyfile"
        config.write_text(_GLOBAL.format(dir=self.dir) + self.sites, encoding="utf-8")
        env = dict(os.environ)
        env.update(
            HOME=str(self.dir),
            XDG_CONFIG_HOME=str(self.dir / "config"),
            XDG_DATA_HOME=str(self.dir / "data"),
        )
        args = ["--config", str(config), "--adapter", "caddyfile"]
        check = subprocess.run(
            [caddy, "validate", *args], env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        if check.returncode != 0:
            self.cleanup()
            raise ProcessError(f"caddy validate rejected the Caddyfile:\n{check.stderr[-4000:]}")
        process = Process([caddy, "run", *args], name="caddy", env=env)
        self._run(
            process, lambda: wait_for_tcp("127.0.0.1", self.port, self.ready_timeout, proc=process)
        )
        return self

    def diagnostics(self) -> str:
        return self.log
