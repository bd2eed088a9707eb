"""The DPoP-bound token (RFC 9449): `Authorization: DPoP <token>` with a `DPoP` proof header.

The access token is a JWT verified exactly as a bearer token is, through the same
verified-token cache (`credentials.bearer_jwt`); then, on every request, the proof: its
checks (`authz.request.proof`), the token's `cnf.jkt` = the proof key's thumbprint, the
server nonce if the policy wants one, and last the replay check, so a proof that fails
any other check does not use up its `jti`. Only policies with a `dpop` block read the
DPoP scheme. With a replay cache shared by replicas (Redis: I/O) and `may_wait` false, the
Check is handed back (WouldWait) before any work, to run where waiting is cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authz.keys.thumbprint import b64url
from authz.policy.issuer import TokenSource
from authz.policy.possession import DPoPSettings
from authz.policy.snapshot import CompiledPolicy
from authz.request.credentials import Authentication, Presented
from authz.request.credentials.bearer_jwt import BearerJwt, check_audience
from authz.request.credentials.binding import check_dpop
from authz.request.decision import Reason
from authz.request.jose import TokenError
from authz.request.nonces import Nonces
from authz.request.proof import Proof, ProofKeys, verify_proof
from authz.request.replay import ReplayCache, ReplayUnavailable, replay_key
from authz.request.verify import WouldWait
from authz.request.view import RequestView

SCHEME = "DPoP "
SOURCE = TokenSource("header", "authorization", SCHEME)
PROOF_HEADER = "dpop"


class DPoPBound:
    def __init__(
        self,
        bearer: BearerJwt,
        replay: ReplayCache,
        nonces: Nonces,
        *,
        keys: ProofKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bearer = bearer
        self.replay = replay
        self.nonces = nonces
        self._keys = keys if keys is not None else ProofKeys()
        self._clock = clock

    def find(self, request: RequestView, policy: CompiledPolicy) -> Presented | None:
        if policy.dpop is None:
            return None
        value = request.headers.get("authorization")
        if value is None or value[: len(SCHEME)].lower() != SCHEME.lower():
            return None
        token = value[len(SCHEME) :].strip()
        if not token:
            raise TokenError(Reason.REQUEST_INVALID, "empty credentials in Authorization: DPoP")
        if "," in token:  # repeated headers arrive comma-joined
            raise TokenError(Reason.TOKEN_MULTIPLE, "more than one Authorization header")
        return Presented(self, token, SOURCE, request)

    def verify(
        self, presented: Presented, policy: CompiledPolicy, *, may_wait: bool = True
    ) -> Authentication:
        settings, request = policy.dpop, presented.request
        assert settings is not None and request is not None  # only `find` makes these
        if self.replay.shared and not may_wait:
            raise WouldWait("the DPoP replay check waits for Redis")
        try:
            verified, reused, digest = self.bearer.verified(presented.secret, policy, may_wait)
        except TokenError as exc:
            return Authentication(None, exc, source=SOURCE)
        try:
            check_audience(verified, policy)
            now = self._clock()
            # ath is the token's SHA-256, which the verified-token cache keys it by already.
            proof = self._proof(request, b64url(digest), now, settings)
            binding = check_dpop(verified, proof.jkt, request, policy)
            if settings.require_nonce and not self.nonces.valid(proof.nonce):
                raise TokenError(
                    Reason.DPOP_NONCE_REQUIRED, "the proof has no current server nonce"
                )
            self._first_use(proof, now, settings)
        except TokenError as exc:
            return Authentication(None, exc, verified, SOURCE)
        return Authentication(
            verified.identity, None, verified, SOURCE, reused, binding=binding, digest=digest
        )

    def _proof(self, request: RequestView, ath: str, now: float, settings: DPoPSettings) -> Proof:
        value = request.headers.get(PROOF_HEADER)
        if value is None or not value.strip():
            raise TokenError(Reason.DPOP_PROOF_MISSING, "no DPoP proof header")
        if "," in value:  # RFC 9449 section 4.3: not more than one DPoP header
            raise TokenError(Reason.DPOP_PROOF_MALFORMED, "more than one DPoP proof header")
        return verify_proof(
            value.strip(),
            request=request,
            ath=ath,
            now=now,
            settings=settings,
            keys=self._keys,
        )

    def _first_use(self, proof: Proof, now: float, settings: DPoPSettings) -> None:
        # Remembered one second past the last instant the proof passes its time check.
        expires = proof.iat + settings.max_age + 1
        try:
            seen = self.replay.first_use(replay_key(proof.jkt, proof.jti), proof.iat, expires, now)
        except ReplayUnavailable as exc:
            raise TokenError(Reason.DPOP_REPLAY_UNAVAILABLE, str(exc)) from None
        if seen == "replayed":
            raise TokenError(Reason.DPOP_PROOF_REPLAYED, "the proof's jti was used before")
        if seen == "too_old":
            raise TokenError(
                Reason.DPOP_PROOF_EXPIRED,
                "the proof is older than the full replay cache remembers (--dpop-replay-entries)",
            )
