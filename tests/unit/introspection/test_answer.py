"""Introspection answers read strictly: an answer, an answer about a bad token, or no answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from authz.introspection.answer import MAX_DEPTH, AnswerError, decode, read


def test_inactive_carries_nothing_else() -> None:
    """RFC 7662 2.2: for an inactive token nothing else in the answer means anything."""
    answer = read({"active": False, "sub": "mallory", "scope": "admin"})
    assert not answer.active and answer.claims == {}


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"active"',
        b"{}",
        b'{"active": "true"}',
        b'{"active": 1}',
        b'{"active": null}',
    ],
)
def test_no_boolean_active_is_no_answer(body: bytes) -> None:
    with pytest.raises(AnswerError):
        read(decode(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"active": true, "active": false}',
        b'{"active": true, "exp": NaN}',
        b'{"active": true, "exp": Infinity}',
        b"{" + b'"a":' * 1 + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b', "active": true}',
        b"[" * 100_000,
        b"\xff\xfe{}",
        b"not json",
    ],
)
def test_ambiguous_or_unreadable_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(AnswerError):
        decode(body)


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("exp", "1419356238"),
        ("exp", True),
        ("iat", [1]),
        ("nbf", 10**400),
        ("scope", ["read", "write"]),
        ("sub", 42),
        ("aud", 7),
        ("aud", ["a", 1]),
        ("client_id", None),
        ("iss", {"x": 1}),
    ],
)
def test_active_with_a_wrongly_typed_member_names_the_problem(member: str, value: Any) -> None:
    raw = (
        json.dumps({"active": True, member: value}).encode()
        if member != "nbf"
        else (b'{"active": true, "nbf": 1' + b"0" * 400 + b"}")
    )
    answer = read(decode(raw))
    assert answer.active and answer.problem is not None and member in answer.problem
