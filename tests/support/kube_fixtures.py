"""Pytest fixtures for the real control plane (:mod:`tests.support.kube`).

Use from a conftest (or a test module)::

    from tests.support.kube_fixtures import control_plane, control_plane_users  # noqa: F401

    def test_x(control_plane):
        with control_plane.api_client() as api: ...

``control_plane`` is session scoped: one etcd + kube-apiserver per test session (per xdist
worker), stopped at the end. Importing the fixtures into several modules/conftests is safe:
all of them share one running ControlPlane (reference counted), so no second API server
starts.

Static users: override the session-scoped ``control_plane_users`` fixture (name -> groups)
in a conftest, or use the defaults in :data:`DEFAULT_USERS`; tokens come from
``control_plane.token_for(name, groups)``.

The first test to use the fixture pays for starting the control plane (~30-60 s on 2 cores)
and, if ``make testbin`` has not run yet, for building etcd and kube-apiserver (~15 min).
That time is taken out of pytest-timeout's per-test SIGALRM budget (start itself is
bounded by its own timeouts).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

import pytest

from tests.support.kube import ControlPlane
from tests.support.procs import alarm_paused

__all__ = ["alarm_paused", "control_plane", "control_plane_users"]

DEFAULT_USERS: dict[str, list[str]] = {
    # Authenticated, but RBAC grants nothing beyond discovery: for 403 checks.
    "nobody": [],
    "alice": ["authz:team-a"],
    "bob": ["authz:team-b"],
}

_lock = threading.Lock()
_shared: ControlPlane | None = None
_refs = 0


def acquire_control_plane(users: Mapping[str, Sequence[str]]) -> ControlPlane:
    """Start the shared control plane (or take another reference to it)."""
    global _shared, _refs  # noqa: PLW0603 - one control plane per process
    with _lock:
        if _shared is None:
            cp = ControlPlane(users)
            with alarm_paused():
                cp.start()
            _shared = cp
        else:
            missing = set(users) - set(_shared.users)
            if missing:
                raise RuntimeError(
                    f"control plane already running without users {sorted(missing)}; "
                    "override control_plane_users in the top-most conftest that uses it"
                )
        _refs += 1
        return _shared


def release_control_plane() -> None:
    global _shared, _refs  # noqa: PLW0603
    with _lock:
        _refs -= 1
        if _refs <= 0 and _shared is not None:
            _shared.stop()
            _shared, _refs = None, 0


@pytest.fixture(scope="session")
def control_plane_users() -> dict[str, list[str]]:
    """Static token users (name -> groups) registered when the control plane starts."""
    return dict(DEFAULT_USERS)


@pytest.fixture(scope="session")
def control_plane(control_plane_users: dict[str, list[str]]) -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver shared by the whole session."""
    cp = acquire_control_plane(control_plane_users)
    try:
        yield cp
    finally:
        release_control_plane()
