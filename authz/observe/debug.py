"""Debug endpoints of the ops port, and `authz check --server`, their client.

`GET /debug/snapshot`: the serving snapshot version, the policies and every issuer with
its key state. `POST /debug/explain`: a decision explained as `authz check` prints it.
Both reveal policy, so `authz serve` serves them only with `--debug-endpoints`. The token
of an explain request is read from the JSON body (never from a URL, which ends up in
access logs) and is neither logged nor echoed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from authz.policy import schema
from authz.policy.snapshot import CompiledPolicy
from authz.policy.store import PolicyStore
from authz.request.explain import explain
from authz.request.pipeline import Pipeline


class DebugError(ValueError):
    """A malformed explain request (answered 400)."""


class Debug:
    """The debug views of one server. Explains run on a pipeline of their own, without a
    token cache, so they neither fill nor read the serving cache, nor count as decisions."""

    def __init__(self, store: PolicyStore, pipeline: Pipeline) -> None:
        self._store = store
        self._pipeline = pipeline

    def snapshot(self) -> dict[str, Any]:
        snapshot = self._store.snapshot
        issuers = []
        for key, status in sorted(self._store.statuses.items()):
            issuer = self._store.issuer(key)
            if key.split("/", 1)[0] in schema.ISSUER_KINDS and issuer is not None:
                issuers.append(
                    {
                        "id": issuer.id,
                        "iss": list(issuer.accepted_iss),
                        "algorithms": sorted(issuer.algorithms),
                        "keys": issuer.keys.state().status(),
                        "accepted": status.accepted,
                    }
                )
        return {
            "version": snapshot.version,
            "ready": self._store.ready,
            "policies": [_policy(p) for p in snapshot.policies],
            "issuers": issuers,
            "problems": _problems(self._store),
        }

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Route one ops-port request under /debug/ to (HTTP status, JSON answer)."""
        if method == "GET" and path == "/debug/snapshot":
            return 200, self.snapshot()
        if method == "POST" and path == "/debug/explain":
            try:
                return 200, self.explain(body)
            except DebugError as exc:
                return 400, {"error": str(exc)}
        return 404, {"error": f"no {method} {path}"}

    def explain(self, body: bytes) -> dict[str, Any]:
        """Explain the request described by a JSON body; raises DebugError if it is malformed."""
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise DebugError(f"body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise DebugError("body must be a JSON object")
        token = doc.get("token")
        if token is not None and not isinstance(token, str):
            raise DebugError("token must be a string")
        return explain(
            self._pipeline,
            method=_text(doc, "method", "GET"),
            host=_text(doc, "host", "localhost"),
            path=_text(doc, "path", "/"),
            headers=_strings(doc, "headers"),
            context=_strings(doc, "context"),
            token=token,
            problems=_problems(self._store),
            scheme=_text(doc, "scheme", "https"),
        )


def _text(doc: Mapping[str, Any], name: str, default: str) -> str:
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise DebugError(f"{name} must be a string")
    return value


def _strings(doc: Mapping[str, Any], name: str) -> dict[str, str]:
    value = doc.get(name, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise DebugError(f"{name} must be an object of strings")
    return value


def _policy(policy: CompiledPolicy) -> dict[str, Any]:
    hosts = policy.hosts
    names = []
    if hosts is not None:
        names = [
            *sorted(hosts.exact),
            *(f"*{s}" for s in hosts.suffixes),
            *(["*"] if hosts.any else []),
        ]
    return {
        "id": policy.id,
        "hosts": names,
        "context": dict(policy.context),
        "issuers": sorted({i.id for i in policy.issuers_by_iss.values()}),
        "audiences": sorted(policy.audiences) if policy.audiences is not None else None,
        "rules": [{"name": r.name, "action": r.action} for r in policy.rules],
        "defaultAction": policy.default_action,
        "dryRun": policy.dry_run,
    }


def _problems(store: PolicyStore) -> list[str]:
    return [f"{s.key}: {p}" for s in store.statuses.values() for p in s.problems]


def remote_explain(
    server: str,
    *,
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    context: Mapping[str, str],
    token: str | None,
) -> dict[str, Any]:
    """`authz check --server`: the explanation from a running server's /debug/explain."""
    body = {"method": method, "host": host, "path": path, "headers": headers, "context": context}
    if token:
        body["token"] = token
    url = server.rstrip("/") + "/debug/explain"
    if not url.startswith(("http://", "https://")):
        raise OSError(f"{server!r} is not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            out: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        raise OSError(f"HTTP {exc.code}: {detail}") from None
    except ValueError as exc:
        raise OSError(f"not a JSON answer: {exc}") from None
    return out
