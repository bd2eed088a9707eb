"""The shipped install artifacts agree with their sources and with each other.

- charts/authz/crds/, manifests/crds.yaml and manifests/install.yaml are exactly what
  `make manifests` renders now (from authz/policy/schema.py and the chart).
- manifests/install.yaml applies to the real kube-apiserver.
- The Istio examples name the Service and port the chart ships, use only fields Istio has
  (its CRDs' schemas, via dry-run on the real API server, and its mesh-config proto), and
  refer to providers the mesh config defines; the example policies pass `authz lint` and
  the CRDs.
- The chart's NOTES and the docs site's install pages (docs/install/) point at the same
  files, service and ports.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import generated, helm, kube_fixtures, manifests, upstream_crds
from tests.support.kube import ControlPlane

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users


@pytest.fixture(scope="module", autouse=True)
def _prebuilt() -> None:
    """Build helm and fetch the upstream CRD modules before the first test, outside
    pytest-timeout's per-test budget (a cold machine needs minutes, once)."""
    with kube_fixtures.alarm_paused():
        helm.binary()
        upstream_crds.module_dir(*upstream_crds.ISTIO_API)


REPO = helm.REPO_ROOT
ISTIO_DIR = REPO / "manifests" / "istio"
INSTALL_DOCS = REPO / "docs" / "install"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def install_docs() -> list[dict[str, Any]]:
    return _docs(REPO / manifests.INSTALL_FILE)


@pytest.fixture(scope="module")
def service(install_docs: list[dict[str, Any]]) -> dict[str, Any]:
    """What manifests/install.yaml ships: Service name, namespace, FQDN and ports."""
    svc = helm.find(install_docs, "Service")
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    namespace = svc["metadata"]["namespace"]
    return {
        "name": svc["metadata"]["name"],
        "namespace": namespace,
        "fqdn": f"{svc['metadata']['name']}.{namespace}.svc.cluster.local",
        "grpc": ports["grpc"],
        "http": ports["http"],
        "http-check": ports["http-check"],
    }


@pytest.fixture(scope="module")
def mesh_providers() -> dict[str, dict[str, Any]]:
    mesh = _docs(ISTIO_DIR / "meshconfig.yaml")[0]["meshConfig"]
    return {p["name"]: p for p in mesh["extensionProviders"]}


# -- generated files are current --------------------------------------------------------------


def test_generated_files_are_current(tmp_path: Path) -> None:
    """Fails when authz/policy/schema.py or the chart changed without `make manifests`."""
    stale = generated.stale(manifests.render(tmp_path), tmp_path, REPO)
    extra = {p.name for p in (REPO / manifests.CRDS_DIR).glob("*.yaml")} - {
        p.name for p in (tmp_path / manifests.CRDS_DIR).glob("*.yaml")
    }
    assert not extra, f"stale CRD files {sorted(extra)}: run make manifests"
    assert not stale, "generated files are stale: run make manifests\n" + "\n\n".join(stale)


def test_install_yaml_is_namespace_crds_and_the_default_chart(
    install_docs: list[dict[str, Any]],
) -> None:
    assert install_docs[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": helm.NAMESPACE, "labels": install_docs[0]["metadata"]["labels"]},
    }
    crds = [d for d in install_docs if d["kind"] == "CustomResourceDefinition"]
    assert crds == _docs(REPO / manifests.CRDS_FILE)
    assert [d["spec"]["names"]["kind"] for d in crds] == [
        "JWTIssuer",
        "ClusterJWTIssuer",
        "AuthzPolicy",
        "HostGrant",
        "TokenRevocation",
    ]
    namespaced = [
        d
        for d in install_docs
        if d["kind"]
        not in {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    ]
    assert all(d["metadata"]["namespace"] == helm.NAMESPACE for d in namespaced)


def test_install_yaml_applies_to_the_api_server(
    control_plane: ControlPlane, install_docs: list[dict[str, Any]]
) -> None:
    """`kubectl apply --server-side -f manifests/install.yaml`, as the header says."""
    namespace, crds = (
        install_docs[0],
        [d for d in install_docs if d["kind"] == "CustomResourceDefinition"],
    )
    rest = [d for d in install_docs if d is not namespace and d not in crds]
    control_plane.apply([namespace])
    manifests.install_crds(control_plane, crds)
    control_plane.apply(rest, dry_run=True)
    control_plane.apply(rest)
    path = f"/apis/apps/v1/namespaces/{helm.NAMESPACE}/deployments/{helm.RELEASE}"
    assert control_plane.request("GET", path)[1]["spec"]["replicas"] == 2


# -- Istio examples --------------------------------------------------------------------------


def test_istio_examples_parse() -> None:
    files = sorted(ISTIO_DIR.glob("*.yaml"))
    assert {p.name for p in files} == {
        "meshconfig.yaml",
        "meshconfig-http.yaml",
        "authorizationpolicy.yaml",
        "sidecar-local-provider.yaml",
        "policies.yaml",
    }
    for path in files:
        assert _docs(path), path


def test_meshconfig_points_at_the_shipped_service(
    mesh_providers: dict[str, dict[str, Any]], service: dict[str, Any]
) -> None:
    central = mesh_providers["authz"]["envoyExtAuthzGrpc"]
    assert central["service"] == service["fqdn"]
    assert central["port"] == service["grpc"]
    for provider in mesh_providers.values():
        grpc = provider["envoyExtAuthzGrpc"]
        assert grpc.get("failOpen", False) is False  # fail closed
        assert grpc["statusOnError"] == "503"
        assert re.fullmatch(r"\d+(\.\d+)?s", grpc["timeout"])


def test_http_meshconfig_points_at_the_shipped_http_check_port(service: dict[str, Any]) -> None:
    mesh = _docs(ISTIO_DIR / "meshconfig-http.yaml")[0]["meshConfig"]
    providers = {p["name"]: p["envoyExtAuthzHttp"] for p in mesh["extensionProviders"]}
    assert providers["authz"]["service"] == service["fqdn"]
    assert {p["port"] for p in providers.values()} == {service["http-check"]}
    http_fields = upstream_crds.mesh_config_fields("EnvoyExternalAuthorizationHttpProvider")
    for provider in providers.values():
        assert provider["pathPrefix"] == "/check/envoy"
        assert provider.get("failOpen", False) is False
        assert set(provider) <= http_fields, provider


def test_meshconfig_uses_only_istio_fields(mesh_providers: dict[str, dict[str, Any]]) -> None:
    """Field names from Istio's own mesh config proto (istio.io/api), camelCased."""
    mesh = _docs(ISTIO_DIR / "meshconfig.yaml")[0]
    assert set(mesh) == {"meshConfig"}
    assert set(mesh["meshConfig"]) <= upstream_crds.mesh_config_fields("MeshConfig")
    provider_fields = upstream_crds.mesh_config_fields("ExtensionProvider")
    grpc_fields = upstream_crds.mesh_config_fields("EnvoyExternalAuthorizationGrpcProvider")
    for provider in mesh_providers.values():
        assert set(provider) <= provider_fields, provider
        assert set(provider["envoyExtAuthzGrpc"]) <= grpc_fields, provider


def test_sidecar_provider_reaches_the_sidecar_the_chart_renders(
    mesh_providers: dict[str, dict[str, Any]],
) -> None:
    docs = _docs(ISTIO_DIR / "sidecar-local-provider.yaml")
    entry = helm.find(docs, "ServiceEntry")
    local = mesh_providers["authz-local"]["envoyExtAuthzGrpc"]
    assert local["service"] in entry["spec"]["hosts"]
    assert entry["spec"]["endpoints"] == [{"address": "127.0.0.1"}]
    assert local["port"] in [p["number"] for p in entry["spec"]["ports"]]
    sidecar = helm.template({"mode": "sidecar", "policies": {"p.yaml": "{}"}})
    patch = yaml.safe_load(helm.find(sidecar, "ConfigMap", "authz-sidecar")["data"]["patch.yaml"])
    args = patch["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert f"--grpc-addr=127.0.0.1:{local['port']}" in args


def test_authorization_policies_use_defined_providers(
    mesh_providers: dict[str, dict[str, Any]],
) -> None:
    policies = [
        d
        for path in ISTIO_DIR.glob("*.yaml")
        for d in _docs(path)
        if d.get("kind") == "AuthorizationPolicy"
    ]
    assert len(policies) == 3
    for policy in policies:
        assert policy["apiVersion"] == "security.istio.io/v1"
        assert policy["spec"]["action"] == "CUSTOM"
        assert policy["spec"]["provider"]["name"] in mesh_providers
        assert policy["spec"]["rules"], "CUSTOM without rules never calls the provider"


def test_example_policies_cover_the_gateway_hosts() -> None:
    """The AuthzPolicy example covers every host the gateway's CUSTOM policy sends to authz."""
    gateway = next(
        d
        for d in _docs(ISTIO_DIR / "authorizationpolicy.yaml")
        if d["metadata"]["name"] == "ingress-authz"
    )
    hosts = {
        h.split(":")[0].removesuffix(".")  # host, host:*, host. and host.:* are one host
        for rule in gateway["spec"]["rules"]
        for to in rule["to"]
        for h in to["operation"]["hosts"]
    }
    authz_policy = helm.find(_docs(ISTIO_DIR / "policies.yaml"), "AuthzPolicy")
    assert hosts <= set(authz_policy["spec"]["targets"]["hosts"])


def test_example_policies_pass_authz_lint(tmp_path: Path) -> None:
    shutil.copy(ISTIO_DIR / "policies.yaml", tmp_path / "policies.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "authz", "lint", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 object(s), no errors" in result.stdout


@pytest.fixture(scope="module")
def istio_cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The control plane with Istio's real AuthorizationPolicy and ServiceEntry CRDs and
    the authz CRDs, plus the namespaces the examples use."""
    istio = upstream_crds.istio_crds({"AuthorizationPolicy", "ServiceEntry"})
    ours = _docs(REPO / manifests.CRDS_FILE)
    manifests.install_crds(control_plane, [*istio, *ours])
    control_plane.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in ("istio-system", "shop")
        ]
    )
    yield control_plane


@pytest.mark.parametrize(
    "name", ["authorizationpolicy.yaml", "sidecar-local-provider.yaml", "policies.yaml"]
)
def test_istio_examples_pass_the_api_server(name: str, istio_cluster: ControlPlane) -> None:
    """Server-side dry run against Istio's and authz's real CRD schemas (CEL included)."""
    istio_cluster.apply(_docs(ISTIO_DIR / name), dry_run=True)


# -- NOTES and the install docs --------------------------------------------------------------------


# Not manifests/install.yaml's release: its objects are applied to the API server by another
# test, and helm refuses to "install" over objects it does not own, even in a dry run.
NOTES_RELEASE = NOTES_NAMESPACE = "authz-notes"


def _notes(cp: ControlPlane, values: dict[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install` prints it (a client-side dry run; helm still asks the API
    server for its version, so it gets the test control plane)."""
    args = ["install", NOTES_RELEASE, str(helm.CHART), "--namespace", NOTES_NAMESPACE]
    args += ["--dry-run=client", "--kubeconfig", str(cp.kubeconfig_path)]
    with_values = helm.values_file(values) if values else None
    if with_values is not None:
        args += ["--values", str(with_values)]
    out = helm.run(*args).stdout
    assert "NOTES:" in out
    return out.split("NOTES:", 1)[1]


def _yaml_block(text: str, start: str) -> Any:
    """The YAML snippet in ``text`` that begins with the line ``start`` (up to a blank line)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() == start)
    indent = len(lines[first]) - len(lines[first].lstrip())
    block = []
    for line in lines[first:]:
        if not line.strip() or len(line) - len(line.lstrip()) < indent:
            break  # a blank line or a dedent ends the snippet
        block.append(line)
    return yaml.safe_load("\n".join(line[indent:] for line in block))


def test_notes_tell_the_same_istio_wiring_as_the_examples(
    mesh_providers: dict[str, dict[str, Any]], control_plane: ControlPlane
) -> None:
    notes = _notes(control_plane)
    provider = _yaml_block(notes, "meshConfig:")["meshConfig"]["extensionProviders"][0]
    expected = copy.deepcopy(mesh_providers["authz"])
    expected["envoyExtAuthzGrpc"]["service"] = (
        f"{NOTES_RELEASE}.{NOTES_NAMESPACE}.svc.cluster.local"
    )
    assert provider == expected
    policy = _yaml_block(notes, "apiVersion: security.istio.io/v1")
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"]["name"] == "authz"

    sidecar_notes = _notes(control_plane, {"mode": "sidecar", "policies": {"p.yaml": "{}"}})
    local = _yaml_block(sidecar_notes, "meshConfig:")["meshConfig"]["extensionProviders"][0]
    assert local == mesh_providers["authz-local"]
    entry = _yaml_block(sidecar_notes, "apiVersion: networking.istio.io/v1")
    shipped = helm.find(_docs(ISTIO_DIR / "sidecar-local-provider.yaml"), "ServiceEntry")
    assert entry["spec"] == shipped["spec"]


def _install_section() -> str:
    """The install pages of the docs site, as one text."""
    pages = sorted(INSTALL_DOCS.glob("*.md"))
    assert pages, f"no install pages in {INSTALL_DOCS}"
    return "\n".join(p.read_text(encoding="utf-8") for p in pages)


def test_install_docs_name_shipped_files() -> None:
    section = _install_section()
    paths = set(re.findall(r"\b((?:charts|manifests|examples)/[\w./-]*[\w/])", section))
    assert paths, "the install section names no shipped file"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"the install docs name files that do not exist: {missing}"
    for required in (
        "charts/authz",
        "manifests/install.yaml",
        "manifests/istio/meshconfig.yaml",
        "manifests/istio/authorizationpolicy.yaml",
        "manifests/istio/policies.yaml",
        "manifests/istio/sidecar-local-provider.yaml",
        "examples/envoy/envoy.yaml",
    ):
        assert required in paths, f"the install section does not mention {required}"


def test_install_docs_use_the_shipped_service_and_ports(
    service: dict[str, Any], mesh_providers: dict[str, dict[str, Any]]
) -> None:
    section = _install_section()
    fqdns = set(re.findall(r"\b[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local\b", section))
    headless = helm.find(
        helm.template({"service": {"headless": True}}, release=helm.RELEASE),
        "Service",
        f"{service['name']}-headless",
    )
    headless_fqdn = f"{headless['metadata']['name']}.{service['namespace']}.svc.cluster.local"
    assert service["fqdn"] in fqdns and fqdns <= {service["fqdn"], headless_fqdn}, fqdns
    checks = {service["grpc"], service["http-check"]}
    for port in re.findall(r"svc\.cluster\.local:(\d+)", section):
        assert int(port) in checks
    for port in re.findall(r"127\.0\.0\.1:(\d+)", section):
        assert int(port) in checks  # the sidecar listens on the same port numbers
    documented_ports = {int(p) for p in re.findall(r"`(9\d{3})`", section)}
    assert documented_ports <= {*checks, service["http"]}, documented_ports
    # `helm install RELEASE charts/authz -n NAMESPACE` makes the Service the docs name.
    install = re.search(r"helm install (\S+) charts/authz -n (\S+)", section)
    assert install, "no `helm install RELEASE charts/authz -n NAMESPACE` command"
    release, namespace = install.groups()
    assert f"{release}.{namespace}.svc.cluster.local" == service["fqdn"]
    for name in re.findall(r"provider: \{name: ([\w-]+)\}", section):
        assert name in mesh_providers
    for name in re.findall(r"provider `([\w-]+)`", section):
        assert name in mesh_providers
    for match in re.finditer(r"`([\w.]+)`\s*\|\s*`([^`]*)`", section):
        key, default = match.groups()
        _check_documented_default(key, default)


def _check_documented_default(key: str, default: str) -> None:
    """A `| `key` | `default` |` row of the install docs' values table matches values.yaml."""
    node: Any = yaml.safe_load((helm.CHART / "values.yaml").read_text())
    schema: Any = json.loads((helm.CHART / "values.schema.json").read_text())
    for part in key.split("."):
        schema = schema.get("properties", {}).get(part)
        assert schema is not None, f"the docs document value {key}, which the chart does not have"
        node = node.get(part) if isinstance(node, dict) else None
    shown = default.split(maxsplit=1)[0]
    if shown == "unset":
        assert node is None, f"the docs say {key} is unset by default, values.yaml: {node!r}"
        return
    assert yaml.safe_load(shown) == node, (
        f"the docs say {key} defaults to {default}, values.yaml: {node!r}"
    )
