"""A real Kubernetes control plane for tests, like controller-runtime's envtest.

:class:`ControlPlane` runs a real etcd and a real kube-apiserver (both built by
:mod:`tests.support.testbin`) on free loopback ports, with its own CA, serving certificate,
service-account signing key and static bearer tokens::

    with ControlPlane(users={"alice": ["team-a"]}) as cp:
        with cp.api_client() as api:                       # admin (system:masters)
            CoreV1Api(api).create_namespace(...)
        cp.apply([crd, obj])                               # server-side apply, fieldManager authz-tests
        status, body = cp.request("GET", "/version", token=cp.token_for("alice", ["team-a"]))
        cp.restart_apiserver()                             # same ports, certs, etcd and data

Only etcd and the API server run: no controller-manager (no garbage collection, no default
ServiceAccount or its token controller, namespaces stay Terminating), no scheduler, no kubelet.
The API itself is real: CRDs, CEL validation, watches, RBAC, status subresources, leases,
TokenRequest and service-account OIDC discovery.

Service-account tokens: issuer ``https://127.0.0.1:<port>`` (:attr:`ControlPlane.issuer`),
discovery at ``/.well-known/openid-configuration`` and keys at ``/openid/v1/jwks`` on the API
server. Both need authentication by default (RBAC grants ``system:service-account-issuer-
discovery`` to service accounts only); :meth:`ControlPlane.allow_anonymous_oidc_discovery`
binds that role to ``system:unauthenticated`` the way clusters that publish their issuer do.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import enum
import io
import json
import os
import secrets
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from kubernetes import client as k8s

from tests.support import testbin
from tests.support.managed import ManagedServer
from tests.support.pki import CA, pem_cert, pem_key
from tests.support.procs import Process, ProcessError, free_port, wait_for_http

FIELD_MANAGER = "authz-tests"
ADMIN_USER = "authz-test-admin"
ADMIN_GROUPS = ("system:masters",)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
OIDC_ANONYMOUS_BINDING = "authz-tests:anonymous-oidc-discovery"
# The API server needs ~20-60 s on 2 cores (CRD/aggregator/RBAC bootstrap post-start hooks).
DEFAULT_STARTUP_TIMEOUT = float(os.environ.get("AUTHZ_KUBE_STARTUP_TIMEOUT", "90"))

Manifest = dict[str, Any]


class KubeError(RuntimeError):
    """An API request made by the harness failed (status and body in the message)."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> {status}: {message}")


class _Admin(enum.Enum):
    TOKEN = "admin"


@dataclass(frozen=True)
class StaticUser:
    name: str
    groups: tuple[str, ...]
    token: str


# -- PKI -----------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_pki(d: Path) -> None:
    """CA, API server serving cert (SANs: loopback + in-cluster names), SA signing key."""
    ca = CA.create("authz-tests-ca", days=7)
    in_cluster = (
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    srv_key, srv_cert = ca.serving(
        "kube-apiserver",
        dns=["localhost", *in_cluster],
        ips=["127.0.0.1", "::1", KUBERNETES_SERVICE_IP],
        days=7,
    )
    # RSA like real clusters, so consumers of the JWKS see RS256 service-account tokens.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": pem_cert(ca.cert),
        "apiserver.crt": pem_cert(srv_cert),
        "apiserver.key": pem_key(srv_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
        if name.endswith(".key"):
            (d / name).chmod(0o600)


# -- the control plane ---------------------------------------------------------------------


class ControlPlane(ManagedServer):
    """etcd + kube-apiserver on free loopback ports. See the module docstring.

    ``users`` pre-registers static bearer-token users (name -> groups); they are written to
    the API server's ``--token-auth-file`` at start. :meth:`token_for` also registers unknown
    users while the control plane is not running yet.
    """

    def __init__(
        self,
        users: Mapping[str, Sequence[str]] | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        extra_apiserver_args: Sequence[str] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.startup_timeout = startup_timeout
        self.admin = StaticUser(ADMIN_USER, ADMIN_GROUPS, secrets.token_urlsafe(32))
        self._users: dict[str, StaticUser] = {}
        for name, groups in (users or {}).items():
            self._register(name, groups)
        self.etcd: Process | None = None
        self.apiserver: Process | None = None
        self.etcd_port = 0
        self.etcd_peer_port = 0
        self.secure_port = 0
        self.apiserver_start_seconds: float | None = None  # last (re)start, for reporting
        self._discovery: dict[str, list[dict[str, Any]]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self.apiserver is not None:
            raise ProcessError("control plane already started")
        etcd_bin = testbin.path("etcd")
        testbin.path("kube-apiserver")  # build both before any port is picked
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="authz-kube-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "certs").mkdir(exist_ok=True)
        _write_pki(self.workdir)
        self._write_token_file()
        self.etcd_port, self.etcd_peer_port, self.secure_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        try:
            self.etcd = Process(
                [
                    etcd_bin,
                    "--name=authz-tests",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                    f"--initial-cluster=authz-tests=http://127.0.0.1:{self.etcd_peer_port}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                name="etcd",
            ).start()
            wait_for_http(f"http://127.0.0.1:{self.etcd_port}/health", 30.0, proc=self.etcd)
            self._write_kubeconfig()
            self.start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the API server, then etcd, and delete the work dir (if we made it). Idempotent.
        (So ``cleanup`` has nothing more to do.)"""
        self.stop_apiserver()
        if self.etcd is not None:
            self.etcd.stop()
            self.etcd.cleanup()
            self.etcd = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def start_apiserver(self, timeout: float | None = None) -> None:
        """Start the API server (same port, certs and etcd as before) and wait for /readyz."""
        if self.apiserver is not None:
            raise ProcessError("kube-apiserver already running")
        started = time.monotonic()
        self.apiserver = Process(
            [testbin.path("kube-apiserver"), *self._apiserver_args()], name="kube-apiserver"
        ).start()
        self.wait_ready(timeout if timeout is not None else self.startup_timeout)
        self.apiserver_start_seconds = time.monotonic() - started
        self._discovery.clear()

    def stop_apiserver(self, *, kill: bool = False) -> None:
        """Stop the API server: SIGTERM with a grace period, or SIGKILL at once (``kill``)."""
        if self.apiserver is None:
            return
        self.apiserver.stop(grace=0 if kill else 20.0)
        self.apiserver.cleanup()
        self.apiserver = None

    def restart_apiserver(self, *, kill: bool = False, timeout: float | None = None) -> None:
        """Stop and start the API server only; etcd (and so all data) stays up."""
        self.stop_apiserver(kill=kill)
        self.start_apiserver(timeout)

    def wait_ready(self, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self.apiserver is not None and not self.apiserver.alive:
                raise ProcessError(
                    f"kube-apiserver exited with code {self.apiserver.returncode}\n"
                    + self.apiserver.tail(60)
                )
            try:
                status, body = self.request("GET", "/readyz", timeout=2.0, check=False)
                if status == 200:
                    return
                last = f"{status}: {str(body)[-300:]}"
            except OSError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                tail = self.apiserver.tail(60) if self.apiserver is not None else ""
                raise ProcessError(
                    f"kube-apiserver not ready after {timeout:.0f}s (last: {last})\n{tail}"
                )
            time.sleep(0.25)

    @property
    def started(self) -> bool:
        return self.apiserver is not None

    def report_failure(self) -> None:
        if self.apiserver is not None:
            self.apiserver.print_tail(60)

    # -- where things are --------------------------------------------------------------------

    def _dir(self) -> Path:
        if self.workdir is None:
            raise ProcessError("control plane not started")
        return self.workdir

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    @property
    def issuer(self) -> str:
        """The service-account token issuer (``iss`` of TokenRequest JWTs)."""
        return self.url

    @property
    def ca_path(self) -> Path:
        """PEM of the CA that signed the API server's serving certificate."""
        return self._dir() / "ca.crt"

    @property
    def kubeconfig_path(self) -> Path:
        """kubeconfig with the admin token and the CA (TLS verified)."""
        return self._dir() / "kubeconfig"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    # -- users and clients ---------------------------------------------------------------------

    def _register(self, name: str, groups: Iterable[str]) -> StaticUser:
        user = StaticUser(name, tuple(groups), secrets.token_urlsafe(32))
        if name in self._users or name == ADMIN_USER:
            raise ValueError(f"user {name!r} already registered")
        self._users[name] = user
        return user

    @property
    def users(self) -> dict[str, StaticUser]:
        return dict(self._users)

    def token_for(self, user: str, groups: Sequence[str] = ()) -> str:
        """Bearer token of a static user. Unknown users can only be added before start()
        (the token file is read at API server start): pass ``users=`` to the constructor
        or call this before :meth:`start`."""
        known = self._users.get(user)
        if known is None:
            if self.apiserver is not None or self.etcd is not None:
                raise KeyError(
                    f"user {user!r} is not registered: static tokens are read at start; "
                    f"pre-register it with ControlPlane(users={{{user!r}: [...]}})"
                )
            known = self._register(user, groups)
        if set(known.groups) != set(groups):
            raise KeyError(f"user {user!r} is registered with groups {list(known.groups)}")
        return known.token

    def _write_token_file(self) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for i, u in enumerate([self.admin, *self._users.values()]):
            row = [u.token, u.name, f"uid-{i}"]
            if u.groups:
                row.append(",".join(u.groups))
            w.writerow(row)
        path = self._dir() / "tokens.csv"
        path.write_text(buf.getvalue())
        path.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode(self.ca_path.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "authz-tests",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": ca,
                        "insecure-skip-tls-verify": False,
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin.token}}],
            "contexts": [
                {"name": "authz-tests", "context": {"cluster": "authz-tests", "user": ADMIN_USER}}
            ],
            "current-context": "authz-tests",
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig_path.chmod(0o600)

    def api_client(self) -> k8s.ApiClient:
        """A ``kubernetes.client.ApiClient`` for the admin, loaded from :attr:`kubeconfig_path`.
        Close it (``with cp.api_client() as api:``)."""
        from kubernetes import config

        api: k8s.ApiClient = config.new_client_from_config(config_file=str(self.kubeconfig_path))
        return api

    def client_for(self, user: str, groups: Sequence[str] = ()) -> k8s.ApiClient:
        """An ApiClient authenticating as a pre-registered static user."""
        return self._client(self.token_for(user, groups))

    def client_with_token(self, token: str) -> k8s.ApiClient:
        """An ApiClient with any bearer token (e.g. a service-account JWT)."""
        return self._client(token)

    def _client(self, token: str) -> k8s.ApiClient:
        cfg = k8s.Configuration(host=self.url)
        cfg.ssl_ca_cert = str(self.ca_path)
        cfg.verify_ssl = True
        cfg.api_key = {"authorization": f"Bearer {token}"}
        return k8s.ApiClient(cfg)

    # -- raw REST ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | _Admin | None = _Admin.TOKEN,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        check: bool = True,
    ) -> tuple[int, Any]:
        """One HTTPS request to the API server; returns ``(status, parsed JSON or text)``.

        By default the admin token is sent; ``token=None`` sends no credentials
        (anonymous), a string is sent as the bearer token. ``check`` raises :class:`KubeError` on a non-2xx status."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        # "*/*" too: /openid/v1/jwks answers only application/jwk-set+json (406 otherwise).
        hdrs = {"Accept": "application/json, */*", **(headers or {})}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = content_type
        if token is not None:
            bearer = self.admin.token if isinstance(token, _Admin) else token
            hdrs["Authorization"] = f"Bearer {bearer}"
        req = urllib.request.Request(url, data=data, method=method, headers=hdrs)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:  # noqa: S310
                status, raw = int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                status, raw = int(exc.code), exc.read()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        if check and not 200 <= status < 300:
            raise KubeError(method, path, status, parsed)
        return status, parsed

    # -- server-side apply -----------------------------------------------------------------------

    def _resources(self, api_version: str, refresh: bool = False) -> list[dict[str, Any]]:
        if refresh or api_version not in self._discovery:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            status, body = self.request("GET", prefix, check=False)
            self._discovery[api_version] = body.get("resources", []) if status == 200 else []
        return self._discovery[api_version]

    def resource_path(self, doc: Mapping[str, Any], *, name: bool = True) -> str:
        """REST path of ``doc`` (apiVersion/kind/metadata) found through API discovery."""
        api_version, kind = doc["apiVersion"], doc["kind"]
        meta = doc.get("metadata", {})
        resource = None
        for refresh in (False, True):
            resource = next(
                (
                    r
                    for r in self._resources(api_version, refresh)
                    if r.get("kind") == kind and "/" not in r["name"]
                ),
                None,
            )
            if resource is not None:
                break
        if resource is None:
            raise KeyError(f"the API server serves no {kind} in {api_version}")
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = prefix
        if resource["namespaced"]:
            path += f"/namespaces/{meta.get('namespace') or 'default'}"
        path += f"/{resource['name']}"
        if name:
            path += f"/{meta['name']}"
        return path

    def apply(
        self,
        manifest_docs: Iterable[Mapping[str, Any] | None],
        *,
        field_manager: str = FIELD_MANAGER,
        force: bool = True,
        dry_run: bool = False,
        wait_established: float = 30.0,
    ) -> list[Manifest]:
        """Server-side apply each document (``None`` docs, as from ``yaml.safe_load_all``,
        are skipped); returns the objects the server stored. A CustomResourceDefinition is
        waited on until Established, so later documents may be its custom resources."""
        applied: list[Manifest] = []
        for doc in manifest_docs:
            if not doc:
                continue
            query = {"fieldManager": field_manager, "force": "true" if force else "false"}
            if dry_run:
                query["dryRun"] = "All"
            path = self.resource_path(doc)
            _, obj = self.request(
                "PATCH", path, dict(doc), query=query, content_type="application/apply-patch+yaml"
            )
            applied.append(obj)
            if doc["kind"] == "CustomResourceDefinition" and not dry_run:
                self.wait_crd_established(doc["metadata"]["name"], wait_established)
        return applied

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> Manifest:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        deadline = time.monotonic() + timeout
        while True:
            _, crd = self.request("GET", path)
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                group = crd["spec"]["group"]
                for v in crd["spec"]["versions"]:
                    self._discovery.pop(f"{group}/{v['name']}", None)
                return dict(crd)
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {timeout}s: {conditions}")
            time.sleep(0.1)

    def delete(self, doc: Mapping[str, Any], *, missing_ok: bool = True) -> None:
        status, body = self.request("DELETE", self.resource_path(doc), check=False)
        if not (200 <= status < 300 or (missing_ok and status == 404)):
            raise KubeError("DELETE", self.resource_path(doc), status, body)

    # -- conveniences -----------------------------------------------------------------------------

    def allow_anonymous_oidc_discovery(self) -> None:
        """Let unauthenticated clients read ``/.well-known/openid-configuration`` and
        ``/openid/v1/jwks`` (bind the built-in ``system:service-account-issuer-discovery``
        ClusterRole to ``system:unauthenticated``). Idempotent; waits until it takes effect."""
        self.apply(
            [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": OIDC_ANONYMOUS_BINDING},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "system:service-account-issuer-discovery",
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Group",
                            "name": "system:unauthenticated",
                        }
                    ],
                }
            ]
        )
        deadline = time.monotonic() + 10.0
        while self.request("GET", "/openid/v1/jwks", token=None, check=False)[0] != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("anonymous OIDC discovery still forbidden after 10s")
            time.sleep(0.1)

    def _apiserver_args(self) -> list[str]:
        d = self._dir()
        return [
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={d / 'certs'}",
            f"--tls-cert-file={d / 'apiserver.crt'}",
            f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--secure-port={self.secure_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer={self.issuer}",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            *self.extra_apiserver_args,
        ]


@contextlib.contextmanager
def running_control_plane(
    users: Mapping[str, Sequence[str]] | None = None, **kwargs: Any
) -> Iterator[ControlPlane]:
    """``with running_control_plane(users=...) as cp:`` - start, yield, stop."""
    cp = ControlPlane(users, **kwargs)
    with cp:
        yield cp
