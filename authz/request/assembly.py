"""The pipeline as a server runs it: the credential kinds it accepts, in the order the
authenticate step asks them, over a source of snapshots. A new kind is one line here."""

from __future__ import annotations

import time
from collections.abc import Callable

from authz.request.authenticate import Authenticator
from authz.request.cache import TokenCache
from authz.request.credentials.bearer_jwt import BearerJwt
from authz.request.credentials.dpop import DPoPBound
from authz.request.credentials.introspected import IntrospectedToken
from authz.request.credentials.session import SessionCookie
from authz.request.internal_token import InternalTokens
from authz.request.login.flow import LoginFlow
from authz.request.login.runtime import LoginRuntime
from authz.request.nonces import Nonces
from authz.request.pipeline import Pipeline, Serving
from authz.request.replay import LocalReplayCache, ReplayCache


def pipeline(
    serving: Serving,
    cache: TokenCache,
    *,
    realm: str = "authz",
    default_allow: bool = False,
    max_token_bytes: int = 16384,
    clock: Callable[[], float] = time.time,
    replay: ReplayCache | None = None,
    nonces: Nonces | None = None,
    internal_tokens: InternalTokens | None = None,
    login: LoginRuntime | None = None,
) -> Pipeline:
    """`replay` (DPoP proofs seen) defaults to a cache of this pipeline's own, `nonces` to
    a random secret of this process: a server shares them between its transports. `login`:
    the server's sign-in runtime (jobs, Redis); a pipeline of its own gets one without
    Redis, whose pool starts threads only when a policy with `login` needs one."""
    bearer = BearerJwt(cache, max_token_bytes=max_token_bytes, clock=clock)
    nonces = nonces if nonces is not None else Nonces(clock=clock)
    dpop = DPoPBound(bearer, replay or LocalReplayCache(), nonces, clock=clock)
    introspected = IntrospectedToken(max_token_bytes=max_token_bytes, clock=clock)
    runtime = login if login is not None else LoginRuntime(clock=clock)
    session = SessionCookie(runtime, cache, max_token_bytes=max_token_bytes, clock=clock)
    checker = Pipeline(
        serving,
        Authenticator((bearer, introspected, dpop, session), clock=clock),
        realm=realm,
        default_allow=default_allow,
        nonces=nonces,
        internal_tokens=internal_tokens,
        clock=clock,
        sign_in=LoginFlow(runtime, clock=clock),
    )
    checker.on_snapshot_change(bearer.forget)
    return checker
