"""`authz check` and /debug/explain show the rule trace: every rule tried, in order, and why
each did not match (issue 12). The trace must agree with the decision the Check makes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz import cli
from authz.ops import OpsServer
from authz.policy.files import DirectorySource, load
from authz.policy.store import PolicyStore
from authz.request.view import KnownConnection, request_view
from authz.server import debug_handler
from tests.support.authz import check_server
from tests.support.docs import issuer, policy, rule, write
from tests.support.pki import CA, pem_cert
from tests.support.procs import http_request
from tests.support.snapshots import serve

REPO_ROOT = Path(__file__).resolve().parents[3]
RULES = [
    rule("health", paths=["/healthz"], action="allowAnonymous"),
    rule(
        "mesh",
        action="allowAnonymous",
        match={
            "paths": ["/internal/**"],
            "principals": ["spiffe://cluster.local/ns/ops/sa/*"],
            "ipBlocks": ["10.0.0.0/8"],
        },
    ),
    rule(
        "partners",
        action="allowAnonymous",
        match={
            "methods": ["GET"],
            "headers": [{"name": "x-partner", "present": True}],
            "clientCertificate": {"dnsSans": ["*.partners.example"]},
        },
    ),
    rule("writes", methods=["POST"], requireScopes={"allOf": ["write"]}),
]
DOCS = [issuer(), policy(rules=RULES, defaultAction="deny")]


def test_every_rule_tried_says_why_it_did_not_match() -> None:
    served = serve(*DOCS)
    connection = KnownConnection(
        source_address="192.0.2.1", peer_principal="spiffe://cluster.local/ns/ops/sa/cron"
    )
    view = request_view("GET", "api.example", "/internal/jobs", {}, {}, connection=connection)
    policy_ = served.snapshot.policies[0]
    trace = policy_.trace(view)
    assert [(t.rule, t.matched, t.failed) for t in trace] == [
        ("health", False, ("path '/internal/jobs' matches none of its paths",)),
        ("mesh", False, ("not: source address in [10.0.0.0/8]",)),
        (
            "partners",
            False,
            (
                "not: header x-partner present",
                "not: client certificate DNS SAN in [*.partners.example]",
            ),
        ),
        ("writes", False, ("method GET not in ['POST']",)),
    ]
    assert policy_.rule_for(view) is None


@pytest.mark.parametrize(
    ("method", "path", "source", "matched"),
    [
        ("GET", "/healthz", "", "health"),
        ("GET", "/internal/x", "10.1.1.1", "mesh"),
        ("POST", "/internal/x", "192.0.2.1", "writes"),
        ("GET", "/x", "10.1.1.1", None),
    ],
)
def test_the_trace_agrees_with_the_decision(
    method: str, path: str, source: str, matched: str | None
) -> None:
    policy_ = serve(*DOCS).snapshot.policies[0]
    connection = KnownConnection(
        source_address=source, peer_principal="spiffe://cluster.local/ns/ops/sa/cron"
    )
    view = request_view(method, "api.example", path, {}, {}, connection=connection)
    trace = policy_.trace(view)
    found = policy_.rule_for(view)
    assert (found.name if found else None) == matched
    assert [t.rule for t in trace if t.matched] == ([matched] if matched else [])
    assert all(t.failed for t in trace if not t.matched)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("trace")
    write(directory / "policies.yaml", *DOCS)
    return directory


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """`authz check` in process; its answer is the indented JSON object (an in-process
    server's one-line audit records may share the output)."""
    code = cli.main(["check", *args])
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("{\n") :])


def offline(*args: str) -> tuple[int, dict[str, Any]]:
    """`authz check --policy-dir` in a child process: it sets up the process's logging
    (structlog, globally) as the command does, which must not leak into other tests."""
    proc = subprocess.run(
        [sys.executable, "-m", "authz", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    return proc.returncode, json.loads(proc.stdout)


def test_authz_check_prints_the_trace_and_takes_the_connection(
    policy_dir: Path, tmp_path: Path
) -> None:
    base = ["--policy-dir", str(policy_dir), "--host", "api.example"]
    code, out = offline(*base, "--path", "/internal/x")
    assert code == 1 and out["reason"] == "no_rule"
    assert out["rules"][1] == {
        "rule": "mesh",
        "matched": False,
        "failed": [
            "not: source address in [10.0.0.0/8]",
            "not: peer principal matches one of [spiffe://cluster.local/ns/ops/sa/*]",
        ],
    }
    assert out["rules"][-1] == {"rule": "(default)", "action": "deny"}
    code, out = offline(
        *base,
        "--path",
        "/internal/x",
        "--source-address",
        "10.2.3.4",
        "--peer-principal",
        "spiffe://cluster.local/ns/ops/sa/cron",
    )
    assert (code, out["rule"], out["rules"][-1]) == (0, "mesh", {"rule": "mesh", "matched": True})
    _, cert = CA.create("partners").client("p", dns=["api.acme.partners.example"])
    (tmp_path / "client.pem").write_bytes(pem_cert(cert))
    code, out = offline(
        *base, "--header", "x-partner: acme", "--peer-certificate", str(tmp_path / "client.pem")
    )
    assert (code, out["rule"]) == (0, "partners")


@pytest.fixture(scope="module")
def url(policy_dir: Path) -> Iterator[str]:
    store = PolicyStore()
    load(DirectorySource(policy_dir), store)
    server = OpsServer("127.0.0.1:0", lambda: True, debug=debug_handler(store))
    server.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        store.close()


def test_debug_explain_shows_the_same_trace(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    body = {
        "host": "api.example",
        "path": "/internal/x",
        "connection": {
            "source_address": "10.2.3.4",
            "peer_principal": "spiffe://cluster.local/ns/ops/sa/cron",
        },
    }
    response = http_request(url, "POST", "/debug/explain", body=json.dumps(body).encode())
    out = response.json()
    assert response.status == 200 and out["rule"] == "mesh"
    assert [r["rule"] for r in out["rules"]] == ["health", "mesh"]
    bad = {"connection": {"destination_port": "80"}}
    response = http_request(url, "POST", "/debug/explain", body=json.dumps(bad).encode())
    assert response.status == 400
    # `authz check --server` sends the connection it is given
    code, out = run(
        capsys,
        "--server",
        url,
        "--host",
        "api.example",
        "--path",
        "/internal/x",
        "--source-address",
        "10.2.3.4",
        "--peer-principal",
        "spiffe://cluster.local/ns/ops/sa/cron",
    )
    assert (code, out["rule"]) == (0, "mesh")


def test_authz_check_grpc_sends_the_connection(
    policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--grpc` builds the CheckRequest Envoy would send, with the connection's attributes:
    the served answer depends on them as it would behind Envoy."""
    with check_server(policy_dir) as client:
        addr = f"127.0.0.1:{client.grpc_port}"
        base = ["--grpc", addr, "--host", "api.example", "--path", "/internal/x"]
        code, out = run(capsys, *base)
        assert (code, out["status"]) == (1, 403)
        principal = "spiffe://cluster.local/ns/ops/sa/cron"
        code, out = run(
            capsys, *base, "--source-address", "10.2.3.4", "--peer-principal", principal
        )
        assert (code, out["status"]) == (0, 200)


def test_debug_snapshot_lists_each_rules_conditions(url: str) -> None:
    response = http_request(url, "GET", "/debug/snapshot")
    [policy_] = response.json()["policies"]
    rules = {r["name"]: r for r in policy_["rules"]}
    assert "conditions" not in rules["health"]
    assert rules["mesh"]["conditions"] == [
        "source address in [10.0.0.0/8]",
        "peer principal matches one of [spiffe://cluster.local/ns/ops/sa/*]",
    ]


def test_connection_options_are_refused_over_http(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "--http", "http://127.0.0.1:1", "--source-address", "10.0.0.1"]
    assert cli.main(argv) == 2  # a usage error
    assert "an HTTP check carries no connection attributes" in capsys.readouterr().err
