"""Every problem of a set of policy objects, found in one pass: the checks `authz lint` and
the admission webhook share, so both say what the server would, in the same words.

The objects are built exactly as the server builds them (schema, cross-field rules,
regexes, references, key material), without fetching any keys; an object the server
would refuse is an error, one it would serve with problems a warning, and so is a rule
that can never match (authz.lint.rules).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from authz.keys.remote import KeyManager
from authz.lint.rules import never_matching
from authz.policy import schema
from authz.policy.compile import CompileError, compile_policy
from authz.policy.store import PolicyStore
from authz.policy.validate import PolicyObject

Level = Literal["error", "warning"]
_FIELD_ROOTS = ("spec", "metadata", "apiVersion", "kind")


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    origin: str  # a file, "<stdin>", or "kubernetes Kind/ns/name"
    object: str | None  # the object's key; None for a problem with the file itself
    message: str  # "spec.rules[0].match.paths[1]: why", as the server's status says it

    @property
    def field(self) -> str | None:
        """The field path the message starts with, if it names one."""
        head, sep, _ = self.message.partition(": ")
        if sep and head.split(".", 1)[0].split("[", 1)[0] in _FIELD_ROOTS:
            return head
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "origin": self.origin,
            "object": self.object,
            "field": self.field,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class Checked:
    """What one lint pass found, and every object it looked at (key -> origin, accepted)."""

    findings: tuple[Finding, ...]
    objects: Mapping[str, tuple[str, bool]]

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.level == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.level == "warning")

    def about(self, key: str) -> list[Finding]:
        return [f for f in self.findings if f.object == key]


def check(
    objects: Iterable[PolicyObject],
    failures: Mapping[str, tuple[str, list[str]]],
    file_errors: Iterable[tuple[str, str]] = (),
    notes: Iterable[tuple[str, str]] = (),
) -> Checked:
    """Build `objects` as the server would (no key fetching) and report every problem.
    `failures`: key -> (origin, problems) of objects that did not validate; `file_errors`:
    (origin, message) for files that could not be read or parsed; `notes`: (origin,
    message) warnings about the input itself."""
    objects = list(objects)
    store = PolicyStore({}, KeyManager(start=False))
    try:
        store.update(objects, dict(failures))
        findings = [Finding("error", origin, None, message) for origin, message in file_errors]
        findings += [Finding("warning", origin, None, message) for origin, message in notes]
        for status in sorted(store.statuses.values(), key=lambda s: s.key):
            level: Level = "warning" if status.accepted else "error"
            findings += [Finding(level, status.origin, status.key, p) for p in status.problems]
        accepted = {k for k, s in store.statuses.items() if s.accepted}
        issuers = {k: i for k in store.key_states() if (i := store.issuer(k)) is not None}
        for obj in objects:
            if obj.kind != schema.POLICY_KIND or obj.key not in accepted:
                continue
            findings += _selected_elsewhere(obj, issuers)
            findings += [
                Finding("warning", obj.origin, obj.key, w) for w in never_matching(obj.spec)
            ]
        seen = {k: (s.origin, s.accepted) for k, s in store.statuses.items()}
    finally:
        store.close()
    return Checked(tuple(findings), seen)


def _selected_elsewhere(obj: PolicyObject, issuers: Mapping[str, Any]) -> list[Finding]:
    """A policy with a workloadSelector compiles only where the labels match: compile it
    as its own workload would, so its regexes and references are checked here too."""
    selector = obj.spec["targets"].get("workloadSelector")
    if selector is None:
        return []
    try:
        result = compile_policy(obj, issuers, selector["matchLabels"])
    except CompileError as exc:
        return [Finding("error", obj.origin, obj.key, str(exc))]
    return [Finding("warning", obj.origin, obj.key, p) for p in result.problems]
