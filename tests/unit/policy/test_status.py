"""The status writer's pure decisions, table-tested: which conditions an object gets, when
lastTransitionTime moves, and which differences are worth a write."""

from __future__ import annotations

from typing import Any

import pytest

from authz.policy.build import ObjectStatus
from authz.policy.status import (
    GENERIC_FETCH_ERROR,
    _comparable,
    desired_conditions,
    merge_times,
    shown_keys,
)

POLICY = "AuthzPolicy/shop/orders"
ISSUER = "JWTIssuer/shop/idp"
UNRESOLVED = "spec.issuers[0]: JWTIssuer/shop/gone not found or not ready"
LOADED = {"ready": True, "count": 1, "kids": ["k1"]}


def status(
    key: str = POLICY, *, accepted: bool = True, serving: bool = True, **more: Any
) -> ObjectStatus:
    return ObjectStatus(key, "kubernetes", accepted, serving, **more)


def summary(conditions: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in conditions}


@pytest.mark.parametrize(
    ("key", "object_status", "keys", "expected"),
    [
        (POLICY, None, None, {"Ready": ("False", "Pending")}),
        (
            POLICY,
            status(),
            None,
            {
                "Ready": ("True", "Serving"),
                "Accepted": ("True", "Valid"),
                "ResolvedRefs": ("True", "Resolved"),
            },
        ),
        (
            POLICY,
            status(problems=(UNRESOLVED,), unresolved=(UNRESOLVED,)),
            None,
            {
                "Ready": ("False", "UnresolvedRefs"),
                "Accepted": ("True", "Valid"),
                "ResolvedRefs": ("False", "UnresolvedRefs"),
            },
        ),
        (
            POLICY,
            status(problems=("spec.issuers[1]: has the same iss as JWTIssuer/shop/a; ignored",)),
            None,
            {
                "Ready": ("True", "Serving"),  # a warning, not an unresolved reference
                "Accepted": ("True", "Valid"),
                "ResolvedRefs": ("True", "Resolved"),
            },
        ),
        (
            POLICY,
            status(accepted=False, serving=True, problems=("spec.rules[0]: bad",)),
            None,
            {
                "Ready": ("False", "ServingLastGood"),
                "Accepted": ("False", "Invalid"),
                "ResolvedRefs": ("True", "Resolved"),
            },
        ),
        (
            POLICY,
            status(accepted=False, serving=False, problems=("spec.rules[0]: bad",)),
            None,
            {
                "Ready": ("False", "Invalid"),
                "Accepted": ("False", "Invalid"),
                "ResolvedRefs": ("True", "Resolved"),
            },
        ),
        (
            POLICY,
            status(accepted=False, serving=False, problems=("no",), reason="HostNotGranted"),
            None,
            {
                "Ready": ("False", "HostNotGranted"),
                "Accepted": ("False", "HostNotGranted"),
                "ResolvedRefs": ("True", "Resolved"),
            },
        ),
        (
            POLICY,
            status(accepted=False, serving=True, problems=("no",), reason="HostNotGranted"),
            None,
            {
                "Ready": ("False", "ServingLastGood"),  # the granted last version serves
                "Accepted": ("False", "HostNotGranted"),
                "ResolvedRefs": ("True", "Resolved"),
            },
        ),
        (
            POLICY,
            status(accepted=False, serving=True, problems=("taken",), reason="Conflict"),
            None,
            {
                "Ready": ("False", "Conflict"),  # serving its other hosts, not this generation
                "Accepted": ("False", "Conflict"),
                "ResolvedRefs": ("True", "Resolved"),
            },
        ),
        (
            ISSUER,
            status(ISSUER),
            LOADED,
            {
                "Ready": ("True", "Serving"),
                "Accepted": ("True", "Valid"),
                "KeysReady": ("True", "Loaded"),
            },
        ),
        (
            ISSUER,
            status(ISSUER),
            {**LOADED, "stale": True, "lastError": "timeout: no answer"},
            {
                "Ready": ("True", "Serving"),
                "Accepted": ("True", "Valid"),
                "KeysReady": ("True", "Stale"),
            },
        ),
        (
            ISSUER,
            status(ISSUER),
            {"ready": False, "lastError": "connect_error: refused"},
            {
                "Ready": ("False", "KeysNotReady"),
                "Accepted": ("True", "Valid"),
                "KeysReady": ("False", "NotLoaded"),
            },
        ),
    ],
)
def test_desired_conditions(
    key: str,
    object_status: ObjectStatus | None,
    keys: dict[str, Any] | None,
    expected: dict[str, tuple[str, str]],
) -> None:
    conditions = desired_conditions(key, object_status, 7, keys)
    assert summary(conditions) == expected
    assert all(c["observedGeneration"] == 7 for c in conditions)


def test_messages_say_why() -> None:
    conditions = desired_conditions(
        POLICY, status(problems=(UNRESOLVED,), unresolved=(UNRESOLVED,)), 1
    )
    by_type = {c["type"]: c for c in conditions}
    assert by_type["ResolvedRefs"]["message"] == UNRESOLVED
    keys = desired_conditions(ISSUER, status(ISSUER), 1, {"ready": False, "lastError": "boom"})
    assert {c["type"]: c for c in keys}["KeysReady"]["message"] == "boom"


def test_merge_times_moves_only_changed_conditions() -> None:
    old = [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Accepted", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]
    desired = [
        {"type": "Ready", "status": "False", "reason": "Invalid"},
        {"type": "Accepted", "status": "True", "reason": "Valid"},
        {"type": "ResolvedRefs", "status": "True", "reason": "Resolved"},
    ]
    merged = {c["type"]: c["lastTransitionTime"] for c in merge_times(desired, old)}
    assert merged["Accepted"] == "2026-01-01T00:00:00Z"
    assert merged["Ready"] != "2026-01-01T00:00:00Z"  # the status changed: now
    assert merged["ResolvedRefs"] == merged["Ready"]  # new: now


def test_only_real_differences_are_written() -> None:
    a = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "t1"}],
    }
    same_but_time = {**a, "conditions": [{**a["conditions"][0], "lastTransitionTime": "t2"}]}
    new_generation = {**a, "observedGeneration": 2}
    assert _comparable(a) == _comparable(same_but_time)
    assert _comparable(a) != _comparable(new_generation)
    assert _comparable({}) is None


@pytest.mark.parametrize(
    ("kind", "generic"),
    [("JWTIssuer", True), ("ClusterJWTIssuer", False)],
)
def test_a_namespaced_issuer_status_keeps_fetch_errors_generic(kind: str, generic: bool) -> None:
    """What a fetch ran into (status code, refused connection) would make status a probe of
    what the authorizer can reach; namespace users get a generic message, admins the cause."""
    cause = "connect_error: http://10.0.0.7:8080/jwks: [Errno 111] Connection refused"
    keys = shown_keys(kind, {"ready": False, "lastError": cause, "source": "jwksUri x"})
    assert keys is not None
    assert keys["lastError"] == (GENERIC_FETCH_ERROR if generic else cause)
    conditions = {c["type"]: c for c in desired_conditions(ISSUER, status(ISSUER), 1, keys)}
    assert ("10.0.0.7" in conditions["KeysReady"]["message"]) is not generic
    assert ("10.0.0.7" in conditions["Ready"]["message"]) is not generic
    assert shown_keys(kind, None) is None
    assert shown_keys(kind, LOADED) == LOADED
