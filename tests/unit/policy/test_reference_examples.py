"""The YAML examples in the hand-written reference pages are valid policy: a full object
validates as it stands, a `rules:` fragment inside a minimal AuthzPolicy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.policy.validate import validate_document

DOCS = Path(__file__).resolve().parents[3] / "docs"
PAGES = ("reference/decisions.md", "migrate-istio.md")
BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, Any]]:
    out = []
    for page in PAGES:
        for i, text in enumerate(BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))):
            out.append((f"{page}[{i}]", yaml.safe_load(text)))
    return out


@pytest.mark.parametrize(("where", "doc"), _blocks(), ids=[w for w, _ in _blocks()])
def test_reference_yaml_is_valid(where: str, doc: dict[str, Any]) -> None:
    if "kind" not in doc:
        assert set(doc) == {"rules"}, where
        doc = {
            "apiVersion": "authz.io/v1alpha1",
            "kind": "AuthzPolicy",
            "metadata": {"name": "example"},
            "spec": {"targets": {"hosts": ["*"]}, "issuers": [{"name": "idp"}], **doc},
        }
    validate_document(doc, where)
