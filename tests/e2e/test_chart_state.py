"""The chart's shared-state and secret values (`httpProxySecret`, `dpop`, `internalTokens`,
`login.sessionRedis`), with the real helm, the real kube-apiserver and the real `authz serve`:

- what they render: flags naming files under /etc/authz/secrets, each from a Secret mounted
  read-only (one key projected), never a secret in the arguments or the environment;
- that the arguments parse with the authz CLI, and that `authz serve` starts with them and the
  files laid out as the kubelet mounts them, and uses each (Redis with a password, the proxy
  secret, the internal tokens' JWKS);
- the values that cannot work together fail `helm template` with a message naming them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis import Redis

from authz.cli import _parser
from authz.devtools import generate_key
from tests.e2e.conftest import AuthzServer
from tests.support import helm, kube_fixtures
from tests.support.docs import issuer, policy, write
from tests.support.dpop import DPoPClient
from tests.support.kube import ControlPlane
from tests.support.procs import http_request
from tests.support.redis import RedisServer
from tests.support.snapshots import bearer_token

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

NS = "chart-state"
SECRETS = "/etc/authz/secrets"
STATE: dict[str, Any] = {
    "httpProxySecret": {"name": "authz-proxy", "key": "secret"},
    "dpop": {
        "replayRedis": {
            "url": "rediss://redis.cache.svc:6380/1",
            "passwordSecret": {"name": "authz-redis", "key": "dpop-password"},
        },
        "nonceSecret": {"name": "authz-dpop-nonce"},
    },
    "internalTokens": {"keysSecret": "authz-signing"},
    "login": {
        "sessionRedis": {
            "url": "rediss://redis.cache.svc:6380/2",
            "passwordSecret": {"name": "authz-redis", "key": "session-password"},
        }
    },
}
SIDECAR = {
    "mode": "sidecar",
    "policies": {"issuer.yaml": issuer()},
    **STATE,
    "internalTokens": {"keysSecret": "authz-signing", "issuer": "http://127.0.0.1:9002/internal"},
}
# flag -> (volume, Secret, key; "" for the whole Secret as a directory)
EXPECTED = {
    "http-proxy-secret-file": ("http-proxy-secret", "authz-proxy", "secret"),
    "dpop-nonce-secret-file": ("dpop-nonce-secret", "authz-dpop-nonce", "nonce-secret"),
    "dpop-replay-redis-password-file": (
        "dpop-replay-redis-password",
        "authz-redis",
        "dpop-password",
    ),
    "session-redis-password-file": ("session-redis-password", "authz-redis", "session-password"),
    "internal-token-keys": ("internal-token-keys", "authz-signing", ""),
}


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    return helm.template(values, release="state", namespace=NS)


def _central(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the authz container, the pod spec) of the Deployment."""
    pod = helm.find(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, pod


def _sidecar(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the authz container, the pod spec) of the sidecar patch."""
    configmap = helm.find(docs, "ConfigMap", "state-authz-sidecar")
    pod = yaml.safe_load(configmap["data"]["patch.yaml"])["spec"]["template"]["spec"]
    (container,) = pod["initContainers"]
    return container, pod


def _flags(args: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for arg in args:
        name, _, value = arg.removeprefix("--").partition("=")
        assert name not in out, f"--{name} given twice: {args}"
        out[name] = value
    return out


def test_no_shared_state_by_default() -> None:
    container, pod = _central(_render({}))
    flags = _flags(container["args"])
    assert not set(flags) & {*EXPECTED, "dpop-replay-redis", "session-redis"}
    assert "internal-token-issuer" not in flags
    assert not [m for m in container["volumeMounts"] if m["mountPath"].startswith(SECRETS)]
    assert not [v for v in pod["volumes"] if "secret" in v]


@pytest.mark.parametrize(("mode", "prefix"), [("central", ""), ("sidecar", "authz-")])
def test_each_secret_is_a_read_only_file_named_by_its_flag(mode: str, prefix: str) -> None:
    container, pod = _central(_render(STATE)) if mode == "central" else _sidecar(_render(SIDECAR))
    flags = _flags(container["args"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for flag, (volume, secret, key) in EXPECTED.items():
        directory = f"{SECRETS}/{volume}"
        assert flags[flag] == (f"{directory}/{key}" if key else directory)
        assert mounts[prefix + volume] == {
            "name": prefix + volume,
            "mountPath": directory,
            "readOnly": True,
        }
        source = volumes[prefix + volume]["secret"]
        assert source["secretName"] == secret
        if key:  # only that key: a Secret holding more exposes nothing else
            assert source["items"] == [{"key": key, "path": key}]
        else:  # the keys directory: every key, and the `active` file, updated in place
            assert "items" not in source
        # central: the pod's fsGroup reads it, no one else; a workload's pod may have none.
        assert source.get("defaultMode") == (0o440 if mode == "central" else None)
    assert flags["dpop-replay-redis"] == "rediss://redis.cache.svc:6380/1"
    assert flags["session-redis"] == "rediss://redis.cache.svc:6380/2"
    issuer_url = (
        f"http://state-authz.{NS}.svc:9002/internal"  # the Service's ops port
        if mode == "central"
        else "http://127.0.0.1:9002/internal"
    )
    assert flags["internal-token-issuer"] == issuer_url
    # Nothing secret reaches the pod spec: no Secret in the environment either.
    assert not [e for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    args = [a.replace("@/etc/podinfo/labels", "app=orders") for a in container["args"]]
    parsed = _parser().parse_args(["serve", *args])
    assert str(parsed.dpop_nonce_secret_file) == f"{SECRETS}/dpop-nonce-secret/nonce-secret"
    assert str(parsed.internal_token_keys) == f"{SECRETS}/internal-token-keys"


def test_an_explicit_issuer_wins_and_a_group_readable_mode_needs_an_fs_group() -> None:
    values = {
        "internalTokens": {"keysSecret": "k", "issuer": "https://authz.example.com/internal"},
        "podSecurityContext": {"fsGroup": None},  # null: Helm drops the default's key
    }
    container, pod = _central(_render(values))
    assert "--internal-token-issuer=https://authz.example.com/internal" in container["args"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "internal-token-keys"]
    assert volume["secret"] == {"secretName": "k"}  # no fsGroup: Kubernetes' default mode


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"dpop": {"replayRedis": {"passwordSecret": {"name": "r"}}}},
            "dpop.replayRedis.passwordSecret is the password of dpop.replayRedis.url, which is",
        ),
        (
            {"login": {"sessionRedis": {"url": "redis://:hunter2@redis:6379/0"}}},
            "login.sessionRedis.url carries a password",
        ),
        (
            {"dpop": {"replayRedis": {"url": "redis://authz:hunter2@redis:6379/0"}}},
            "dpop.replayRedis.url carries a password",
        ),
        (
            {"dpop": {"replayRedis": {"url": "unix:///run/redis.sock?password=hunter2"}}},
            "dpop.replayRedis.url carries a password",
        ),
        (
            {"internalTokens": {"issuer": "https://authz.example.com"}},
            "internalTokens.issuer needs internalTokens.keysSecret",
        ),
        (
            {**SIDECAR, "internalTokens": {"keysSecret": "k"}},
            "mode=sidecar has no Service to default internalTokens.issuer to",
        ),
    ],
)
def test_values_that_cannot_work_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    result = helm.template_text(values, check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert message in result.stderr, result.stderr
    assert "hunter2" not in result.stderr  # the message never repeats the password


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dpop": {"replayRedis": {"url": "http://redis:6379"}}}, "at '/dpop/replayRedis/url'"),
        ({"login": {"sessionRedis": {"url": "redis"}}}, "at '/login/sessionRedis/url'"),
        ({"httpProxySecret": {"name": "Not_A_Name"}}, "at '/httpProxySecret/name'"),
        ({"dpop": {"nonceSecret": {"key": "a/b"}}}, "at '/dpop/nonceSecret/key'"),
        ({"internalTokens": {"keys": "k"}}, "additional properties 'keys' not allowed"),
        ({"internalTokens": {"issuer": "authz"}}, "at '/internalTokens/issuer'"),
        ({"dpop": {"nonceSecret": "authz-dpop"}}, "at '/dpop/nonceSecret'"),
    ],
)
def test_schema_rejects_bad_state_values(values: dict[str, Any], message: str) -> None:
    result = helm.template_text(values, check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_helm_lint_strict(tmp_path: Path) -> None:
    for values in (STATE, SIDECAR):
        path = helm.values_file(values, tmp_path)
        result = helm.run("lint", "--strict", str(helm.CHART), "--values", str(path))
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_renderings_are_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    """Secret volumes with items and an octal mode, as the API server validates them."""
    control_plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    docs = [d for d in _render(STATE) if d["kind"] != "Pod"]  # the helm test hook
    control_plane.apply(docs, dry_run=True)
    _, pod = _sidecar(_render(SIDECAR))
    workload = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "orders", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "orders"}},
            "template": {
                "metadata": {"labels": {"app": "orders"}},
                "spec": {**pod, "containers": [{"name": "app", "image": "example/orders:1"}]},
            },
        },
    }
    control_plane.apply([workload], dry_run=True)


def _lay_out_mounts(
    container: dict[str, Any], pod: dict[str, Any], root: Path, contents: dict[str, str]
) -> list[str]:
    """Write each mounted Secret's projected keys under `root` as the kubelet would (the
    Secret's data from `contents`, by Secret name and key) and return the container's
    arguments with /etc/authz/secrets pointing there."""
    volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    for mount in container["volumeMounts"]:
        if not mount["mountPath"].startswith(SECRETS):
            continue
        directory = root / Path(mount["mountPath"]).relative_to(SECRETS)
        directory.mkdir(parents=True)
        source = volumes[mount["name"]]
        if "items" in source:
            for item in source["items"]:
                (directory / item["path"]).write_text(
                    contents[f"{source['secretName']}/{item['key']}"]
                )
        else:
            prefix = f"{source['secretName']}/"
            for name, value in contents.items():
                if name.startswith(prefix):
                    (directory / name.removeprefix(prefix)).write_text(value)
    return [arg.replace(SECRETS, str(root)) for arg in container["args"]]


def test_authz_serve_starts_with_the_rendered_flags_and_uses_each_file(
    tmp_path: Path,
    redis_server: Callable[..., RedisServer],
    authz_server: Callable[..., AuthzServer],
) -> None:
    """The chart's shared-state arguments and the files its mounts hold, given to a real
    `authz serve`: it authenticates to Redis with the mounted password, requires the
    mounted proxy secret, and publishes the mounted signing key for its internal tokens."""
    redis = redis_server()
    with redis.client() as client:
        client.config_set("requirepass", "r3dis-Pw7")
    values = json.loads(json.dumps(STATE))
    values["dpop"]["replayRedis"]["url"] = redis.url
    values["login"]["sessionRedis"]["url"] = redis.url
    container, pod = _central(_render(values))
    state_flags = ("http-proxy-secret", "dpop-", "session-", "internal-token-")
    args = [a for a in container["args"] if a.removeprefix("--").startswith(state_flags)]
    private, _public = generate_key("ES256", "2025-01")
    contents = {
        "authz-proxy/secret": "pr0xy-Pw9\n",
        "authz-dpop-nonce/nonce-secret": "nonce-secret-shared-by-replicas",
        "authz-redis/dpop-password": "r3dis-Pw7",
        "authz-redis/session-password": "r3dis-Pw7\n",
        "authz-signing/2025-01.json": json.dumps(private),
    }
    args = _lay_out_mounts({**container, "args": args}, pod, tmp_path / "secrets", contents)
    assert not [a for a in args if any(v.strip() in a for v in contents.values())]
    policies = tmp_path / "policies"
    policies.mkdir()
    write(policies / "policy.yaml", issuer(), policy(hosts=["api.example"], dpop={}))
    server = authz_server(policies, grpc=False, extra_args=args)

    jwks = http_request(server.http_url, "GET", "/internal/.well-known/jwks.json").json()
    assert [k["kid"] for k in jwks["keys"]] == ["2025-01"]
    assert "d" not in jwks["keys"][0]  # public half only

    check = f"http://{server.http_check_addr}"
    untrusted = http_request(check, "GET", "/check/envoy/x", {"Host": "api.example"})
    assert untrusted.status == 403
    assert untrusted.json()["error_description"] == (
        "the request did not come from a trusted proxy"
    )
    trusted = http_request(
        check,
        "GET",
        "/check/envoy/x",
        {"Host": "api.example", "x-authz-proxy-secret": "pr0xy-Pw9"},
    )
    assert trusted.status == 401  # past the proxy check: no token

    # The replay cache reached Redis with the mounted password: a DPoP-bound request
    # writes its proof's key there (one without the password would get 503).
    client_key = DPoPClient()
    now = int(time.time())
    token = bearer_token(cnf={"jkt": client_key.jkt}, iat=now, exp=now + 300)
    headers = client_key.headers(token, htu="https://api.example/x", iat=time.time())
    answer = http_request(
        check,
        "GET",
        "/check/envoy/x",
        {
            "Host": "api.example",
            "x-forwarded-proto": "https",  # as Envoy sets it
            "x-authz-proxy-secret": "pr0xy-Pw9",
            **headers,
        },
    )
    assert answer.status == 200, answer.body
    with Redis.from_url(redis.url, password="r3dis-Pw7") as client:
        assert len(client.keys("authz:dpop:*")) == 1
    log = server.process.output()
    assert not re.search(r"r3dis-Pw7|pr0xy-Pw9|nonce-secret-shared", log)
