"""`authz convert istio` against the real API server: the Istio examples it is tested on
pass Istio's own CRD schemas (CEL included), and what it writes passes authz's CRDs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.convert.istio import Options, convert
from tests.support import kube_fixtures, manifests, upstream_crds
from tests.support.istio_examples import EXAMPLES, Example
from tests.support.kube import ControlPlane

control_plane = kube_fixtures.control_plane
control_plane_users = kube_fixtures.control_plane_users

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    with kube_fixtures.alarm_paused():
        istio = upstream_crds.istio_crds({"AuthorizationPolicy", "RequestAuthentication"})
    ours = [d for d in yaml.safe_load_all((REPO / manifests.CRDS_FILE).read_text()) if d]
    manifests.install_crds(control_plane, [*istio, *ours])
    control_plane.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("foo",)]
    )
    yield control_plane


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_and_its_conversion_pass_the_api_server(
    example: Example, cluster: ControlPlane
) -> None:
    docs: list[dict[str, Any]] = example.docs()
    cluster.apply(docs, dry_run=True)  # Istio's schema accepts the input
    converted = convert(docs, Options(**example.options)).objects
    cluster.apply(converted, dry_run=True)  # authz's schema accepts the output
