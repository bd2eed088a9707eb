"""YAML with comments: the generated configuration explains itself where it is read.

PyYAML cannot write comments, and a proxy setting without its reason is the one the next
person "simplifies" away. :class:`Document` pairs plain data (what ``yaml.safe_load`` gives
back) with notes, and :func:`to_yaml` writes block YAML with each note as ``#`` lines above
the key it explains. Small all-scalar mappings and lists go on one line, as people write them.

A note is keyed by ``(anchor, path)``: ``anchor`` is the ``@type`` of the nearest enclosing
typed message (Envoy's ``typed_config``; ``""`` at the document root, without the
``type.googleapis.com/`` prefix) and ``path`` the dotted keys below it. A list item that has a
``name`` adds ``[name]``, so ``static_resources.clusters[authz].connect_timeout`` names one
cluster's field and ``(ExtAuthz type, "failure_mode_allow")`` that field wherever the filter
appears, in a bootstrap or a snippet alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

TYPE_URL_PREFIX = "type.googleapis.com/"
LINE_WIDTH = 100
INDENT = "  "

Notes = Mapping[tuple[str, str], str]


@dataclass(frozen=True)
class Document:
    """One YAML document: ``header`` comment lines, then ``data`` annotated by ``notes``."""

    data: Any
    notes: Notes = field(default_factory=dict)
    header: str = ""


def to_yaml(*documents: Document) -> str:
    """Render documents separated by ``---``; ``yaml.safe_load_all`` returns their data."""
    parts = []
    for doc in documents:
        lines = [*_comment(doc.header, ""), ""] if doc.header else []
        lines += _Writer(doc.notes).block(doc.data, "", ("", ""))
        parts.append("\n".join(lines) + "\n")
    return "---\n".join(parts)


def comment_block(text: str) -> str:
    """``text`` as ``#`` lines (for formats other than YAML that use the same comments)."""
    return "\n".join(_comment(text, "")) + "\n"


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() for line in text.strip("\n").splitlines()]


_PLAIN_SAFE = re.compile(r"[\x20-\x7e]*")


def scalar(value: Any) -> str:
    """One scalar as YAML text that reads back as the same value (and type)."""
    if isinstance(value, str) and not _PLAIN_SAFE.fullmatch(value):
        return _escaped(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"))
    text = text.removesuffix("\n...\n").removesuffix("\n")
    if text.startswith("'") and '"' not in text and "\\" not in text:
        text = '"' + text[1:-1].replace("''", "'") + '"'  # "@type", as Envoy's docs write it
    return text


def _escaped(text: str) -> str:
    """A double-quoted scalar in printable ASCII: YAML's \\x, \\u and \\U escapes for the rest."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def _flow(value: Any) -> str | None:
    """One-line form of a mapping or list whose members are all scalars, else None."""
    members = value.values() if isinstance(value, Mapping) else value
    if not all(_is_scalar(m) for m in members):
        return None
    if isinstance(value, Mapping):
        pairs = [(scalar(k), scalar(v)) for k, v in value.items()]
        texts = [t for pair in pairs for t in pair]
        text = "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    else:
        texts = [scalar(v) for v in value]
        text = "[" + ", ".join(texts) + "]"
    # Inside brackets YAML reads more characters as syntax: keep plain scalars to the
    # ones that cannot be (quoted ones are safe), else write the block form.
    if not all(t[:1] in "'\"" or _FLOW_PLAIN.fullmatch(t) for t in texts):
        return None
    return text


_FLOW_PLAIN = re.compile(r"[A-Za-z0-9_.+/-]+")


class _Writer:
    """Block YAML with notes; ``where`` is the ``(anchor, path)`` of the value being written."""

    def __init__(self, notes: Notes) -> None:
        self.notes = notes

    def _noted_below(self, where: tuple[str, str]) -> bool:
        anchor, path = where
        return any(
            a == anchor and (p.startswith(f"{path}.") or p.startswith(f"{path}["))
            for a, p in self.notes
        )

    def _note(self, where: tuple[str, str], indent: str) -> list[str]:
        text = self.notes.get(where)
        return _comment(text, indent) if text else []

    def block(self, value: Any, indent: str, where: tuple[str, str]) -> list[str]:
        if isinstance(value, Mapping):
            return self._mapping(value, indent, where)
        if isinstance(value, list | tuple):
            return self._sequence(value, indent, where)
        return [indent + scalar(value)]

    def _inline(self, value: Any, where: tuple[str, str], room: int) -> str | None:
        """The value on the line of its key or dash, if it is short and explains nothing inside."""
        if _is_scalar(value):
            return scalar(value)
        if not value:
            return "{}" if isinstance(value, Mapping) else "[]"
        if isinstance(value, Mapping) and "@type" in value:
            return None
        if self._noted_below(where):
            return None
        text = _flow(value)
        return text if text is not None and len(text) <= room else None

    def _nested(self, value: Any, indent: str, where: tuple[str, str]) -> tuple[str, list[str]]:
        """(text after the key or dash, following lines) for a member value."""
        if isinstance(value, Mapping) and isinstance(value.get("@type"), str):
            where = (value["@type"].removeprefix(TYPE_URL_PREFIX), "")
        inline = self._inline(value, where, LINE_WIDTH - len(indent))
        if inline is not None:
            return " " + inline, []
        return "", self.block(value, indent + INDENT, where)

    def _mapping(self, value: Mapping[str, Any], indent: str, where: tuple[str, str]) -> list[str]:
        anchor, path = where
        lines: list[str] = []
        for key, member in value.items():
            inner = (anchor, f"{path}.{key}" if path else str(key))
            note = self._note(inner, indent)
            if note and lines:
                lines.append("")
            lines += note
            tail, body = self._nested(member, indent, inner)
            lines.append(f"{indent}{scalar(key)}:{tail}")
            lines += body
        return lines

    def _sequence(self, value: Sequence[Any], indent: str, where: tuple[str, str]) -> list[str]:
        anchor, path = where
        lines: list[str] = []
        for member in value:
            name = member.get("name") if isinstance(member, Mapping) else None
            inner = (anchor, f"{path}[{name}]") if isinstance(name, str) else where
            note = self._note(inner, indent) if isinstance(name, str) else []
            if note and lines:
                lines.append("")
            lines += note
            tail, body = self._nested(member, indent, inner)
            if tail or not isinstance(member, Mapping):
                lines.append(f"{indent}-{tail}")
                lines += body
                continue
            # A mapping item: its first key goes on the dash line, notes above the dash.
            first = next(i for i, line in enumerate(body) if not line.lstrip().startswith("#"))
            lines += [line for line in body[:first] if line.strip()]
            lines.append(f"{indent}- {body[first].lstrip()}")
            lines += body[first + 1 :]
        return lines
