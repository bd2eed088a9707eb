"""The bounded fuzz run of `make test`: every target for a few hundred inputs, plus every
input that once broke a target (tests/security/regressions/<target>/*), replayed.

`make fuzz` runs the same targets coverage-guided under atheris for as long as asked;
a crash it finds is saved under .fuzz/artifacts/: copy it into regressions/<target>/.
FUZZ_EXAMPLES sets the examples per strategy here (default 300).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security import fuzz_targets

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
REGRESSIONS = Path(__file__).parent / "regressions"
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes replaced, inserted or deleted: inputs near the valid ones."""

    def apply(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(seed)
        for op, at, value in edits:
            i = at % (len(data) + 1)
            if op == 0 or not data:
                data.insert(i, value)
            elif op == 1 and i < len(data):
                data[i] = value
            elif i < len(data):
                del data[i]
        return bytes(data)

    edit = st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255))
    return st.builds(apply, st.sampled_from(seeds), st.lists(edit, max_size=8))


def inputs(target: str) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=1024), mutated(fuzz_targets.seeds(target)))


@FUZZ
@given(inputs("token"))
def test_fuzz_token(data: bytes) -> None:
    fuzz_targets.token(data)


@FUZZ
@given(inputs("policy"))
def test_fuzz_policy(data: bytes) -> None:
    fuzz_targets.policy(data)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.lists(st.binary(max_size=80), min_size=1, max_size=8).map(b"\n".join),
        mutated(fuzz_targets.seeds("check")),
    )
)
def test_fuzz_check(data: bytes) -> None:
    fuzz_targets.check(data)


@FUZZ
@given(inputs("dpop"))
def test_fuzz_dpop(data: bytes) -> None:
    fuzz_targets.dpop(data)


@FUZZ
@given(st.text(max_size=600))
def test_fuzz_policy_yaml_text(text: str) -> None:
    fuzz_targets.policy(b"\0" + text.encode())


def _regressions() -> list[tuple[str, Path]]:
    return [
        (target.name, path)
        for target in sorted(REGRESSIONS.iterdir())
        for path in sorted(target.iterdir())
    ]


@pytest.mark.parametrize(("target", "path"), _regressions(), ids=lambda v: getattr(v, "name", v))
def test_regression(target: str, path: Path) -> None:
    fuzz_targets.TARGETS[target](path.read_bytes())


def test_every_target_has_seeds() -> None:
    for name, target in fuzz_targets.TARGETS.items():
        for seed in fuzz_targets.seeds(name):
            target(seed)
