"""The Kubernetes source: list + watch the authz.io kinds and feed the store.

One thread per (kind, namespace) keeps an in-memory copy of the objects:
list, then watch from the list's resourceVersion with bookmarks; a 410 Gone
relists, any other failure reconnects with capped exponential backoff, and the
watch is re-established every `resync` seconds so a silently dead connection
cannot freeze the view. Spec changes are debounced into one store rebuild;
status-only updates (our own writes) do not trigger rebuilds. If the API server
goes away the last snapshot keeps serving.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from authz.policy import compile_login as login
from authz.policy import schema
from authz.policy.compile import CA_BUNDLE_REF, CLIENT_SECRET_REF
from authz.policy.store import PolicyStore
from authz.policy.validate import PolicyError, PolicyObject, validate_document

log = structlog.get_logger("authz.kube")

# Fields that make the authorizer trust key material from its own filesystem: fine in a
# policy directory, never from a cluster object (a tenant must not choose files to trust).
# `fetch.caFile` stays allowed: in-cluster discovery needs the service account CA bundle.
FILE_FIELDS = ("jwksFile", "hmacSecretFile")


def _file_fields(spec: Mapping[str, Any]) -> list[str]:
    found = [f"spec.{f}" for f in FILE_FIELDS if f in spec]
    found += [
        f"spec.publicKeys[{i}].file"
        for i, k in enumerate(spec.get("publicKeys", ()))
        if "file" in k
    ]
    client_auth = spec.get("introspection", {}).get("clientAuth", {})
    found += [
        f"spec.introspection.clientAuth.{f}"
        for f in ("clientSecretFile", "privateKeyFile")
        if f in client_auth
    ]
    return found + login.file_fields(spec)


def _client_ref(spec: Mapping[str, Any]) -> str | None:
    """The introspection client credential a Secret holds (its field name), if any."""
    client_auth = (spec.get("introspection") or {}).get("clientAuth") or {}
    return next((f for f in ("clientSecretRef", "privateKeyRef") if f in client_auth), None)


SECRET_REFRESH_SECONDS = 300.0  # Secrets are read, not watched: re-read this often


class _Gone(Exception):
    """The resourceVersion is too old (410): relist."""


@dataclass(frozen=True, slots=True)
class Target:
    kind: str
    namespace: str | None  # None: all namespaces (or cluster-scoped)

    @property
    def plural(self) -> str:
        return schema.NAMES[self.kind][0]


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    kind = obj.get("kind", "")
    if kind in schema.CLUSTER_SCOPED:
        return f"{kind}/{meta.get('name')}"
    return f"{kind}/{meta.get('namespace')}/{meta.get('name')}"


def _fingerprint(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What a rebuild depends on; status and resourceVersion are not part of it. The uid and
    creation time tell a re-created object from the one it replaces."""
    meta = obj.get("metadata", {})
    return (
        meta.get("uid"),
        meta.get("creationTimestamp"),
        meta.get("generation"),
        repr(obj.get("spec")),
        repr(meta.get("labels")),
    )


class KubeSource:
    def __init__(
        self,
        api: client.ApiClient,
        store: PolicyStore,
        *,
        namespaces: Iterable[str] = (),
        debounce: float = 0.05,
        resync: float = 300.0,
        on_rebuild: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    ) -> None:
        self._api = client.CustomObjectsApi(api)
        self._validator = ClusterValidator(secret_reader(api), configmap_reader(api))
        self._store = store
        self._debounce = debounce
        self._resync = resync
        self._on_rebuild = on_rebuild
        scoped: list[str | None] = [*namespaces] or [None]
        self.targets = [
            Target(kind, None if kind in schema.CLUSTER_SCOPED else ns)
            for kind in schema.KINDS
            for ns in ([None] if kind in schema.CLUSTER_SCOPED else scoped)
        ]
        self.objects: dict[str, dict[str, Any]] = {}
        self._owner: dict[str, Target] = {}
        self._fingerprints: dict[str, tuple[Any, ...]] = {}
        self._synced: set[Target] = set()
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._watches: list[watch.Watch] = []
        self._threads: list[threading.Thread] = []
        self.changed_at: float | None = None  # when the oldest unapplied change was observed
        self.ready = False  # the first full sync has been applied
        self.propagation: Callable[[float], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        for target in self.targets:
            name = f"watch-{target.kind}-{target.namespace or 'all'}"
            self._threads.append(
                threading.Thread(target=self._run, args=(target,), name=name, daemon=True)
            )
        self._threads.append(
            threading.Thread(target=self._rebuild_loop, name="kube-rebuild", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        for w in list(self._watches):
            w.stop()

    @property
    def synced(self) -> bool:
        return len(self._synced) == len(self.targets)

    # -- list and watch --------------------------------------------------------------------

    def _run(self, target: Target) -> None:
        """Reconnect forever (kopf's infinite_watch): trivial on purpose."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version = self._list(target)
                backoff = 0.5
                while not self._stop.is_set():
                    version = self._watch(target, version)
            except _Gone:
                log.info("watch expired, relisting", kind=target.kind, namespace=target.namespace)
            except Exception as exc:  # API server down, network, auth: keep serving, retry
                log.warning(
                    "watch failed; retrying",
                    kind=target.kind,
                    namespace=target.namespace,
                    error=_short(exc),
                    retry_in=backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _call(self, target: Target, **kwargs: Any) -> Any:
        if target.kind in schema.CLUSTER_SCOPED:
            return self._api.list_cluster_custom_object(
                schema.GROUP, schema.VERSION, target.plural, **kwargs
            )
        if target.namespace is None:
            return self._api.list_cluster_custom_object(
                schema.GROUP, schema.VERSION, target.plural, **kwargs
            )
        return self._api.list_namespaced_custom_object(
            schema.GROUP, schema.VERSION, target.namespace, target.plural, **kwargs
        )

    def _list(self, target: Target) -> str:
        result = self._call(target, _request_timeout=30)
        items = result.get("items", [])
        with self._lock:
            fresh = {_key(o): o for o in items}
            for key in [k for k, t in self._owner.items() if t == target and k not in fresh]:
                self._forget(key)
            for key, obj in fresh.items():
                self._remember(key, obj, target)
            self._synced.add(target)
        self._mark_dirty()
        version: str = result.get("metadata", {}).get("resourceVersion", "")
        return version

    def _watch(self, target: Target, version: str) -> str:
        w = watch.Watch()
        self._watches.append(w)
        try:
            stream = w.stream(
                lambda **kw: self._call(target, **kw),
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=int(self._resync),
                _request_timeout=self._resync + 30,
            )
            for event in stream:
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    if isinstance(obj, dict) and obj.get("code") == 410:
                        raise _Gone
                    raise RuntimeError(f"watch error: {obj}")
                version = obj.get("metadata", {}).get("resourceVersion", version)
                if kind == "BOOKMARK":
                    continue
                key = _key(obj)
                with self._lock:
                    changed = (
                        self._forget(key) if kind == "DELETED" else self._remember(key, obj, target)
                    )
                if changed:
                    self._mark_dirty()
            return version
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone from exc
            raise
        finally:
            self._watches.remove(w)

    def _remember(self, key: str, obj: dict[str, Any], target: Target) -> bool:
        self.objects[key] = obj
        self._owner[key] = target
        fingerprint = _fingerprint(obj)
        changed = self._fingerprints.get(key) != fingerprint
        self._fingerprints[key] = fingerprint
        return changed

    def _forget(self, key: str) -> bool:
        self._owner.pop(key, None)
        self._fingerprints.pop(key, None)
        return self.objects.pop(key, None) is not None

    # -- rebuild ---------------------------------------------------------------------------

    def _mark_dirty(self) -> None:
        if self.changed_at is None:
            self.changed_at = time.monotonic()
        self._dirty.set()

    def _rebuild_loop(self) -> None:
        """Debounce bursts into one rebuild; the first rebuild waits for every initial list."""
        while not self._stop.is_set():
            if not self._dirty.wait(timeout=SECRET_REFRESH_SECONDS) and not self._uses_refs():
                continue  # quiet: rebuild only to pick up rotated Secrets and CA bundles
            if self._stop.is_set():
                return
            self._stop.wait(self._debounce)
            self._dirty.clear()
            if not self.synced:
                continue
            try:
                self.rebuild()
            except Exception:
                log.exception("rebuild failed; keeping the current snapshot")

    def _uses_refs(self) -> bool:
        with self._lock:
            return any(_references(o.get("spec") or {}) for o in self.objects.values())

    def rebuild(self) -> None:
        with self._lock:
            snapshot = dict(self.objects)
            fingerprints = dict(self._fingerprints)
            observed, self.changed_at = self.changed_at, None
        objects, failures = self._validator.validate(snapshot.values(), fingerprints)
        self._store.update(objects, failures, source="kubernetes")
        self.ready = True
        if observed is not None and self.propagation is not None:
            self.propagation(time.monotonic() - observed)
        if self._on_rebuild is not None:
            self._on_rebuild(snapshot)


SecretReader = Callable[[str, str, str], bytes]  # (namespace, name, key) -> value
ConfigMapReader = Callable[[str, str, str], str]  # (namespace, name, key) -> value


def _references(spec: Mapping[str, Any]) -> bool:
    """Whether the spec names a Secret or ConfigMap, re-read on every rebuild."""
    return (
        "hmacSecretRef" in spec
        or "caBundleRef" in (spec.get("fetch") or {})
        or _client_ref(spec) is not None
        or bool(login.secret_refs(spec))
    )


class ClusterValidator:
    """The same validation as files plus the cluster-only rules (no file fields, the CRDs'
    rules for namespaced issuers), cached by object fingerprint: a rebuild after one edit
    validates one object. Secrets and ConfigMaps named by references are read on every
    validation (they rotate without the object changing)."""

    def __init__(
        self,
        read_secret: SecretReader | None = None,
        read_configmap: ConfigMapReader | None = None,
    ) -> None:
        self._read_secret = read_secret
        self._read_configmap = read_configmap
        self._checked: dict[str, tuple[tuple[Any, ...], PolicyObject | _Failure]] = {}

    def validate(
        self,
        raw: Iterable[dict[str, Any]],
        fingerprints: Mapping[str, tuple[Any, ...]] | None = None,
    ) -> tuple[list[PolicyObject], dict[str, tuple[str, list[str]]]]:
        """Validate the objects; `fingerprints` (by key) saves computing them again."""
        objects: list[PolicyObject] = []
        failures: dict[str, tuple[str, list[str]]] = {}
        checked: dict[str, tuple[tuple[Any, ...], PolicyObject | _Failure]] = {}
        known = fingerprints or {}
        for obj in raw:
            key = _key(obj)
            fingerprint = known.get(key) or _fingerprint(obj)
            cached = self._checked.get(key)
            result = cached[1] if cached and cached[0] == fingerprint else _check(obj)
            checked[key] = (fingerprint, result)
            if isinstance(result, _Failure):
                failures[result.key] = (result.origin, result.problems)
                continue
            try:
                objects.append(self._resolve(result))
            except _RefError as exc:
                failures[result.key] = (result.origin, [str(exc)])
        self._checked = checked
        return objects, failures

    def _resolve(self, obj: PolicyObject) -> PolicyObject:
        """Read what the object's references name: a Secret's HMAC key becomes an inline
        JWK, a ConfigMap's CA bundle and an introspection client secret go into `refs`."""
        if "hmacSecretRef" in obj.spec:
            obj = _with_secret(obj, self._read_secret)
        if "caBundleRef" in obj.spec.get("fetch", {}):
            obj = _with_ca_bundle(obj, self._read_configmap)
        field_name = _client_ref(obj.spec)
        if field_name is not None:
            obj = _with_client_secret(obj, field_name, self._read_secret)
        refs = login.secret_refs(obj.spec)
        if refs:
            obj = _with_login_secrets(obj, refs, self._read_secret)
        return obj


@dataclass(frozen=True, slots=True)
class _Failure:
    key: str
    origin: str
    problems: list[str]


class _RefError(ValueError):
    """A reference that cannot be read; the message names the field."""


def _check(obj: dict[str, Any]) -> PolicyObject | _Failure:
    """Validation that depends on the object alone (cached by fingerprint)."""
    origin = f"kubernetes {_key(obj)}"
    try:
        validated = validate_document(_without_server_fields(obj), origin, "kubernetes")
    except PolicyError as exc:
        return _Failure(exc.key or _key(obj), origin, exc.problems)
    file_fields = _file_fields(validated.spec)
    if file_fields:
        return _Failure(
            validated.key,
            origin,
            [
                f"{f}: reads the authorizer's filesystem; not allowed on cluster objects"
                for f in file_fields
            ],
        )
    return validated


def validate_objects(
    raw: Iterable[dict[str, Any]],
    read_secret: SecretReader | None = None,
    read_configmap: ConfigMapReader | None = None,
) -> tuple[list[PolicyObject], dict[str, tuple[str, list[str]]]]:
    """Validate cluster objects once, without a cache (see ClusterValidator)."""
    return ClusterValidator(read_secret, read_configmap).validate(raw)


def _ref_namespace(obj: PolicyObject, ref: Mapping[str, Any], what: str) -> str:
    """Where a reference points: a JWTIssuer reads its own namespace only, a ClusterJWTIssuer
    must say which."""
    if obj.namespace is not None and ref.get("namespace", obj.namespace) != obj.namespace:
        raise ValueError(
            "namespace is for ClusterJWTIssuer only; a JWTIssuer reads its own namespace"
        )
    namespace = ref.get("namespace") or obj.namespace
    if namespace is None:
        raise ValueError(f"a ClusterJWTIssuer must name the {what}'s namespace")
    return str(namespace)


def _with_secret(obj: PolicyObject, read_secret: SecretReader | None) -> PolicyObject:
    """Replace `hmacSecretRef` by an inline `kty: oct` JWK holding the Secret's value."""
    ref = obj.spec["hmacSecretRef"]
    try:
        namespace = _ref_namespace(obj, ref, "Secret")
        if read_secret is None:
            raise ValueError("Secrets cannot be read here")
        value = read_secret(namespace, ref["name"], ref["key"]).removesuffix(b"\n")
    except ValueError as exc:
        raise _RefError(f"spec.hmacSecretRef: {exc}") from None
    secret_jwk = {"kty": "oct", "k": base64.urlsafe_b64encode(value).rstrip(b"=").decode()}
    spec = {k: v for k, v in obj.spec.items() if k != "hmacSecretRef"}
    spec["jwks"] = {"keys": [secret_jwk]}
    return replace(obj, spec=spec)


def _with_ca_bundle(obj: PolicyObject, read_configmap: ConfigMapReader | None) -> PolicyObject:
    """The PEM text `fetch.caBundleRef` names, for the compiler (`refs`)."""
    ref = obj.spec["fetch"]["caBundleRef"]
    try:
        namespace = _ref_namespace(obj, ref, "ConfigMap")
        if read_configmap is None:
            raise ValueError("ConfigMaps cannot be read here")
        pem = read_configmap(namespace, ref["name"], ref["key"])
    except ValueError as exc:
        raise _RefError(f"spec.{CA_BUNDLE_REF}: {exc}") from None
    return replace(obj, refs={**obj.refs, CA_BUNDLE_REF: pem})


def _with_client_secret(
    obj: PolicyObject, field_name: str, read_secret: SecretReader | None
) -> PolicyObject:
    """The introspection client secret or private key a Secret holds, for the compiler
    (`refs`; one trailing newline is not part of it)."""
    ref = obj.spec["introspection"]["clientAuth"][field_name]
    try:
        namespace = _ref_namespace(obj, ref, "Secret")
        if read_secret is None:
            raise ValueError("Secrets cannot be read here")
        value = read_secret(namespace, ref["name"], ref["key"])
    except ValueError as exc:
        raise _RefError(f"spec.introspection.clientAuth.{field_name}: {exc}") from None
    value = value[:-2] if value.endswith(b"\r\n") else value.removesuffix(b"\n")
    secret = value.decode("utf-8", "surrogateescape")
    return replace(obj, refs={**obj.refs, CLIENT_SECRET_REF: secret})


def _with_login_secrets(
    obj: PolicyObject, refs: Mapping[str, Mapping[str, str]], read_secret: SecretReader | None
) -> PolicyObject:
    """The client secret, private key and session key ring a login block names, read from
    Secrets in the policy's own namespace, for the compiler (`refs`)."""
    read: dict[str, str] = {}
    for key, ref in refs.items():
        try:
            if read_secret is None:
                raise ValueError("Secrets cannot be read here")
            if obj.namespace is None:
                raise ValueError("only a namespaced AuthzPolicy reads Secrets")
            value = read_secret(obj.namespace, ref["name"], ref["key"])
            read[key] = value.decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _RefError(f"spec.{key}: {exc}") from None
    return replace(obj, refs={**obj.refs, **read})


def _without_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Status is ours, not the user's; metadata keeps what validation reads."""
    meta = obj.get("metadata", {})
    kept = {
        k: meta[k]
        for k in ("name", "namespace", "labels", "generation", "creationTimestamp")
        if k in meta
    }
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": kept,
        "spec": obj.get("spec"),
    }


def secret_reader(api: client.ApiClient) -> SecretReader:
    """GET one Secret key; errors become ValueError with a message fit for status."""
    core = client.CoreV1Api(api)

    def read(namespace: str, name: str, key: str) -> bytes:
        value = _read_key("Secret", core.read_namespaced_secret, namespace, name, key)
        return base64.b64decode(value)

    return read


def configmap_reader(api: client.ApiClient) -> ConfigMapReader:
    """GET one ConfigMap key; errors become ValueError with a message fit for status."""
    core = client.CoreV1Api(api)

    def read(namespace: str, name: str, key: str) -> str:
        return str(_read_key("ConfigMap", core.read_namespaced_config_map, namespace, name, key))

    return read


def _read_key(kind: str, get: Callable[..., Any], namespace: str, name: str, key: str) -> Any:
    """One key of the Secret or ConfigMap `get` reads (a CoreV1Api method)."""
    try:
        found = get(name, namespace, _request_timeout=10)
    except ApiException as exc:
        raise ValueError(
            f"cannot read {kind} {namespace}/{name}: {exc.status} {exc.reason}"
        ) from None
    data = found.data or {}
    if key not in data:
        raise ValueError(f"{kind} {namespace}/{name} has no key {key!r}")
    return data[key]


def _short(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return " ".join(str(exc).split())[:300] or type(exc).__name__
