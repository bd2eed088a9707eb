"""`authz convert istio` on examples written after Istio's documentation: the converted
objects are valid and decide each request as Istio does (tests.support.istio_examples), and
what cannot be carried over exactly is reported and never made more permissive."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz import cli
from authz.convert.istio import Options, convert
from authz.policy.validate import validate_document
from authz.request.view import KnownConnection
from tests.support.istio_examples import EXAMPLES, Example
from tests.support.snapshots import bearer_token, check, serve


def converted(example: Example) -> tuple[list[dict[str, Any]], str, bool]:
    result = convert(example.docs(), Options(**example.options))
    return result.objects, result.report.render(), result.report.exact


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_converted_policies_decide_as_istio(example: Example) -> None:
    objects, report, exact = converted(example)
    for obj in objects:
        validate_document(obj, "converted")  # raises if authz would refuse it
    served = serve(*objects, workload_labels=dict(example.labels))
    assert not [s for s in served.statuses.values() if not s.accepted], served.statuses
    for case in example.cases:
        answer, outcome = check(
            served,
            method=case.method,
            host=case.host,
            path=case.path,
            headers=case.headers,
            token=bearer_token(kid=case.kid, **case.token) if case.token is not None else None,
            connection=KnownConnection(
                source_address=case.source,
                destination_port=case.port,
                peer_principal=case.principal,
            ),
        )
        assert answer.status == case.status, (case, outcome.decision, report)
    for expected in example.report:
        assert expected in report
    assert exact == example.exact, report


def test_a_missing_token_gets_a_challenge_not_rbac_403() -> None:
    example = next(e for e in EXAMPLES if e.name == "require-jwt")
    objects, _, _ = converted(example)
    answer, _ = check(serve(*objects, workload_labels={"app": "httpbin"}))
    assert dict(answer.headers)["www-authenticate"] == 'Bearer realm="authz"'


def _policy(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "AuthzPolicy" and o["metadata"]["name"] == name)


def test_the_shape_of_a_conversion() -> None:
    objects, _, _ = converted(next(e for e in EXAMPLES if e.name == "issuer-per-host"))
    issuers = [o for o in objects if o["kind"] == "JWTIssuer"]
    assert [i["metadata"]["name"] for i in issuers] == ["jwt", "other"]
    assert issuers[0]["spec"]["audiences"] == ["api"] and "jwks" in issuers[0]["spec"]
    spec = _policy(objects, "istio-app-httpbin")["spec"]
    assert spec["targets"] == {"workloadSelector": {"matchLabels": {"app": "httpbin"}}}
    assert spec["defaultAction"] == "deny"
    assert [(r["name"], r["match"], r["issuers"]) for r in spec["rules"]] == [
        ("httpbin-0", {"hosts": ["example.com"]}, [{"name": "jwt"}]),
        ("httpbin-1", {"hosts": ["another-host.com"]}, [{"name": "other"}]),
    ]
    assert spec["response"] == {"stripAuthorization": True}  # Istio drops the token


def test_deny_rules_come_first_and_namespace_policies_join_every_workload() -> None:
    docs = yaml.safe_load_all(
        """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: z-allow, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{to: [{operation: {paths: ["/public/*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a-deny, namespace: shop}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/public/secret"]}}]}]
"""
    )
    result = convert(list(docs))
    web = _policy(result.objects, "istio-app-web")["spec"]
    assert [(r["name"], r["action"]) for r in web["rules"]] == [
        ("a-deny-0", "deny"),
        ("z-allow-0", "allowAnonymous"),
    ]
    assert web["rules"][1]["match"] == {"pathPrefixes": ["/public/"]}
    assert web["dryRun"] is True
    namespace = _policy(result.objects, "istio-namespace")["spec"]
    assert namespace["defaultAction"] == "allowAnonymous" and "dryRun" not in namespace
    assert "istio.io/dry-run on some policies only" in result.report.render()


@pytest.mark.parametrize(
    ("operation", "match"),
    [
        ({"paths": ["/data"]}, {"paths": ["/data"]}),
        ({"paths": ["*.png"]}, {"paths": ["/**.png"]}),
        ({"paths": ["*/info"]}, {"paths": ["/**/info"]}),
        ({"paths": ["/foo/{*}/bar/{**}"]}, {"paths": ["/foo/{s2}/bar/{rest4=**}"]}),
        ({"paths": ["*"]}, None),
        ({"notPaths": ["/admin*"]}, {"notPaths": ["/admin**"]}),
        (
            {"hosts": ["*.example.com", "API.example.com"]},
            {"hosts": ["*.example.com", "api.example.com"]},
        ),
        (
            {"ports": ["8080"], "notMethods": ["delete"]},
            {"ports": [8080], "notMethods": ["DELETE"]},
        ),
    ],
)
def test_operations(operation: dict[str, Any], match: dict[str, Any] | None) -> None:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "foo"},
        "spec": {"rules": [{"to": [{"operation": operation}]}]},
    }
    rule = _policy(convert([doc]).objects, "istio-namespace")["spec"]["rules"][0]
    assert rule.get("match") == match


@pytest.mark.parametrize(
    ("source", "principals"),
    [
        ({"principals": ["cluster.local/ns/a/sa/*"]}, ["spiffe://cluster.local/ns/a/sa/**"]),
        ({"principals": ["*/sa/bot"]}, ["spiffe://**/sa/bot"]),
        ({"namespaces": ["team-*"]}, ["spiffe://*/ns/team-*/sa/*"]),
        (
            {"serviceAccounts": ["api", "ops/cron"]},
            ["spiffe://*/ns/foo/sa/api", "spiffe://*/ns/ops/sa/cron"],
        ),
        ({"trustDomains": ["partner.example"]}, ["spiffe://partner.example/**"]),
    ],
)
def test_sources(source: dict[str, Any], principals: list[str]) -> None:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "foo"},
        "spec": {"rules": [{"from": [{"source": source}]}]},
    }
    rule = _policy(convert([doc]).objects, "istio-namespace")["spec"]["rules"][0]
    assert rule["match"] == {"principals": principals}


def test_what_is_not_exact_is_never_more_permissive() -> None:
    docs = [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "foo"},
            "spec": {
                "action": action,
                "rules": [
                    {
                        "from": [{"source": {"principals": ["a/b"], "namespaces": ["x"]}}],
                        "to": [{"operation": {"hosts": ["example.*"], "methods": ["PURGE"]}}],
                    }
                ],
            },
        }
        for action in ("ALLOW",)
    ]
    result = convert(docs)
    spec = _policy(result.objects, "istio-namespace")["spec"]
    assert spec["rules"] == [{"name": "default", "action": "deny"}]  # the ALLOW rule left out
    assert "OMITTED" in result.report.render() and not result.report.exact
    docs[0]["spec"]["action"] = "DENY"
    result = convert(docs)
    rules = _policy(result.objects, "istio-namespace")["spec"]["rules"]
    assert rules == [{"name": "p-0", "match": {"principals": ["spiffe://a/b"]}, "action": "deny"}]
    report = result.report.render()
    assert report.count("STRICTER") == 3  # namespaces, hosts and methods dropped: denies more


def test_remote_ip_needs_the_trusted_hop_count() -> None:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "foo"},
        "spec": {"rules": [{"from": [{"source": {"remoteIpBlocks": ["192.0.2.0/24"]}}]}]},
    }
    result = convert([doc])
    assert "--xff-num-trusted-hops" in result.report.render()
    spec = _policy(convert([doc], Options(xff_num_trusted_hops=2)).objects, "istio-namespace")
    assert spec["spec"]["xffNumTrustedHops"] == 2


def test_issuers_without_keys_or_audiences() -> None:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "ra", "namespace": "foo"},
        "spec": {
            "jwtRules": [
                {"issuer": "issuer-foo"},
                {"issuer": "https://accounts.google.com", "fromHeaders": [{"name": "x-jwt"}]},
                {
                    "issuer": "https://dev.example",
                    "jwksUri": "http://keys.dev/jwks",
                    "timeout": "1500ms",
                },
            ]
        },
    }
    result = convert([doc])
    issuers = {o["spec"]["issuer"]: o["spec"] for o in result.objects if o["kind"] == "JWTIssuer"}
    assert "issuer-foo" not in issuers  # no key source authz can use: reported
    google = issuers["https://accounts.google.com"]
    assert google["discovery"] is True
    assert google["tokenSources"] == [{"header": {"name": "x-jwt", "prefix": ""}}]
    dev = issuers["https://dev.example"]
    assert dev["fetch"] == {"allowInsecureHttp": True, "timeoutSeconds": 2}
    report = result.report.render()
    assert "is not an https URL" in report and "plain-http jwksUri" in report
    assert "Istio then accepts any audience" in report


# -- the command ---------------------------------------------------------------------------------


def test_authz_convert_istio_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = next(e for e in EXAMPLES if e.name == "require-jwt-except-healthz")
    source = tmp_path / "istio.yaml"
    source.write_text(example.yaml)
    assert cli.main(["convert", "istio", str(source), "--dry-run", "--host", "api.example"]) == 0
    out = capsys.readouterr()
    objects = [d for d in yaml.safe_load_all(out.out) if d]
    policy = next(o for o in objects if o["kind"] == "AuthzPolicy")
    assert policy["spec"]["dryRun"] is True
    assert policy["spec"]["targets"] == {"hosts": ["api.example"]}
    assert out.err == "# every object was translated exactly\n"
    # from stdin, into files; lint accepts the result
    monkeypatch.setattr(
        "sys.stdin", io.StringIO(next(e for e in EXAMPLES if e.name == "not-exactly").yaml)
    )
    target, report = tmp_path / "out" / "authz.yaml", tmp_path / "report.txt"
    target.parent.mkdir()
    code = cli.main(["convert", "istio", "-", "-o", str(target), "--report", str(report)])
    assert code == 1 and "OMITTED" in report.read_text()
    # `authz lint` in a child: it sets up the process's logging, which must not leak
    lint = subprocess.run(
        [sys.executable, "-m", "authz", "lint", str(target.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert lint.returncode == 0 and "no errors" in lint.stdout, lint.stdout


def test_unreadable_input_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("a: [")
    assert cli.main(["convert", "istio", str(tmp_path / "bad.yaml")]) == 2
    assert "authz convert istio:" in capsys.readouterr().err
    assert cli.main(["convert", "istio", str(tmp_path / "missing.yaml")]) == 2


def test_other_kinds_are_noted_not_converted() -> None:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "x"},
    }
    result = convert([doc, json.loads("null")])
    assert result.objects == [] and "PeerAuthentication is not converted" in result.report.render()


def test_overlapping_token_rules_are_reported() -> None:
    """Istio allows by any ALLOW rule; authz judges by the first that matches the request:
    two rules with different token conditions that one request can match are stricter."""
    rules = [
        {
            "to": [{"operation": {"paths": ["/a*"]}}],
            "when": [{"key": "request.auth.claims[x]", "values": ["1"]}],
        },
        {
            "to": [{"operation": {"paths": ["/ab*"]}}],
            "when": [{"key": "request.auth.claims[y]", "values": ["2"]}],
        },
    ]
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "foo"},
        "spec": {"rules": rules},
    }
    authn = yaml.safe_load(next(e for e in EXAMPLES if e.name == "httpbin").yaml.split("---")[0])
    authn["spec"].pop("selector")
    assert "several ALLOW rules with token conditions" in convert([authn, doc]).report.render()
    rules[1]["to"][0]["operation"]["methods"] = ["POST"]
    rules[0]["to"][0]["operation"]["methods"] = ["GET"]
    assert convert([authn, doc]).report.exact  # GET and POST: no request matches both
