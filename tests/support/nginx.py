"""NGINX (Debian's package) in the foreground from a temp dir, with the caller's ``http`` block.

The caller writes what goes inside ``http { ... }`` (upstreams, servers) and says which port
it listens on; this module adds everything that must not touch the system: pid, error and
access logs and every temp path inside the temp dir, ``-e`` for the startup error log (so
nginx never opens /var/log/nginx), ``daemon off``. The config is checked with ``nginx -t``
first, so a typo fails with nginx's own message.

Pitfall handled here: run as root, nginx's workers drop to ``nobody`` and must reach the temp
dirs (a 0700 dir makes request bodies larger than the buffer fail with 500), so the dir is
0755 (:func:`tests.support.procs.scratch_dir`).

    site = auth_request_site(listen_port=p, auth="127.0.0.1:9001", upstream="127.0.0.1:9002")
    with NginxServer(site, port=p) as nginx:
        http_request(nginx.url, "GET", "/")
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Self

from tests.support.managed import ManagedServer
from tests.support.procs import Process, ProcessError, scratch_dir, system_command, wait_for_tcp

_MAIN = """worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    default_type application/octet-stream;

{http}
}}
"""


def auth_request_site(
    *,
    listen_port: int,
    auth: str,
    upstream: str,
    auth_path: str = "/check/nginx",
    identity_headers: tuple[str, ...] = ("X-Auth-Subject",),
) -> str:
    """A minimal ``auth_request`` configuration for ``http { }``, for auth servers other than
    authz (authz's own, complete one is ``authz.proxyconfig.nginx.http_block``).

    Every request is first sent (as a bodiless GET to ``auth_path``, original method and
    URI in ``X-Original-Method`` / ``X-Original-URI``) to ``auth`` (``host:port``); 2xx lets it
    through to ``upstream`` with each of ``identity_headers`` set from the auth response (a
    client-sent value is always replaced, and dropped when the auth server sends none);
    401 and 403 go to the client with the auth server's ``WWW-Authenticate``. nginx copies that
    header by itself on a 401 only (adding it there as well sends it twice); for a 403
    (``insufficient_scope``) it is carried through ``auth_request_set`` to a named location.
    The body is nginx's own error page either way.
    """
    sets, passes = [], []
    for name in identity_headers:
        var = "auth_" + name.lower().replace("-", "_")
        sets.append(
            f"            auth_request_set ${var} $upstream_http_{name.lower().replace('-', '_')};"
        )
        passes.append(f"            proxy_set_header {name} ${var};")
    return "\n".join(
        [
            f"    upstream authz_auth {{ server {auth}; }}",
            f"    upstream authz_app {{ server {upstream}; }}",
            "    server {",
            f"        listen 127.0.0.1:{listen_port};",
            "        location / {",
            "            auth_request /_auth;",
            "            auth_request_set $auth_challenge $upstream_http_www_authenticate;",
            "            error_page 403 = @authz_forbidden;",
            *sets,
            *passes,
            "            proxy_set_header Host $host;",
            "            proxy_pass http://authz_app;",
            "        }",
            "        location @authz_forbidden {",
            "            add_header WWW-Authenticate $auth_challenge always;",
            "            return 403;",
            "        }",
            "        location = /_auth {",
            "            internal;",
            f"            proxy_pass http://authz_auth{auth_path};",
            "            proxy_pass_request_body off;",
            '            proxy_set_header Content-Length "";',
            "            proxy_set_header X-Original-URI $request_uri;",
            "            proxy_set_header X-Original-Method $request_method;",
            "            proxy_set_header X-Original-Host $host;",
            "            proxy_set_header X-Forwarded-Proto $scheme;",
            "            proxy_set_header Host $host;",
            "        }",
            "    }",
        ]
    )


class NginxServer(ManagedServer):
    """``with NginxServer(http_block, port=p) as nginx:``; SIGTERM (fast shutdown) on exit."""

    def __init__(self, http: str, *, port: int, ready_timeout: float = 10.0) -> None:
        self.http = http
        self.port = port
        self.ready_timeout = ready_timeout
        self.dir: Path | None = None
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        """nginx's error log so far (the auth subrequest's failures are explained there)."""
        return self.scratch_text("error.log")

    def start(self) -> Self:
        nginx = system_command("nginx", "nginx")
        self.dir = scratch_dir("nginx-")
        (self.dir / "tmp").mkdir()
        conf = self.dir / "nginx.conf"
        conf.write_text(_MAIN.format(dir=self.dir, http=self.http), encoding="utf-8")
        argv = [nginx, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")]
        test = subprocess.run(
            [*argv, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        if test.returncode != 0:
            self.cleanup()
            raise ProcessError(f"nginx -t rejected the config:\n{test.stderr}")
        process = Process([*argv, "-g", "daemon off;"], name="nginx")
        self._run(
            process, lambda: wait_for_tcp("127.0.0.1", self.port, self.ready_timeout, proc=process)
        )
        return self

    def diagnostics(self) -> str:
        return self.error_log
