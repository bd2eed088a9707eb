"""A real redis-server (Debian) as the shared replay cache issue 13 needs.

``SET key 1 NX EX ttl`` is how replicas agree that a DPoP proof's ``jti`` is new: the first
writer wins, every later one (on any replica) sees a replay until the entry expires, and the
entry expires on its own. The fixture keeps nothing on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from tests.support.redis import RedisServer


def test_set_nx_ex_refuses_a_replay_across_replicas_until_expiry(
    redis_server: Callable[..., RedisServer],
) -> None:
    server = redis_server()
    with server.client() as replica_a, redis.Redis.from_url(server.url) as replica_b:
        _replay_semantics(replica_a, replica_b)


def _replay_semantics(replica_a: redis.Redis, replica_b: redis.Redis) -> None:
    assert replica_a.set("jti:proof-1", "1", nx=True, ex=1) is True
    # The other replica's first sight of the same jti is a replay: redis-py says None.
    assert replica_b.set("jti:proof-1", "1", nx=True, ex=1) is None
    assert replica_a.set("jti:proof-1", "1", nx=True, ex=1) is None
    assert 0 < replica_a.pttl("jti:proof-1") <= 1000
    assert replica_b.set("jti:proof-2", "1", nx=True, ex=1) is True  # other jtis unaffected
    deadline = time.monotonic() + 3
    while replica_a.exists("jti:proof-1"):
        assert time.monotonic() < deadline, "the entry never expired"
        time.sleep(0.05)
    assert replica_b.set("jti:proof-1", "1", nx=True, ex=1) is True  # expired: new again


def test_no_persistence_and_unix_socket_only_by_default(
    redis_server: Callable[..., RedisServer],
) -> None:
    server = redis_server()
    with server.client() as client:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("port") == {"port": "0"}
        client.set("k", "v")
    assert server.dir is not None
    directory = server.dir
    server.stop()
    assert sorted(p.name for p in directory.iterdir()) == []  # no dump.rdb, no AOF
    assert server.process is not None and server.process.returncode == 0


def test_tcp_listener_on_request(redis_server: Callable[..., RedisServer]) -> None:
    server = redis_server(tcp=True)
    for url in (server.tcp_url, server.url):
        with redis.Redis.from_url(url) as client:
            assert client.ping() is True
