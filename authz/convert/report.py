"""What a conversion could not carry over exactly, for the person migrating."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# note: the meaning is kept (said for the record); stricter: authz refuses more than the
# source did; omitted: a rule or object left out (never one that would allow more);
# review: kept as the source says, but worth a look (plain-http key URLs, say).
Level = Literal["note", "stricter", "omitted", "review"]


@dataclass(frozen=True, slots=True)
class Note:
    level: Level
    where: str  # `AuthorizationPolicy/ns/name: spec.rules[0].from[1].source.principals`
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper():<8} {self.where}: {self.message}"


@dataclass
class Report:
    notes: list[Note] = field(default_factory=list)

    def add(self, level: Level, where: str, message: str) -> None:
        note = Note(level, where, message)
        if note not in self.notes:
            self.notes.append(note)

    @property
    def exact(self) -> bool:
        """Everything was translated with its meaning (only notes)."""
        return all(n.level == "note" for n in self.notes)

    def render(self) -> str:
        if not self.notes:
            return "# every object was translated exactly\n"
        return "".join(f"# {n}\n" for n in self.notes)
