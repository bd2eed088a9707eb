"""Each upstream binary from tests/support/testbin.py builds (or is cached) and runs.

A cold cache builds here (minutes per tool, ~15 for kube-apiserver; `make testbin` does it
up front), so the build is taken out of the per-test timeout.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support import testbin
from tests.support.kube_fixtures import alarm_paused

pytestmark = pytest.mark.e2e

EXPECTED: dict[str, re.Pattern[str]] = {
    "etcd": re.compile(r"etcd Version: 3\.6\.\d+"),
    "kube-apiserver": re.compile(rf"Kubernetes {re.escape(testbin.KUBERNETES_VERSION)}\b"),
    "helm": re.compile(rf"^{re.escape(testbin.HELM_VERSION)}(\+\S*)?$", re.M),
    "hydra": re.compile(rf"Version:\s+{re.escape(testbin.HYDRA_VERSION)}\b"),
    "opa-envoy": re.compile(
        rf"Version: {re.escape(testbin.OPA_ENVOY_VERSION.removeprefix('v'))}\b"
    ),
    "ghz": re.compile(rf"^{re.escape(testbin.GHZ_VERSION)}$", re.M),
    "kubeconform": re.compile(rf"^{re.escape(testbin.KUBECONFORM_VERSION)}$", re.M),
    # Built as a dependency of a main package of our own, so it knows its version.
    "caddy": re.compile(rf"^{re.escape(testbin.CADDY_VERSION)} h1:", re.M),
    "helm-docs": re.compile(
        rf"helm-docs version {re.escape(testbin.HELM_DOCS_VERSION.removeprefix('v'))}$", re.M
    ),
    "promtool": re.compile(rf"promtool, version {re.escape(testbin.PROMETHEUS_VERSION)}\b"),
}


def test_version_table_is_complete() -> None:
    assert set(EXPECTED) == set(testbin.TOOLS)
    for name, tool in testbin.TOOLS.items():
        assert testbin.binary_path(tool).name == name
        assert testbin.binary_path(tool).parent.name == f"{name}-{tool.version}"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_binary_runs_and_reports_its_version(name: str) -> None:
    with alarm_paused():
        binary = testbin.path(name)
    tool = testbin.TOOLS[name]
    out = subprocess.run(
        [binary, *tool.version_args], capture_output=True, text=True, timeout=60, check=False
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert EXPECTED[name].search(text), text


def test_path_is_cached_and_stable() -> None:
    with alarm_paused():
        first = testbin.path("etcd")
    assert testbin.path("etcd") == first
    assert first.is_relative_to(testbin.cache_root())


def test_unknown_tool_is_rejected() -> None:
    with pytest.raises(KeyError, match="unknown test binary"):
        testbin.path("kubectl")
