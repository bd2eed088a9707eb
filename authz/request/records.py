"""`@record`: an immutable dataclass that is cheap to create, for the objects of every Check.

A frozen dataclass's `__init__` sets each field through `object.__setattr__` (its own
`__setattr__` refuses): about three times what a plain slots class pays, and a cache-hit
Check creates several (request view, credential, authentication, decision, outcome). A
record is a slots dataclass with plain assignment in `__init__`; the type checker treats
it as frozen (`dataclass_transform(frozen_default=True)`), so no code assigns to a field
(`make lint` refuses it), and it hashes and compares by value like a frozen one.

Some are shared: a kept Decision and Authentication serve every later Check of a hot token,
in any thread. They stay records, not frozen dataclasses: a frozen Decision would cost a
Check that builds one ~0.65 us (a rule's denial: 1.4 -> 2.1 us in-process). That nothing
assigns to a kept one at runtime either is tested (tests/unit/request/test_kept_results.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    @dataclass_transform(frozen_default=True, field_specifiers=(field,))
    def record(cls: type[T]) -> type[T]: ...

else:

    def record(cls: type[T]) -> type[T]:
        return dataclass(slots=True, unsafe_hash=True)(cls)
