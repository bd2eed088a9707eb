"""`@record`: an immutable dataclass that is cheap to create, for the objects of every Check.

A frozen dataclass's `__init__` sets each field through `object.__setattr__` (its own
`__setattr__` refuses): about three times what a plain slots class pays, and a cache-hit
Check creates several (request view, credential, authentication, decision, outcome). A
record is a slots dataclass with plain assignment in `__init__`; the type checker treats
it as frozen (`dataclass_transform(frozen_default=True)`), so no code assigns to a field
(`make lint` refuses it), and it hashes and compares by value like a frozen one.
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
