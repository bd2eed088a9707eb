"""The pipeline as a server runs it: the credential kinds it accepts, in the order the
authenticate step asks them, over a source of snapshots. A new kind is one line here."""

from __future__ import annotations

import time
from collections.abc import Callable

from authz.request.authenticate import Authenticator
from authz.request.cache import TokenCache
from authz.request.credentials.bearer_jwt import BearerJwt
from authz.request.credentials.session import SessionCookie
from authz.request.login.flow import LoginFlow
from authz.request.login.runtime import LoginRuntime
from authz.request.pipeline import Pipeline, Serving


def pipeline(
    serving: Serving,
    cache: TokenCache,
    *,
    realm: str = "authz",
    default_allow: bool = False,
    max_token_bytes: int = 16384,
    clock: Callable[[], float] = time.time,
    login: LoginRuntime | None = None,
) -> Pipeline:
    """`login`: the server's sign-in runtime (jobs, Redis); a pipeline of its own gets one
    without Redis, whose pool starts threads only when a policy with `login` needs one."""
    runtime = login if login is not None else LoginRuntime(clock=clock)
    kinds = (
        BearerJwt(cache, max_token_bytes=max_token_bytes, clock=clock),
        SessionCookie(runtime, cache, max_token_bytes=max_token_bytes, clock=clock),
    )
    return Pipeline(
        serving,
        Authenticator(kinds),
        realm=realm,
        default_allow=default_allow,
        sign_in=LoginFlow(runtime, clock=clock),
    )
