"""Generated YAML reads back as exactly the data it was written from, notes where they belong."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.proxyconfig.render import Document, to_yaml

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.text(alphabet=":,[]{}#&*!|>'\"%@`?-. \t\nab0", max_size=8)  # YAML's indicators
    | st.sampled_from(["@type", "*", "yes", "0.5s", "a: b", "- x", "#", "{}", "null", "'q'", '"q"'])
)
KEYS = (
    st.text(max_size=12)
    | st.text(alphabet=":,[]{}#&*!?- ab", max_size=5)
    | st.sampled_from(["@type", "name", "on", "1", "*", "a b"])
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, DATA, max_size=5))
def test_any_data_reads_back_unchanged(data: dict[str, Any]) -> None:
    assert yaml.safe_load(to_yaml(Document(data))) == (data or None)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(KEYS, DATA, min_size=1, max_size=3), min_size=1, max_size=3))
def test_documents_read_back_in_order(docs: list[dict[str, Any]]) -> None:
    text = to_yaml(*(Document(d, header="a\nheader") for d in docs))
    assert list(yaml.safe_load_all(text)) == docs


TYPED = "type.googleapis.com/example.v1.Filter"


def test_notes_sit_above_their_key_at_its_indent() -> None:
    data = {
        "admin": {"port": 1},
        "clusters": [{"name": "authz", "timeout": "1s"}, {"name": "other", "timeout": "2s"}],
        "filter": {"@type": TYPED, "fail_open": False, "inner": {"x": 1}},
    }
    notes = {
        ("", "admin"): "why admin",
        ("", "clusters[authz].timeout"): "authz's timeout\nsecond line",
        ("", "clusters[other]"): "the other cluster",
        ("example.v1.Filter", "fail_open"): "typed field",
        ("example.v1.Filter", "inner.x"): "deep",
    }
    text = to_yaml(Document(data, notes, header="top"))
    assert text.startswith("# top\n\n# why admin\nadmin: {port: 1}\n")
    assert "    # authz's timeout\n    # second line\n    timeout: 1s\n" in text
    assert "  # the other cluster\n  - {name: other, timeout: 2s}\n" in text
    assert "  # typed field\n  fail_open: false\n" in text
    assert "    # deep\n    x: 1\n" in text  # a noted member keeps its mapping in block style
    assert yaml.safe_load(text) == data


def test_short_scalar_collections_stay_on_one_line() -> None:
    data = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}}
    text = to_yaml(Document({**data, "domains": ["*"], "empty": {}, "none": []}))
    assert "  socket_address: {address: 127.0.0.1, port_value: 9901}\n" in text
    assert 'domains: ["*"]\n' in text
    assert "empty: {}\nnone: []\n" in text
