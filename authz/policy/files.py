"""The embedded default source: a directory of Kubernetes-style YAML, watched for changes.

Polling (not inotify) so that Kubernetes ConfigMap volumes, which swap a
`..data` symlink, and editors that write via rename are both seen. A file that
no longer parses keeps its last good documents; an invalid object keeps its
last good version in the store.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml

from authz.policy.store import PolicyStore
from authz.policy.validate import PolicyError, PolicyObject, validate_document

log = structlog.get_logger("authz.policy")

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass
class ScanResult:
    objects: list[PolicyObject] = field(default_factory=list)
    failures: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    file_errors: list[str] = field(default_factory=list)


_WITHOUT_TIMESTAMPS = {
    first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith(":timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# libyaml parses about 8x faster than pure Python (1000 policies: ~4 s instead of ~30 s).
_CLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_CLoader):  # type: ignore[misc]
    """YAML as Kubernetes reads it (sigs.k8s.io/yaml goes through JSON): a date is a string.
    Strings are interned: every object's document stays in memory (its last good version)
    and policies repeat keys and values (`paths`, `GET`, scope names) thousands of times;
    1000 policies held 14 MB of duplicate strings (issue 14, memory target)."""

    yaml_implicit_resolvers = _WITHOUT_TIMESTAMPS

    def construct_interned_str(self, node: Any) -> str:
        return sys.intern(self.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_interned_str)


def documents(text: str) -> list[object]:
    """The non-empty documents of a YAML stream; raises yaml.YAMLError for anything unusable.
    Anchors and aliases are refused: an alias can make a document refer to itself or expand
    exponentially (billion laughs) in what validation then walks. PyYAML's scalar
    constructors raise other errors for some malformed input (`!!int 0x`, `!!timestamp x`)
    and deep nesting recurses: all are YAMLErrors here."""
    try:
        for event in yaml.parse(text, Loader=_CLoader):
            if isinstance(event, yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "aliases (*name) are not supported",
                    event.start_mark,  # type: ignore[arg-type]
                )
        return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise yaml.YAMLError(f"{type(exc).__name__}: {exc}") from None


def _files(root: Path) -> Iterator[Path]:
    """Every non-hidden file below root, sorted, following symlinks."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            yield path


class DirectorySource:
    """Reads policy documents from a directory; remembers each file's last good parse."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._last_docs: dict[Path, list[object]] = {}

    def signature(self) -> tuple[tuple[str, int, int, int], ...]:
        """Cheap change detection over every file (policies and the key files they name)."""
        out = []
        for path in _files(self.root):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def scan(self) -> ScanResult:
        result = ScanResult()
        if not self.root.is_dir():
            result.file_errors.append(f"{self.root}: policy directory not found")
            return result
        seen: dict[str, str] = {}
        docs_by_file: dict[Path, list[object]] = {}
        for path in _files(self.root):
            if path.suffix not in POLICY_SUFFIXES:
                continue
            try:
                docs = documents(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                kept = self._last_docs.get(path)
                note = "; keeping its last good version" if kept is not None else ""
                result.file_errors.append(f"{path}: cannot parse: {_short(exc)}{note}")
                if kept is None:
                    continue
                docs = kept
            docs_by_file[path] = docs
            for doc in docs:
                try:
                    obj = validate_document(doc, str(path))
                except PolicyError as exc:
                    if exc.key is None:
                        result.file_errors.append(str(exc))
                    else:
                        result.failures[exc.key] = (str(path), exc.problems)
                    continue
                if obj.key in seen:
                    result.file_errors.append(
                        f"{path}: {obj.key} is already defined in {seen[obj.key]}; ignored"
                    )
                    continue
                seen[obj.key] = str(path)
                result.objects.append(obj)
        self._last_docs = docs_by_file
        return result


def _newest_write(
    before: tuple[tuple[str, int, int, int], ...], after: tuple[tuple[str, int, int, int], ...]
) -> float:
    """When the change was made: the newest mtime among new or changed files (a deletion
    has none, so it counts from now). Includes the polling delay, as users experience it."""
    old = set(before)
    changed = [entry[1] for entry in after if entry not in old]
    return max(changed) / 1e9 if changed else time.time()


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())


def load(source: DirectorySource, store: PolicyStore) -> ScanResult:
    """Scan once and update the store; file-level errors are logged here."""
    result = source.scan()
    for error in result.file_errors:
        log.error("policy file rejected", error=error)
    store.update(result.objects, result.failures)
    return result


class DirectoryWatcher:
    """Polls the directory and reloads on change; a change is serving within about 2 polls."""

    def __init__(self, source: DirectorySource, store: PolicyStore, interval: float = 0.25) -> None:
        self._source = source
        self._store = store
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
        self._last = source.signature()
        self.propagation: Callable[[float], None] | None = None  # seconds, file written -> serving

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                current = self._source.signature()
                if current != self._last:
                    written = _newest_write(self._last, current)
                    self._last = current
                    load(self._source, self._store)
                    if self.propagation is not None:
                        self.propagation(max(0.0, time.time() - written))
            except Exception:  # a reload must never kill the watcher; the last snapshot serves on
                log.exception("policy reload failed; keeping the current snapshot")
