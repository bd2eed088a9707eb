"""Server-side sessions in Redis: the cookie carries only a sealed id, the record lives here
(sealed too, so a Redis dump reveals no token), shared by every replica and gone at logout.

Called from jobs only (authz.oidc.jobs): a Check waits a bounded time for a read. Every
command has a socket timeout, so a Redis that hangs frees the worker within it. redis-py
is imported only when a server has a session store (it also loads OpenTelemetry, which
`authz serve` without `--tracing` must not).
"""

from __future__ import annotations

from typing import Any

PREFIX = "authz:session:"
ONCE_PREFIX = "authz:once:"


class SessionStoreError(RuntimeError):
    """Redis could not be reached or refused the command (the message says which)."""


class RedisSessions:
    def __init__(self, url: str, *, password: str | None = None, timeout: float = 1.0) -> None:
        import redis  # noqa: PLC0415 (see the module docstring)

        self.url = url
        self._errors: type[Exception] = redis.RedisError
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 30,
        }
        if password:
            options["password"] = password
        self._redis: Any = redis.Redis.from_url(url, **options)

    def get(self, key: str) -> bytes | None:
        value = self._call(lambda r: r.get(PREFIX + key))
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl: float) -> None:
        self._call(lambda r: r.set(PREFIX + key, value, px=max(1, int(ttl * 1000))))

    def touch(self, key: str, ttl: float) -> None:
        """Extend a record's life (an active session's idle timeout starts again)."""
        self._call(lambda r: r.pexpire(PREFIX + key, max(1, int(ttl * 1000))))

    def delete(self, key: str) -> None:
        self._call(lambda r: r.delete(PREFIX + key))

    def once(self, key: str, ttl: float) -> bool:
        """True the first time `key` is claimed within `ttl` seconds, by any replica
        (a sign-in state is used once; one replica refreshes a session at a time)."""
        claimed = self._call(
            lambda r: r.set(ONCE_PREFIX + key, b"1", nx=True, px=max(1, int(ttl * 1000)))
        )
        return claimed is True  # redis-py answers None, not False, when NX did not set

    def close(self) -> None:
        self._redis.close()

    def _call(self, command: Any) -> Any:
        try:
            return command(self._redis)
        except self._errors as exc:
            raise SessionStoreError(f"redis: {type(exc).__name__}: {str(exc)[:200]}") from None
