"""One AdmissionReview: the applied object checked together with everything the cluster
already holds, as the controller would build it, so `kubectl apply` refuses what the
controller would refuse, in the same words as `authz lint --kubernetes`.

An error of the object itself denies it (status 422 with every message); its warnings
(and rules that can never match) come back as admission warnings, which kubectl prints.
Problems of other objects are not this request's to answer for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from authz.lint.findings import check
from authz.policy import schema
from authz.policy.kube import ClusterValidator

MAX_WARNINGS = 20  # kubectl prints each; more than this is noise


def object_key(obj: Mapping[str, Any], namespace: str | None) -> str:
    meta = obj.get("metadata") or {}
    kind = obj.get("kind", "")
    if kind in schema.CLUSTER_SCOPED:
        return f"{kind}/{meta.get('name')}"
    return f"{kind}/{meta.get('namespace') or namespace}/{meta.get('name')}"


def review(
    doc: Any, cluster: Mapping[str, dict[str, Any]], validator: ClusterValidator
) -> dict[str, Any]:
    """The AdmissionReview (admission.k8s.io/v1) answering `doc`, checked against
    `cluster` (key -> the objects the cluster holds). `validator` is the controller's
    cluster validation (with its Secret and ConfigMap readers), kept from review to review:
    it caches by object fingerprint, so a review validates the applied object only."""
    request = doc.get("request") if isinstance(doc, dict) else None
    if not isinstance(request, dict):
        return _answer("", True)  # not a review: nothing to refuse (the server answers 400)
    uid = str(request.get("uid", ""))
    obj = request.get("object")
    if request.get("operation") not in ("CREATE", "UPDATE") or not isinstance(obj, dict):
        return _answer(uid, True)
    obj = dict(obj)
    if obj.get("kind") not in schema.CLUSTER_SCOPED and request.get("namespace"):
        obj["metadata"] = {"namespace": request["namespace"], **(obj.get("metadata") or {})}
    key = object_key(obj, request.get("namespace"))
    candidates = dict(cluster)
    candidates[key] = obj
    objects, failures = validator.validate(candidates.values())
    mine = check(objects, failures).about(key)
    errors = [f.message for f in mine if f.level == "error"]
    warnings = [f"{key}: {f.message}" for f in mine if f.level == "warning"][:MAX_WARNINGS]
    if errors:
        return _answer(uid, False, warnings, f"{key}: " + "; ".join(errors))
    return _answer(uid, True, warnings)


def _answer(
    uid: str, allowed: bool, warnings: list[str] | None = None, message: str = ""
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if warnings:
        response["warnings"] = warnings
    if not allowed:
        response["status"] = {"code": 422, "reason": "Invalid", "message": message}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


_Value = TypeVar("_Value")


def cached(
    read: Callable[[str, str, str], _Value], seconds: float = 30.0
) -> Callable[[str, str, str], _Value]:
    """A Secret or ConfigMap key read once per `seconds`: a review re-validates every
    object, and most of them name the same few."""
    memo: dict[tuple[str, str, str], tuple[float, _Value | ValueError]] = {}

    def reader(namespace: str, name: str, key: str) -> _Value:
        now = time.monotonic()
        hit = memo.get((namespace, name, key))
        if hit is None or now - hit[0] > seconds:
            try:
                value: _Value | ValueError = read(namespace, name, key)
            except ValueError as exc:
                value = exc
            hit = memo[(namespace, name, key)] = (now, value)
        if isinstance(hit[1], ValueError):
            raise hit[1]
        return hit[1]

    return reader
