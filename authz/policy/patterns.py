"""Regular expressions matched in linear time: RE2, the engine Envoy and Istio use.

Python's `re` backtracks, so a policy glob with several `**` (or a claim `regex` written by
a tenant) could make one unauthenticated 8 KiB path hold a worker for seconds. RE2 runs
in time linear in the input whatever the pattern; it refuses the few constructs that
need backtracking (backreferences, lookaround), which `compile` reports as errors.
The low-level match call is used: the module's Python wrapper costs several times more
per match, and the Check path only needs a yes or no.
"""

from __future__ import annotations

import re2
from re2 import _re2

_FULL = _re2.RE2.Anchor.ANCHOR_BOTH


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # errors are raised to the caller, not printed by absl
    options.never_capture = True  # only whether it matches is needed
    return options


_OPTIONS = _options()


class PatternError(ValueError):
    """A pattern RE2 cannot compile (syntax, or a construct that needs backtracking)."""


class LinearPattern:
    """A compiled pattern; `fullmatch` says whether the whole text matches."""

    __slots__ = ("_regexp", "text")

    def __init__(self, text: str) -> None:
        try:
            self._regexp = re2.compile(text, _OPTIONS)._regexp
        except re2.error as exc:
            detail = exc.args[0] if exc.args else exc
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", "replace")
            raise PatternError(str(detail)) from None
        self.text = text

    def fullmatch(self, value: str) -> bool:
        data = value.encode("utf-8", "surrogatepass")
        return bool(self._regexp.Match(_FULL, data, 0, len(data))[0][0] >= 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearPattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"LinearPattern({self.text!r})"


# What a PatternSet matched, per (set, path) for paths up to _KEPT_PATH characters: RE2's
# Python binding releases the GIL for every match, and in the gRPC server's thread pool
# handing the GIL over (and waiting to get it back) costs a Check far more than the match
# itself (~10 us of server CPU per Check, measured). Bounded; emptied when full.
_MATCHED: dict[tuple[PatternSet, str], frozenset[str]] = {}
_MAX_MATCHED = 4096
_KEPT_PATH = 256


class PatternSet:
    """Every glob pattern of one policy in one RE2 set: a request's path is matched against
    all of them in a single pass (about what one pattern costs) instead of once per rule."""

    __slots__ = ("_set", "_texts")

    def __init__(self, patterns: list[LinearPattern]) -> None:
        self._texts = tuple(dict.fromkeys(p.text for p in patterns))
        compiled = re2.Set.FullMatchSet(_OPTIONS)
        for text in self._texts:
            compiled.Add(text)
        compiled.Compile()
        self._set = compiled._set

    def matching(self, value: str) -> frozenset[str]:
        """The texts of the patterns `value` matches (strings: their hashes are cached,
        where a pattern's would be computed by a Python method on every lookup)."""
        key = (self, value)  # the entry holds the set: a set's identity is never reused
        found = _MATCHED.get(key)
        if found is None:
            data = value.encode("utf-8", "surrogatepass")
            found = frozenset(map(self._texts.__getitem__, self._set.Match(data)))
            if len(value) <= _KEPT_PATH:
                if len(_MATCHED) >= _MAX_MATCHED:
                    _MATCHED.clear()
                _MATCHED[key] = found
        return found
