"""An in-memory snapshot built from documents, and a Check on it without gRPC or files.

    served = serve(issuer(), policy(rules=[rule("read", requireScopes={"allOf": ["r"]})]))
    answer, outcome = check(served, path="/x", token=bearer_token(scope="r"))

The snapshot goes through the real validate -> compile -> build steps (remote keys are
never fetched); `check` runs the server's pipeline on a request view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.keys.remote import KeyManager
from authz.policy.build import LastGood, ObjectStatus, build
from authz.policy.snapshot import Snapshot
from authz.policy.validate import PolicyError, PolicyObject, validate_document
from authz.request.assembly import pipeline
from authz.request.cache import TokenCache
from authz.request.pipeline import Outcome
from authz.request.respond import Answer
from authz.request.view import Connection, KnownConnection, request_view
from tests.support.tokens import NOW, claims, mint, signing_key

ORIGIN = "memory"
HTTPS = KnownConnection(scheme="https")  # what the proxy reports by default in these tests


@dataclass
class Served:
    """A snapshot and the status of every object, as a store would hold them."""

    snapshot: Snapshot
    statuses: dict[str, ObjectStatus]


def serve(*docs: dict[str, Any], workload_labels: Mapping[str, str] | None = None) -> Served:
    objects: list[PolicyObject] = []
    failures: dict[str, tuple[str, list[str]]] = {}
    for doc in docs:
        try:
            objects.append(validate_document(doc, ORIGIN))
        except PolicyError as exc:
            failures[exc.key or "?"] = (ORIGIN, exc.problems)
    result = build(
        objects,
        failures,
        last_good=LastGood(),
        keys=KeyManager(start=False),
        workload_labels=workload_labels or {},
        version=1,
    )
    return Served(result.snapshot, result.statuses)


def bearer_token(alg: str = "ES256", kid: str = "k1", **overrides: Any) -> str:
    """A token signed by the shared test key (the one `docs.issuer()` trusts by default)."""
    return mint(signing_key(alg, kid)[0], claims(**overrides))


def check(
    served: Served,
    *,
    method: str = "GET",
    host: str = "api.example",
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    context: Mapping[str, str] | None = None,
    token: str | None = None,
    cache: TokenCache | None = None,
    connection: Connection = HTTPS,
    **options: Any,
) -> tuple[Answer, Outcome]:
    """Decide one request at the fixed test time NOW; `options` as `assembly.pipeline` takes."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    if token is not None:
        lowered["authorization"] = f"Bearer {token}"
    checker = pipeline(
        served, cache if cache is not None else TokenCache(0), clock=lambda: NOW, **options
    )
    view = request_view(method, host, path, lowered, context or {}, connection=connection)
    return checker.check(view)
