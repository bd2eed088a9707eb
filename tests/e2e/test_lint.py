"""`authz lint` as a CI pipeline runs it: every error of a set of files in one pass, a single
file, stdin or the live cluster as input, `--output json`, exit codes 0/1/2/3, warnings
for rules that can never match; and no CLI command answers bad input with a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.policy import crd, schema
from tests.e2e.conftest import REPO_ROOT, child_env
from tests.support import kube_fixtures
from tests.support.kube import ControlPlane
from tests.support.tokens import signing_key

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

API = "authz.io/v1alpha1"
JWKS = {"keys": [signing_key("ES256", "k1")[1]]}


def authz(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authz", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        cwd=REPO_ROOT,
        input=stdin,
        check=False,
    )


def issuer(name: str = "idp", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "JWTIssuer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"issuer": "https://idp.example.com", "jwks": JWKS, **spec},
    }


def policy(name: str, *rules: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AuthzPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "targets": {"hosts": [f"{name}.example.com"]},
            "issuers": [{"name": "idp"}],
            "rules": list(rules) or [{"name": "all"}],
            **spec,
        },
    }


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Three files with five problems between them, and a good one."""
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA", "kid": "k"}]}
    write(tmp_path / "issuers.yaml", issuer(), issuer("broken-keys", jwks=jwks))
    write(
        tmp_path / "team-a" / "orders.yaml",
        policy("orders", {"name": "r", "claims": [{"path": "sub", "regex": "(unclosed"}]}),
        policy("schema", {"action": "sometimes"}),
    )
    write(
        tmp_path / "team-b" / "search.yaml",
        policy(
            "search",
            {"name": "q", "match": {"paths": ["/search?q=x"]}},
            {"name": "everything"},
            {"name": "late", "match": {"paths": ["/admin/**"]}},
            issuers=[{"name": "missing"}],
        ),
    )
    (tmp_path / "team-b" / "broken.yaml").write_text("kind: [\n")
    write(tmp_path / "good.yaml", policy("good"))
    return tmp_path


def test_every_problem_of_a_tree_in_one_pass_as_json(tree: Path) -> None:
    result = authz("lint", "--output", "json", str(tree))
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    found = {(f["level"], f["object"], f["field"]) for f in doc["findings"]}
    assert ("error", None, None) in found  # team-b/broken.yaml does not parse
    assert ("error", "JWTIssuer/default/broken-keys", "spec.jwks") in found
    assert ("error", "AuthzPolicy/default/orders", "spec.rules[0].claims[0].regex") in found
    assert ("error", "AuthzPolicy/default/schema", "spec.rules[0].action") in found
    assert ("warning", "AuthzPolicy/default/search", "spec.issuers[0]") in found
    assert ("warning", "AuthzPolicy/default/search", "spec.rules[0].match.paths[0]") in found
    assert ("warning", "AuthzPolicy/default/search", "spec.rules[2]") in found
    assert doc["ok"] is False
    assert (doc["errors"], doc["warnings"]) == (4, 3)
    by_object = {o["object"]: o for o in doc["objects"]}
    assert by_object["AuthzPolicy/default/good"]["accepted"] is True
    assert by_object["AuthzPolicy/default/schema"]["accepted"] is False
    unparsable = next(f for f in doc["findings"] if f["object"] is None)
    assert unparsable["origin"] == str(tree / "team-b" / "broken.yaml")
    regex = next(f for f in doc["findings"] if f["object"] == "AuthzPolicy/default/orders")
    assert regex["origin"] == str(tree / "team-a" / "orders.yaml")
    assert "invalid regular expression" in regex["message"]


def test_a_single_file_and_text_output(tree: Path) -> None:
    result = authz("lint", str(tree / "good.yaml"), str(tree / "issuers.yaml"))
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "3 object(s), errors found"
    assert f"ok    AuthzPolicy/default/good ({tree / 'good.yaml'})" in result.stdout
    assert f"ERROR {tree / 'issuers.yaml'}: JWTIssuer/default/broken-keys: spec.jwks:" in (
        result.stdout
    )


def test_stdin(tree: Path) -> None:
    good = yaml.safe_dump_all([issuer(), policy("good")])
    result = authz("lint", "-", stdin=good)
    assert (result.returncode, result.stdout.splitlines()[-1]) == (0, "2 object(s), no errors")
    result = authz("lint", "-", "--output", "json", stdin=good + "---\nkind: Nope\n")
    doc = json.loads(result.stdout)
    assert result.returncode == 1
    assert doc["findings"][0]["origin"] == "<stdin>"
    assert "kind: must be one of" in doc["findings"][0]["message"]


def test_warnings_pass_unless_strict(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.yaml",
        issuer(),
        policy("p", {"name": "dup", "match": {"paths": ["/a"]}}, {"match": {"paths": ["/a"]}}),
    )
    relaxed = authz("lint", str(path))
    assert relaxed.returncode == 0
    assert "WARN " in relaxed.stdout and "2 object(s), no errors, 1 warning(s)" in relaxed.stdout
    strict = authz("lint", "--strict", "--output", "json", str(path))
    assert strict.returncode == 1
    assert json.loads(strict.stdout)["ok"] is False


def test_duplicates_across_files_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", issuer(), policy("p"))
    write(tmp_path / "b.yaml", policy("p"))
    result = authz("lint", "--output", "json", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert result.returncode == 1
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["origin"] == str(tmp_path / "b.yaml")
    assert (
        finding["message"]
        == f"AuthzPolicy/default/p is already defined in {tmp_path / 'a.yaml'}; ignored"
    )


def test_the_live_cluster(control_plane: ControlPlane, tmp_path: Path) -> None:
    """Objects read from the API server and judged with the cluster's rules (tenancy: a
    namespaced policy needs a HostGrant for its host). The control plane is shared by the
    session, so only this test's namespace is looked at (cluster-scoped kinds are listed
    whole) and only its objects' findings are asserted."""
    ns = "lint-live"
    control_plane.apply([crd.crd(kind) for kind in schema.KINDS])
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}])
    grant = {
        "apiVersion": API,
        "kind": "HostGrant",
        "metadata": {"name": "lint-live"},
        "spec": {"hosts": ["*.lint.example"], "namespaces": [ns]},
    }
    idp = {**issuer("lint-idp"), "metadata": {"name": "lint-idp", "namespace": ns}}
    live = policy("lint-live", {"name": "late", "match": {"paths": ["/a//b"]}})
    live["metadata"]["namespace"] = ns
    live["spec"]["targets"] = {"hosts": ["live.lint.example"]}
    live["spec"]["issuers"] = [{"name": "lint-idp"}]
    control_plane.apply([grant, idp, live])
    kubeconfig = str(control_plane.kubeconfig_path)
    args = ["lint", "--kubernetes", "--kubeconfig", kubeconfig, "--namespaces", ns]
    result = authz(*args, "--output", "json")
    doc = json.loads(result.stdout)
    assert result.returncode == (0 if doc["ok"] else 1), result.stderr
    objects = {o["object"]: o for o in doc["objects"]}
    assert objects[f"AuthzPolicy/{ns}/lint-live"]["accepted"] is True
    assert objects[f"JWTIssuer/{ns}/lint-idp"]["accepted"] is True
    assert objects["HostGrant/lint-live"]["accepted"] is True
    (warning,) = [f for f in doc["findings"] if f["object"] == f"AuthzPolicy/{ns}/lint-live"]
    assert warning["origin"] == f"kubernetes AuthzPolicy/{ns}/lint-live"
    assert "(to '/a/b')" in warning["message"]
    # Files given with --kubernetes are pending changes, judged as cluster objects against
    # what the cluster holds: a broken issuer, and a host no HostGrant gives the namespace.
    broken = {**idp, "spec": {"issuer": "x"}}
    elsewhere = {**live, "spec": {**live["spec"], "targets": {"hosts": ["shop.example.org"]}}}
    change = write(tmp_path / "change.yaml", broken, elsewhere)
    result = authz(*args, "--output", "json", str(change))
    assert result.returncode == 1
    mine = {
        (f["object"], f["origin"], f["message"].split(": ", 1)[0])
        for f in json.loads(result.stdout)["findings"]
        if f["origin"] == str(change)
    }
    assert (f"JWTIssuer/{ns}/lint-idp", str(change), "spec") in mine
    messages = [f["message"] for f in json.loads(result.stdout)["findings"]]
    assert any(f"host 'shop.example.org' is not granted to namespace '{ns}'" in m for m in messages)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["lint"], 2, "give files or directories"),
        (["lint", "/nonexistent/policies"], 2, "/nonexistent/policies: no such file"),
        (["lint", "--output", "xml", "x"], 2, "invalid choice: 'xml'"),
        (["lint", "--kubernetes", "--kubeconfig", "/nonexistent"], 3, "kubeconfig"),
        (["serve"], 2, "give --policy-dir, --kubernetes, or both"),
        (["serve", "--policy-dir", ".", "--tls-cert-file", "x"], 2, "give both --tls-cert"),
        (
            ["serve", "--policy-dir", ".", "--tls-cert-file", "/x", "--tls-key-file", "/y"],
            2,
            "/x: no such file",
        ),
        (
            ["serve", "--policy-dir", ".", "--grpc-addr", "nonsense", "--http-addr", "127.0.0.1:0"],
            2,
            "cannot listen on nonsense",
        ),
        (
            ["serve", "--policy-dir", ".", "--workload-labels", "@/nonexistent"],
            2,
            "cannot read /nonexistent",
        ),
        (["serve", "--policy-dir", ".", "--threads", "many"], 2, "invalid int value"),
        (
            [
                "serve",
                "--policy-dir",
                ".",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--http-check-addr",
                "127.0.0.1:0",
                "--http-proxy-secret-file",
                "/dev/null",
            ],
            2,
            "authz serve: /dev/null is empty; a proxy secret must not be",
        ),
        (
            ["serve", "--policy-dir", ".", "--dpop-replay-redis-password-file", "/dev/null"],
            2,
            "authz serve: --dpop-replay-redis-password-file needs --dpop-replay-redis",
        ),
        (
            [
                "serve",
                "--policy-dir",
                ".",
                "--dpop-replay-redis",
                "redis://127.0.0.1:1/0",
                "--dpop-replay-redis-password-file",
                "/dev/null",
            ],
            2,
            "authz serve: /dev/null is empty; a Redis password must not be",
        ),
        (
            [
                "serve",
                "--policy-dir",
                ".",
                "--dpop-replay-redis",
                "redis://:inline@127.0.0.1:1/0",
                "--dpop-replay-redis-password-file",
                "README.md",
            ],
            2,
            "give it in the URL or in --dpop-replay-redis-password-file, not both",
        ),
        (["check", "--grpc", "127.0.0.1:1", "--timeout", "2"], 2, "UNAVAILABLE"),
        (["check", "--server", "ftp://x"], 2, "is not an http(s) URL"),
        (["check", "--policy-dir", ".", "--header", "no-colon"], 2, "must look like key:value"),
        (["token", "mint", "--key", "/nonexistent", "--iss", "x"], 2, "/nonexistent: No such file"),
        (["token", "mint", "--key", "README.md", "--iss", "x"], 2, "authz token:"),
        (["keys", "generate", "--alg", "XX", "--out", "/tmp"], 2, "unsupported algorithm"),
        (["proxy-config", "envoy", "--nope"], 2, "unrecognized arguments: --nope"),
        (["webhook"], 2, "--tls-cert-file and --tls-key-file are required"),
        (["webhook", "--tls-cert-file", "/x", "--tls-key-file", "/y"], 2, "/x: no such file"),
        (["nonsense"], 2, "invalid choice"),
    ],
)
def test_no_command_answers_bad_input_with_a_traceback(
    args: list[str], code: int, says: str
) -> None:
    result = authz(*args)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert says in result.stderr, result.stderr
