"""What sign-in keeps across Checks, one per server: the jobs that do its I/O, the
providers' metadata, the Redis session store (when the server has one) and the sign-in
states already used. A Check starts or joins a job and waits for it within the policy's
`waitMillis`; with `may_wait` false (an event loop) it raises WouldWait instead.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

from authz.keys.fetch import FetchError
from authz.oidc.jobs import Jobs
from authz.oidc.provider import Discovery, ProviderMetadata
from authz.oidc.store import RedisSessions
from authz.policy.login import LoginSettings
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.verify import WouldWait

T = TypeVar("T")
MAX_USED_STATES = 50_000


class LoginRuntime:
    def __init__(
        self,
        *,
        jobs: Jobs | None = None,
        redis: RedisSessions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jobs = jobs if jobs is not None else Jobs()
        self.discovery = Discovery(self.jobs)
        self.redis = redis
        self.clock = clock
        self._used: OrderedDict[str, float] = OrderedDict()  # state digest -> until (wall)
        self._lock = threading.Lock()

    def settle(self, future: futures.Future[T] | None, budget: float, *, may_wait: bool) -> bool:
        """Whether `future` is done, after waiting up to `budget` for it; raises WouldWait
        when it is not and the caller must not wait. None (no job: too busy) is not done."""
        if future is None:
            return False
        if future.done():
            return True
        if not may_wait:
            raise WouldWait("sign-in")
        return self.jobs.wait(future, budget)

    def metadata(
        self, settings: LoginSettings, *, may_wait: bool, wait: bool = True
    ) -> ProviderMetadata:
        """The provider's endpoints; raises TokenError(PROVIDER_UNAVAILABLE) when they are
        not known within the wait (at once with `wait` false), or WouldWait."""
        try:
            found = self.discovery.lookup(settings.iss, settings.http)
        except FetchError as exc:
            raise TokenError(Reason.PROVIDER_UNAVAILABLE, f"discovery: {exc}") from None
        if isinstance(found, ProviderMetadata):
            return found
        if not wait and not found.done():
            raise TokenError(Reason.PROVIDER_UNAVAILABLE, "discovery still running")
        if not self.settle(found, settings.wait, may_wait=may_wait):
            raise TokenError(Reason.PROVIDER_UNAVAILABLE, "discovery still running")
        try:
            return found.result()
        except FetchError as exc:
            raise TokenError(Reason.PROVIDER_UNAVAILABLE, f"discovery: {exc}") from None

    def used(self, digest: str) -> bool:
        """Whether a sign-in state was used already (here: Redis tells other replicas)."""
        with self._lock:
            until = self._used.get(digest)
        return until is not None and until > self.clock()

    def use_state(self, digest: str, until: float) -> bool:
        """True the first time a sign-in state is used (until its pre-login cookie expires)."""
        now = self.clock()
        with self._lock:
            if digest in self._used and self._used[digest] > now:
                return False
            while self._used and (
                len(self._used) >= MAX_USED_STATES or next(iter(self._used.values())) <= now
            ):
                self._used.popitem(last=False)
            self._used[digest] = until
            return True

    def close(self) -> None:
        self.jobs.close()
        if self.redis is not None:
            self.redis.close()
