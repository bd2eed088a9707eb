"""An in-memory snapshot built from documents, and a Check on it without gRPC or files.

    served = serve(issuer(), policy(rules=[rule("read", requireScopes={"allOf": ["r"]})]))
    answer, outcome = check(served, path="/x", token=bearer_token(scope="r"))

The snapshot goes through the real validate -> compile -> build steps (remote keys are
never fetched); `check` runs the server's pipeline on a request view. `serve_sources`
mixes policy files with cluster objects (tenancy: grants, bindings, conflicts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz.introspection.manager import IntrospectionManager
from authz.keys.remote import KeyManager
from authz.policy.build import LastGood, ObjectStatus, build, merge_sources
from authz.policy.kube import ConfigMapReader, SecretReader, validate_objects
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
    """A snapshot and the status of every object, as a store would hold them; `shadowed`:
    cluster objects refused because the policy directory has their key."""

    snapshot: Snapshot
    statuses: dict[str, ObjectStatus]
    shadowed: dict[str, ObjectStatus] = field(default_factory=dict)
    last_good: LastGood = field(default_factory=LastGood)


def serve(
    *docs: dict[str, Any],
    workload_labels: Mapping[str, str] | None = None,
    introspection: IntrospectionManager | None = None,
    origin: str = ORIGIN,
    keys: KeyManager | None = None,
) -> Served:
    """Build from policy-directory documents; introspecting issuers use `introspection` (a
    test's own manager, so no answer is cached across tests) or the process default.
    `origin` is the file they are read from (files they name, a key ring say, are found
    next to it); `keys` a key manager that fetches (by default none is fetched)."""
    return serve_sources(
        docs,
        workload_labels=workload_labels,
        introspection=introspection,
        origin=origin,
        keys=keys,
    )


def serve_sources(
    files: Sequence[dict[str, Any]] = (),
    cluster: Sequence[dict[str, Any]] = (),
    *,
    workload_labels: Mapping[str, str] | None = None,
    workload_namespace: str | None = None,
    previous: Served | None = None,
    read_configmap: ConfigMapReader | None = None,
    read_secret: SecretReader | None = None,
    introspection: IntrospectionManager | None = None,
    origin: str = ORIGIN,
    keys: KeyManager | None = None,
) -> Served:
    """Build from policy-directory documents and cluster objects (validated as the cluster
    source validates them), after `previous` when given (its last good versions).
    `keys`: a key manager that fetches remote keys (by default none is fetched)."""
    objects: list[PolicyObject] = []
    failures: dict[str, tuple[str, list[str]]] = {}
    for doc in files:
        try:
            objects.append(validate_document(doc, origin))
        except PolicyError as exc:
            failures[exc.key or "?"] = (origin, exc.problems)
    inputs = {"files": (objects, failures)}
    if cluster:
        inputs["kubernetes"] = validate_objects(cluster, read_secret, read_configmap)
    merged = merge_sources(inputs)
    result = build(
        merged.objects,
        merged.failures,
        last_good=previous.last_good if previous is not None else LastGood(),
        keys=keys if keys is not None else KeyManager(start=False),
        workload_labels=workload_labels or {},
        workload_namespace=workload_namespace,
        version=previous.snapshot.version + 1 if previous is not None else 1,
        shadowed=merged.shadowed,
        introspection=introspection,
        now=NOW,
    )
    return Served(result.snapshot, result.statuses, result.shadowed, result.last_good)


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
    now: float = NOW,
    may_wait: bool = True,
    connection: Connection = HTTPS,
    **options: Any,
) -> tuple[Answer, Outcome]:
    """Decide one request at `now` (the fixed test time NOW unless given); `connection` as
    the proxy describes it (authz.request.view.KnownConnection); `options` as
    `assembly.pipeline` takes."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    if token is not None:
        lowered["authorization"] = f"Bearer {token}"
    checker = pipeline(
        served, cache if cache is not None else TokenCache(0), clock=lambda: now, **options
    )
    view = request_view(method, host, path, lowered, context or {}, connection=connection)
    return checker.check(view, may_wait=may_wait)
