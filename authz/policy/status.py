"""Truthful status on the cluster objects: conditions, key state and Events.

Computed from what the store actually serves (`PolicyStore.statuses`), written
only by the elected leader, and only when something changed, so our own
writes do not churn. Conditions follow metav1.Condition conventions:
`lastTransitionTime` moves only when a condition's status changes.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from authz.policy import schema
from authz.policy.build import CONFLICT, HOST_NOT_GRANTED, INVALID, ObjectStatus

log = structlog.get_logger("authz.status")


def _timestamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message[:32768],
        "observedGeneration": generation,
    }


def _keys_condition(keys: Mapping[str, Any], generation: int) -> dict[str, Any]:
    if not keys.get("ready"):
        message = (
            keys.get("lastError") or "; ".join(keys.get("warnings", [])) or "no key loaded yet"
        )
        return _condition("KeysReady", False, "NotLoaded", message, generation)
    kids = ", ".join(keys.get("kids", [])) or "no kid"
    if keys.get("stale"):
        message = f"serving {keys.get('count')} key(s) ({kids}) while refresh fails: {keys.get('lastError')}"
        return _condition("KeysReady", True, "Stale", message, generation)
    return _condition(
        "KeysReady", True, "Loaded", f"{keys.get('count')} key(s): {kids}", generation
    )


def desired_conditions(
    key: str, status: ObjectStatus | None, generation: int, keys: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Ready, Accepted, ResolvedRefs (policies) and KeysReady (issuers), without timestamps.
    An issuer is Ready only when its keys are loaded: that is what a user needs to know."""
    if status is None:
        return [_condition("Ready", False, "Pending", "not processed yet", generation)]
    problems = "; ".join(status.problems)
    refused = status.reason or INVALID
    accepted = _condition(
        "Accepted",
        status.accepted,
        "Valid" if status.accepted else refused,
        "the spec is valid" if status.accepted else problems,
        generation,
    )
    conditions = [accepted]
    unresolved = status.unresolved
    if key.startswith(f"{schema.POLICY_KIND}/"):
        conditions.append(
            _condition(
                "ResolvedRefs",
                not unresolved,
                "UnresolvedRefs" if unresolved else "Resolved",
                "; ".join(unresolved) or "all issuer references resolved",
                generation,
            )
        )
    keys_ready = None
    if keys is not None:
        keys_ready = _keys_condition(keys, generation)
        conditions.append(keys_ready)
    if status.accepted and keys_ready is not None and keys_ready["status"] == "False":
        ready = _condition("Ready", False, "KeysNotReady", keys_ready["message"], generation)
    elif status.accepted and not unresolved:
        ready = _condition("Ready", True, "Serving", "serving this generation", generation)
    elif status.accepted:
        ready = _condition("Ready", False, "UnresolvedRefs", "; ".join(unresolved), generation)
    elif refused == CONFLICT:  # it may still serve its other hosts; this generation is refused
        ready = _condition("Ready", False, CONFLICT, problems, generation)
    elif status.serving:
        ready = _condition(
            "Ready",
            False,
            "ServingLastGood",
            f"this generation is rejected, the last good version serves: {problems}",
            generation,
        )
    else:
        ready = _condition("Ready", False, refused, problems, generation)
    return [ready, *conditions]


# What a namespaced issuer's status says about a failed fetch: the cause (status code,
# connection refused, TLS) would make status a probe of what the authorizer can reach.
GENERIC_FETCH_ERROR = "keys could not be fetched; the authz log has the cause"


def shown_keys(kind: str, keys: dict[str, Any] | None) -> dict[str, Any] | None:
    """`status.keys` as written: a JWTIssuer (written by namespace users) gets the generic
    fetch error; files and ClusterJWTIssuers (admin-owned) keep the detail."""
    if keys is None or kind != "JWTIssuer" or "lastError" not in keys:
        return keys
    return {**keys, "lastError": GENERIC_FETCH_ERROR}


def merge_times(
    desired: list[dict[str, Any]], current: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Keep lastTransitionTime for conditions whose status did not change."""
    previous = {c.get("type"): c for c in current}
    now = _timestamp()
    out = []
    for condition in desired:
        old = previous.get(condition["type"])
        same = old is not None and old.get("status") == condition["status"]
        out.append(
            {**condition, "lastTransitionTime": old["lastTransitionTime"] if same and old else now}
        )
    return out


def _comparable(status: Mapping[str, Any] | None) -> Any:
    if not status:
        return None
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions", [])
    ]
    return (
        status.get("observedGeneration"),
        sorted(map(repr, conditions)),
        repr(status.get("keys")),
        repr(status.get("entries")),
    )


def _event_reason(status: ObjectStatus) -> str:
    if status.reason in (HOST_NOT_GRANTED, CONFLICT):
        return status.reason
    return "RejectedServingLastGood" if status.serving else "Rejected"


class StatusWriter:
    """Writes status for every object the source knows, when leader and when it differs."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        objects: Callable[[], Mapping[str, dict[str, Any]]],
        statuses: Callable[[], Mapping[str, ObjectStatus]],
        is_leader: Callable[[], bool],
        identity: str,
        keys_status: Callable[[str], dict[str, Any] | None] = lambda _key: None,
        entries_status: Callable[[str], dict[str, Any] | None] = lambda _key: None,
    ) -> None:
        self._identity = identity  # field manager and event reporter: shows who wrote what
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._objects = objects
        self._statuses = statuses
        self._is_leader = is_leader
        self._keys_status = keys_status
        self._entries_status = entries_status
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._evented: set[tuple[str, int, str]] = set()
        self._thread = threading.Thread(target=self._run, name="status-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=30)  # also a periodic pass, to retry failed writes
            self._wake.clear()
            if self._stop.is_set() or not self._is_leader():
                continue
            try:
                self.write_all()
            except Exception as exc:
                log.warning("status pass failed", error=" ".join(str(exc).split())[:200])

    def write_all(self) -> int:
        written = 0
        statuses = self._statuses()
        for key, obj in list(self._objects().items()):
            meta = obj.get("metadata", {})
            generation = int(meta.get("generation") or 0)
            status = statuses.get(key)
            current = obj.get("status") or {}
            keys = shown_keys(obj.get("kind", ""), self._keys_status(key))
            desired = desired_conditions(key, status, generation, keys)
            body: dict[str, Any] = {
                "observedGeneration": generation,
                "conditions": merge_times(desired, current.get("conditions", [])),
            }
            if keys is not None:
                body["keys"] = keys
            entries = self._entries_status(key)
            if entries is not None:
                body["entries"] = entries
            if status is not None and not status.accepted:
                self._event(obj, key, generation, status)
            if _comparable(body) == _comparable(current):
                continue
            if self._patch(obj, body):
                written += 1
        return written

    def _patch(self, obj: dict[str, Any], status: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        plural = schema.NAMES[obj["kind"]][0]
        try:
            if obj["kind"] in schema.CLUSTER_SCOPED:
                self._custom.patch_cluster_custom_object_status(
                    schema.GROUP,
                    schema.VERSION,
                    plural,
                    meta["name"],
                    {"status": status},
                    field_manager=self._identity,
                )
            else:
                self._custom.patch_namespaced_custom_object_status(
                    schema.GROUP,
                    schema.VERSION,
                    meta["namespace"],
                    plural,
                    meta["name"],
                    {"status": status},
                    field_manager=self._identity,
                )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                log.warning(
                    "status write failed",
                    object=meta.get("name"),
                    error=f"{exc.status} {exc.reason}",
                )
            return False
        return True

    def _event(self, obj: dict[str, Any], key: str, generation: int, status: ObjectStatus) -> None:
        """One Warning event per rejected generation and message."""
        message = "; ".join(status.problems)[:1024]
        marker = (key, generation, message)
        if marker in self._evented:
            return
        self._evented.add(marker)
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=meta["name"],
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
                resource_version=meta.get("resourceVersion"),
            ),
            reason=_event_reason(status),
            message=message,
            type="Warning",
            source=client.V1EventSource(component="authz"),
            reporting_component="authz",
            reporting_instance=self._identity,
            first_timestamp=datetime.datetime.now(datetime.UTC),
            last_timestamp=datetime.datetime.now(datetime.UTC),
            count=1,
        )
        try:
            self._core.create_namespaced_event(namespace, event)
        except ApiException as exc:
            log.warning(
                "event write failed", object=meta.get("name"), error=f"{exc.status} {exc.reason}"
            )
