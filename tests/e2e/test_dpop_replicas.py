"""Two `authz serve` replicas sharing DPoP replay state in a real redis-server: a proof one
replica accepted is a replay to the other. With Redis gone every DPoP Check fails closed
within the timeout (503), bearer Checks go on, and no worker is held."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from tests.e2e.conftest import AuthzServer
from tests.support.authz import check_request
from tests.support.docs import issuer, policy, write
from tests.support.dpop import DPoPClient
from tests.support.redis import RedisServer
from tests.support.snapshots import bearer_token

HOST = "api.example"
CLIENT = DPoPClient()


def _token(**claims: Any) -> str:
    now = int(time.time())  # real servers run on the real clock
    return bearer_token(cnf={"jkt": CLIENT.jkt}, iat=now, exp=now + 300, **claims)


def _verdict(response: Any) -> tuple[int, str]:
    if response.status.code == 0:
        return 200, ""
    return response.denied_response.status.code, response.status.message


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    write(tmp_path / "policy.yaml", issuer(), policy(hosts=[HOST], dpop={}))
    return tmp_path


class Replica:
    def __init__(self, server: AuthzServer) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.grpc_addr)
        self.stub = external_auth_pb2_grpc.AuthorizationStub(self.channel)

    def check(self, headers: dict[str, str], path: str = "/orders") -> tuple[int, str]:
        request = check_request(headers=headers, host=HOST, path=path, scheme="https")
        return _verdict(self.stub.Check(request, timeout=10))


@pytest.fixture
def replicas(
    policy_dir: Path,
    redis_server: Callable[..., RedisServer],
    authz_server: Callable[..., AuthzServer],
) -> Iterator[tuple[Replica, Replica, RedisServer]]:
    redis = redis_server()
    args = ["--dpop-replay-redis", redis.url, "--dpop-replay-timeout-ms", "100"]
    a, b = (Replica(authz_server(policy_dir, extra_args=args)) for _ in range(2))
    yield a, b, redis
    a.channel.close()
    b.channel.close()


def _proof(token: str, path: str = "/orders") -> dict[str, str]:
    return CLIENT.headers(token, htu=f"https://{HOST}{path}", iat=time.time())


def test_a_proof_accepted_by_one_replica_is_a_replay_to_the_other(
    replicas: tuple[Replica, Replica, RedisServer],
) -> None:
    a, b, redis = replicas
    token = _token()
    headers = _proof(token)
    assert a.check(headers) == (200, "")
    assert b.check(headers) == (401, "dpop_proof_replayed")
    assert a.check(headers) == (401, "dpop_proof_replayed")
    assert b.check(_proof(token)) == (200, "")  # a fresh proof is fine anywhere
    with redis.client() as client:
        keys = client.keys("authz:dpop:*")
        assert len(keys) == 2  # two proofs accepted; only hashes are stored
        assert all(token not in k and CLIENT.jkt not in k for k in keys)
        assert 0 < client.pttl(keys[0]) <= 61_000  # gone when the proof could not pass anyway


def test_with_redis_gone_dpop_fails_closed_fast_and_nothing_else_waits(
    replicas: tuple[Replica, Replica, RedisServer],
) -> None:
    a, _, redis = replicas
    assert a.check(_proof(_token())) == (200, "")
    redis.stop()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=32) as pool:
        verdicts = list(pool.map(lambda _i: a.check(_proof(_token())), range(64)))
    elapsed = time.monotonic() - started
    assert set(verdicts) == {(503, "dpop_replay_unavailable")}
    # 64 Checks on 16 handler threads, each waiting at most 100 ms (and none once the
    # breaker opens): far below the 64 x 100 ms a serial wait would take. Generous for a
    # loaded 2-core machine; the point is that it is bounded.
    assert elapsed < 3.0, elapsed
    bearer = {
        "authorization": f"Bearer {bearer_token(iat=int(time.time()), exp=int(time.time()) + 300)}"
    }
    started = time.monotonic()
    assert a.check(bearer) == (200, "")
    assert time.monotonic() - started < 1.0


def test_a_redis_password_from_a_file_authenticates_every_replica(
    policy_dir: Path,
    tmp_path: Path,
    redis_server: Callable[..., RedisServer],
    authz_server: Callable[..., AuthzServer],
) -> None:
    """`--dpop-replay-redis-password-file` (the chart mounts it from a Secret): replicas with
    the password share replay state; one without it fails closed, and the password is in
    neither's command line nor log."""
    redis = redis_server()
    password = "s3cret:/@%"  # characters a URL would need escaped
    with redis.client() as client:
        client.config_set("requirepass", password)
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")  # as `kubectl create secret --from-file` may
    shared = ["--dpop-replay-redis", redis.url, "--dpop-replay-timeout-ms", "200"]
    with_password = [*shared, "--dpop-replay-redis-password-file", str(password_file)]
    servers = [authz_server(policy_dir, extra_args=with_password) for _ in range(2)]
    a, b = (Replica(s) for s in servers)
    without = Replica(authz_server(policy_dir, extra_args=shared))
    try:
        headers = _proof(_token())
        assert a.check(headers) == (200, "")
        assert b.check(headers) == (401, "dpop_proof_replayed")
        assert without.check(_proof(_token())) == (503, "dpop_replay_unavailable")
    finally:
        for replica in (a, b, without):
            replica.channel.close()
    for server in (*servers, without.server):
        assert password not in " ".join(server.process.argv)
        assert password not in server.process.output()
