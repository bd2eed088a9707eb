"""Build and cache the real upstream binaries the tests run (kube-apiserver, etcd, helm, ...).

None of them ships on PyPI or Debian, but all are Go modules the Go module proxy serves, so
each is built once per machine from its module into a cache *outside* the repo::

    ${AUTHZ_TESTBIN:-${XDG_CACHE_HOME:-~/.cache}/authz-testbin}/<name>-<version>/<name>

and reused afterwards. Each tool gets its own throwaway Go module (a temp dir with its own
go.mod), so the dependency graphs never mix, and is built with ``GOTOOLCHAIN=local
GOFLAGS=-mod=mod`` and ``CGO_ENABLED=0`` (Hydra: ``CGO_ENABLED=1`` for sqlite).

API::

    from tests.support import testbin
    apiserver = testbin.path("kube-apiserver")   # builds on first use, cached afterwards

``path`` holds an exclusive file lock per tool while it checks/builds, so parallel pytest
workers (or a concurrent ``make testbin``) never build the same binary twice. A failed build
raises :class:`BuildError` with the tail of the Go output (full log kept in the cache dir).

Prebuild from the command line (prints each build and its duration)::

    python -m tests.support.testbin all          # or: python -m tests.support.testbin etcd helm

Overrides: ``AUTHZ_TESTBIN_<NAME>`` (``-`` as ``_``, upper case, e.g.
``AUTHZ_TESTBIN_KUBE_APISERVER``) points at a prebuilt binary and skips the build;
``AUTHZ_GO`` selects the ``go`` command (default: ``go`` on PATH, else /usr/local/go/bin/go).

Build times in the table below were measured with ``all`` on the 2-core dev/CI machine from
empty Go module and build caches (go1.26.8): ~15 minutes in total, which leaves most of CI's
90-minute budget. A cold ``all`` (measured before Caddy joined) downloads ~2.6 GB of modules
(GOMODCACHE) and leaves ~3.7 GB of Go build cache (GOCACHE), both reused by later builds;
the binaries take ~360 MB with Caddy.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# -- version table -------------------------------------------------------------------------
# name            module@version                                          cold build, 2 cores
# kube-apiserver  k8s.io/kubernetes v1.36.3 (fallback v1.34.4)              341 s  (105 MB)
# etcd            go.etcd.io/etcd/server/v3 v3.6.16                           40 s   (27 MB)
# helm            helm.sh/helm/v3 v3.21.4                                    113 s   (59 MB)
# hydra           github.com/ory/hydra/v2 v2.3.0 (+ory/pop replace, CGO)     127 s   (42 MB)
# opa-envoy       github.com/open-policy-agent/opa-envoy-plugin v1.0.0-envoy  81 s   (38 MB)
# ghz             github.com/bojand/ghz v0.121.0                              54 s   (28 MB)
# kubeconform     github.com/yannh/kubeconform v0.7.0                          5 s   (10 MB)
# caddy           github.com/caddyserver/caddy/v2 v2.11.9 (own main package) 127 s   (58 MB)
# helm-docs       github.com/norwoodj/helm-docs v1.14.2                         8 s   (warm, after helm)
# promtool        github.com/prometheus/prometheus v0.316.0 (Prometheus 3.x)  463 s   (cold)
# (in this order, each reusing the earlier ones' module and build caches; 761 s in all
# before caddy, helm-docs and promtool, which were timed afterwards)

KUBERNETES_VERSION = "v1.36.3"
KUBERNETES_FALLBACK_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.21.4"
HYDRA_VERSION = "v2.3.0"
# The proxy here refuses every recent opa-envoy-plugin version (403, also for the version
# list); v1.0.0-envoy is served but has no checksum-database entry, so that one module is
# fetched with GONOSUMDB (its go.sum-recorded dependencies are still verified).
OPA_ENVOY_VERSION = "v1.0.0-envoy"
GHZ_VERSION = "v0.121.0"
KUBECONFORM_VERSION = "v0.7.0"
CADDY_VERSION = "v2.11.9"
# The chart README is generated from values.yaml's `# --` comments, as cert-manager's and
# external-dns' are.
HELM_DOCS_VERSION = "v1.14.2"
# The chart's PrometheusRule: `promtool check rules` parses every expression and
# `promtool test rules` fires each alert on synthetic series.
PROMETHEUS_VERSION = "v0.316.0"
# Kubernetes version helm assumes for .Capabilities when not talking to a cluster.
HELM_K8S_MAJOR, HELM_K8S_MINOR = "1", "36"
# ory/hydra v2.3.0's own go.mod replaces gobuffalo/pop with this ory fork; a dependency's
# replace directives are ignored, so the throwaway module repeats it.
ORY_POP = "github.com/ory/pop/v6@v6.2.1-0.20241121111754-e5dfc0f3344b"

OUTPUT_TAIL_LINES = 60


class BuildError(RuntimeError):
    """A Go build of a test binary failed; the message ends with the tail of its output."""


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    module: str  # module path required by the throwaway module
    package: str  # main package to build
    ldflags: tuple[str, ...] = ()  # besides -s -w
    tags: tuple[str, ...] = ()
    cgo: bool = False
    replaces: tuple[str, ...] = ()  # "old=new@version" for `go mod edit -replace`
    env: Mapping[str, str] = field(default_factory=dict)
    # Extra setup of the throwaway module before `go get` (kube-apiserver's staging dance).
    prepare: Callable[[Tool, Path, Mapping[str, str]], None] | None = None
    # Source of the throwaway module's own main package (built instead of ``package``, which
    # is then only what `go get` adds): for tools assembled from modules, like Caddy.
    main_go: str = ""
    fallback: Tool | None = None  # tried when this version fails to build
    version_args: tuple[str, ...] = ("--version",)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


# -- kube-apiserver ------------------------------------------------------------------------


def _k8s_ldflags(version: str) -> tuple[str, ...]:
    major, minor = version.removeprefix("v").split(".")[:2]
    flags: list[str] = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return tuple(flags)


_STAGING_RE = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[\w.\-/]+)\s*=>\s*\./staging/", re.M)
_GODEBUG_RE = re.compile(r"^\s*godebug\s+(?:\(\s*([^)]*)\)|(\S+))", re.M)


def _prepare_kubernetes(tool: Tool, workdir: Path, env: Mapping[str, str]) -> None:
    """k8s.io/kubernetes replaces every staging module (k8s.io/api, client-go, ...) with
    ./staging/src/...: dependencies' replaces are ignored, so `go get` would look for
    k8s.io/api v0.0.0. Point each at its published twin (v1.X.Y -> v0.X.Y) instead, and
    copy the upstream godebug settings."""
    info = json.loads(
        _run_go(["mod", "download", "-json", f"{tool.module}@{tool.version}"], workdir, env)
    )
    if info.get("Error"):
        raise BuildError(f"{tool.module}@{tool.version}: {info['Error']}")
    gomod = Path(info["GoMod"]).read_text()
    staging = sorted(set(_STAGING_RE.findall(gomod)))
    if not staging:
        raise BuildError(f"no ./staging replaces found in {info['GoMod']}")
    staging_version = "v0." + tool.version.removeprefix("v").split(".", 1)[1]
    edits = [f"-replace={mod}={mod}@{staging_version}" for mod in staging]
    for block, single in _GODEBUG_RE.findall(gomod):
        for setting in block.split() if block else [single]:
            edits.append(f"-godebug={setting}")
    _run_go(["mod", "edit", *edits], workdir, env)


def _kube_apiserver(version: str, fallback: Tool | None = None) -> Tool:
    return Tool(
        name="kube-apiserver",
        version=version,
        module="k8s.io/kubernetes",
        package="k8s.io/kubernetes/cmd/kube-apiserver",
        ldflags=_k8s_ldflags(version),
        prepare=_prepare_kubernetes,
        fallback=fallback,
    )


# -- caddy ---------------------------------------------------------------------------------

# Caddy's documented way to build with a chosen module set: a main package of one's own that
# imports caddycmd and the standard modules. Unlike `go install .../cmd/caddy@v`, where Caddy
# is the main module and `caddy version` says "unknown", Caddy is then a dependency and
# reports its real version.
_CADDY_MAIN = """package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() { caddycmd.Main() }
"""


# -- the table -----------------------------------------------------------------------------

_HELM_PKG = "helm.sh/helm/v3"
_HYDRA_CFG = "github.com/ory/hydra/v2/driver/config"
_OPA_VERSION_PKG = "github.com/open-policy-agent/opa/v1/version"  # OPA 1.x: v1/ packages

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        _kube_apiserver(KUBERNETES_VERSION, fallback=_kube_apiserver(KUBERNETES_FALLBACK_VERSION)),
        Tool(
            name="etcd",
            version=ETCD_VERSION,
            module="go.etcd.io/etcd/server/v3",
            package="go.etcd.io/etcd/server/v3",
        ),
        Tool(
            name="helm",
            version=HELM_VERSION,
            module=_HELM_PKG,
            package=f"{_HELM_PKG}/cmd/helm",
            ldflags=(
                f"-X {_HELM_PKG}/internal/version.version={HELM_VERSION}",
                f"-X {_HELM_PKG}/internal/version.gitTreeState=clean",
                f"-X {_HELM_PKG}/pkg/chartutil.k8sVersionMajor={HELM_K8S_MAJOR}",
                f"-X {_HELM_PKG}/pkg/chartutil.k8sVersionMinor={HELM_K8S_MINOR}",
                f"-X {_HELM_PKG}/pkg/lint/rules.k8sVersionMajor={HELM_K8S_MAJOR}",
                f"-X {_HELM_PKG}/pkg/lint/rules.k8sVersionMinor={HELM_K8S_MINOR}",
            ),
            version_args=("version", "--short"),
        ),
        Tool(
            name="hydra",
            version=HYDRA_VERSION,
            module="github.com/ory/hydra/v2",
            package="github.com/ory/hydra/v2",
            ldflags=(
                f"-X {_HYDRA_CFG}.Version={HYDRA_VERSION}",
                f"-X {_HYDRA_CFG}.Commit={HYDRA_VERSION}",
                f"-X {_HYDRA_CFG}.Date=2025-01-01T00:00:00Z",
            ),
            tags=("sqlite", "sqlite_omit_load_extension"),
            cgo=True,
            replaces=(f"github.com/gobuffalo/pop/v6={ORY_POP}",),
            version_args=("version",),
        ),
        Tool(
            name="opa-envoy",
            version=OPA_ENVOY_VERSION,
            module="github.com/open-policy-agent/opa-envoy-plugin",
            package="github.com/open-policy-agent/opa-envoy-plugin/cmd/opa-envoy-plugin",
            ldflags=(f"-X {_OPA_VERSION_PKG}.Version={OPA_ENVOY_VERSION.removeprefix('v')}",),
            env={"GONOSUMDB": "github.com/open-policy-agent/opa-envoy-plugin"},
            version_args=("version",),
        ),
        Tool(
            name="ghz",
            version=GHZ_VERSION,
            module="github.com/bojand/ghz",
            package="github.com/bojand/ghz/cmd/ghz",
            ldflags=(f"-X main.version={GHZ_VERSION}",),
        ),
        Tool(
            name="kubeconform",
            version=KUBECONFORM_VERSION,
            module="github.com/yannh/kubeconform",
            package="github.com/yannh/kubeconform/cmd/kubeconform",
            ldflags=(f"-X main.version={KUBECONFORM_VERSION}",),
            version_args=("-v",),
        ),
        Tool(
            name="caddy",
            version=CADDY_VERSION,
            module="github.com/caddyserver/caddy/v2",
            package="github.com/caddyserver/caddy/v2/cmd",
            main_go=_CADDY_MAIN,
            version_args=("version",),
        ),
        Tool(
            name="helm-docs",
            version=HELM_DOCS_VERSION,
            module="github.com/norwoodj/helm-docs",
            package="github.com/norwoodj/helm-docs/cmd/helm-docs",
            ldflags=(f"-X main.version={HELM_DOCS_VERSION.removeprefix('v')}",),
        ),
        Tool(
            name="promtool",
            version=PROMETHEUS_VERSION,
            module="github.com/prometheus/prometheus",
            package="github.com/prometheus/prometheus/cmd/promtool",
            ldflags=(f"-X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION}",),
        ),
    )
}


# -- locations -----------------------------------------------------------------------------


def cache_root() -> Path:
    explicit = os.environ.get("AUTHZ_TESTBIN")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "authz-testbin"


def binary_path(tool: Tool) -> Path:
    """Where ``tool``'s binary lives once built (whether or not it is built yet)."""
    return cache_root() / tool.key / tool.name


def go_command() -> str:
    explicit = os.environ.get("AUTHZ_GO")
    if explicit:
        return explicit
    found = shutil.which("go")
    if found:
        return found
    if os.access("/usr/local/go/bin/go", os.X_OK):
        return "/usr/local/go/bin/go"
    raise BuildError("no `go` command found (set AUTHZ_GO or put Go 1.26+ on PATH)")


def _override(name: str) -> Path | None:
    value = os.environ.get("AUTHZ_TESTBIN_" + name.upper().replace("-", "_"))
    return Path(value) if value else None


def _is_built(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


# -- building ------------------------------------------------------------------------------


def _go_env(tool: Tool) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("GOOS", "GOARCH"):
        env.pop(var, None)
    env.update(
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=mod",
        CGO_ENABLED="1" if tool.cgo else "0",
        GOWORK="off",
    )
    env.update(tool.env)
    return env


def _run_go(args: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path | None = None) -> str:
    """Run ``go args`` in ``cwd``; return stdout. On failure raise with the output tail."""
    argv = [go_command(), *args]
    proc = subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, text=True, check=False)
    if log is not None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()[-OUTPUT_TAIL_LINES:]
        where = f" (full log: {log})" if log is not None else ""
        raise BuildError(
            f"`go {' '.join(args)}` failed with exit code {proc.returncode}{where}:\n"
            + "\n".join(lines)
        )
    return proc.stdout


def _build(tool: Tool, dest: Path) -> None:
    """Build ``tool`` into ``dest`` (atomically: a temp name, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log = dest.parent / "build.log"
    log.write_text(f"# {tool.module}@{tool.version} -> {tool.package}\n", encoding="utf-8")
    env = _go_env(tool)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"testbin-{tool.name}-") as tmp:
        work = Path(tmp)
        _run_go(["mod", "init", f"authz-testbin/{tool.name}"], work, env, log)
        if tool.prepare is not None:
            tool.prepare(tool, work, env)
        if tool.replaces:
            _run_go(["mod", "edit", *(f"-replace={r}" for r in tool.replaces)], work, env, log)
        if tool.main_go:
            (work / "main.go").write_text(tool.main_go, encoding="utf-8")
        _run_go(["get", f"{tool.package}@{tool.version}"], work, env, log)
        if tool.main_go:
            _run_go(["mod", "tidy"], work, env, log)  # the imports main.go adds
        ldflags = " ".join(("-s", "-w", *tool.ldflags))
        args = ["build", "-trimpath", "-ldflags", ldflags]
        if tool.tags:
            args += ["-tags", ",".join(tool.tags)]
        partial = dest.with_name(f".{dest.name}.partial")
        target = "." if tool.main_go else tool.package
        _run_go([*args, "-o", str(partial), target], work, env, log)
        partial.replace(dest)
    info = {
        "name": tool.name,
        "version": tool.version,
        "module": tool.module,
        "package": tool.package,
        "go": _run_go(["env", "GOVERSION"], dest.parent, env).strip(),
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (dest.parent / "buildinfo.json").write_text(json.dumps(info, indent=2) + "\n")


@contextlib.contextmanager
def _locked(tool: Tool) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".{tool.key}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _failed_marker(tool: Tool) -> Path:
    return cache_root() / tool.key / "build-failed.txt"


def _ensure(tool: Tool, *, force: bool = False, retry_failed: bool = False) -> tuple[Path, bool]:
    """Return (binary, built_now) for ``tool``; build it under the lock if missing."""
    dest = binary_path(tool)
    if _is_built(dest) and not force:
        return dest, False
    with _locked(tool):
        if _is_built(dest) and not force:  # another worker built it while we waited
            return dest, False
        marker = _failed_marker(tool)
        if marker.exists() and not (force or retry_failed) and tool.fallback is not None:
            # Remembered failure: go straight to the fallback instead of rebuilding
            # (`python -m tests.support.testbin` retries it).
            raise BuildError(marker.read_text())
        try:
            _build(tool, dest)
        except BuildError as exc:
            dest.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(exc))
            raise
        marker.unlink(missing_ok=True)
        return dest, True


def ensure(
    name: str, *, force: bool = False, retry_failed: bool = False
) -> tuple[Path, Tool, bool]:
    """Like :func:`path`, also returning the Tool (version) actually used and whether it
    was built by this call."""
    override = _override(name)
    tool = TOOLS[name]
    if override is not None:
        return override, tool, False
    errors: list[str] = []
    candidate: Tool | None = tool
    while candidate is not None:
        try:
            binary, built = _ensure(candidate, force=force, retry_failed=retry_failed)
            return binary, candidate, built
        except BuildError as exc:
            errors.append(f"{candidate.key}: {exc}")
            candidate = candidate.fallback
    raise BuildError("\n\n".join(errors))


def path(name: str) -> Path:
    """The cached binary for ``name`` (a key of :data:`TOOLS`), built on first use."""
    if name not in TOOLS:
        raise KeyError(f"unknown test binary {name!r}; known: {', '.join(TOOLS)}")
    return ensure(name)[0]


def version_of(name: str) -> str:
    """The version that :func:`path` resolves to for ``name`` (the fallback if used)."""
    return ensure(name)[1].version


# -- CLI -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.testbin",
        description=f"Build the upstream test binaries into {cache_root()}.",
    )
    parser.add_argument("names", nargs="*", default=["all"], help=f"all or {', '.join(TOOLS)}")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    names = list(TOOLS) if "all" in args.names else args.names
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)} (known: {', '.join(TOOLS)})")
    failed = 0
    total = time.monotonic()
    for name in names:
        tool = TOOLS[name]
        print(f"testbin: {name} {tool.version} ...", flush=True)
        started = time.monotonic()
        try:
            binary, used, built = ensure(name, force=args.force, retry_failed=True)
        except BuildError as exc:
            failed += 1
            print(f"testbin: {name} FAILED after {time.monotonic() - started:.0f}s\n{exc}")
            continue
        took = time.monotonic() - started
        how = f"built in {took:.0f}s" if built else "cached"
        print(f"testbin: {name} {used.version} {how}: {binary}", flush=True)
    print(f"testbin: done in {time.monotonic() - total:.0f}s, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
