"""Who may decide for which traffic (issue 11, items 1 and 2), table-tested on in-memory
builds: host grants, namespaced bindings, conflicts refused instead of tie-broken, cluster
objects that clash with the policy directory, and namespaced workload selectors. The same
model against the real API server, with an RBAC-limited tenant, is tests/e2e/test_tenancy.py."""

from __future__ import annotations

from typing import Any

import pytest

from authz.policy.tenancy import Grants, covers
from authz.policy.validate import validate_document
from tests.support.docs import created, host_grant, issuer, jwks_of, policy, rule
from tests.support.snapshots import Served, bearer_token, check, serve, serve_sources

SHOP, TENANT = "shop", "aaa-tenant"
NS_KEY = "authz.io/namespace"


def decided_by(served: Served, host: str, context: dict[str, str] | None = None) -> str | None:
    policy_ = served.snapshot.select(host, context or {})
    return policy_.id if policy_ is not None else None


def shop(*hosts: str, name: str = "orders", **spec: Any) -> list[dict[str, Any]]:
    """The victim namespace: its issuer and a policy for `hosts`, created first."""
    return [
        created(issuer(namespace=SHOP), "2026-01-01T00:00:00Z"),
        created(policy(name, namespace=SHOP, hosts=hosts or None, **spec), "2026-01-01T00:00:00Z"),
    ]


def tenant(
    *hosts: str, name: str = "aaa", when: str = "2026-02-01T00:00:00Z", **spec: Any
) -> list[dict[str, Any]]:
    """The attacker's namespace: a policy that allows everyone, for `hosts`."""
    allow = [rule("all", action="allowAnonymous")]
    doc = policy(name, namespace=TENANT, hosts=hosts or None, issuers=(), rules=allow, **spec)
    return [created(doc, when)]


# -- grants -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "host", "covered"),
    [
        ("shop.test", "shop.test", True),
        ("shop.test", "api.shop.test", False),
        ("*.shop.test", "api.shop.test", True),
        ("*.shop.test", "a.b.shop.test", True),
        ("*.shop.test", "*.shop.test", True),
        ("*.shop.test", "*.api.shop.test", True),
        ("*.shop.test", "shop.test", False),
        ("*.shop.test", "*.test", False),
        ("*.shop.test", "*", False),
        ("*.shop.test", "evilshop.test", False),
        ("*", "*", True),
        ("*", "anything.test", True),
    ],
)
def test_a_grant_covers_names_and_narrower_wildcards(grant: str, host: str, covered: bool) -> None:
    assert covers(grant, host) is covered


def test_hosts_are_compared_as_selection_compares_them() -> None:
    grants = Grants.of([validate_document(host_grant("g", ["Shop.Test"], [SHOP]), "g")])
    assert grants.granting(SHOP, "SHOP.test") == "HostGrant/g"  # case-insensitive
    # A trailing dot is another host to Envoy's virtual hosts, so to selection (issue 11,
    # item 4): a grant for `shop.test` does not cover `shop.test.`.
    assert grants.granting(SHOP, "shop.test.") is None
    assert grants.granting(TENANT, "shop.test") is None


@pytest.mark.parametrize("host", ["shop.test", "*.shop.test", "*"])
def test_a_tenant_policy_serves_only_granted_hosts(host: str) -> None:
    served = serve_sources(cluster=tenant(host))
    assert decided_by(served, "shop.test") is None
    status = served.statuses[f"AuthzPolicy/{TENANT}/aaa"]
    assert (status.accepted, status.serving, status.reason) == (False, False, "HostNotGranted")
    [problem] = status.problems
    assert f"host {host!r} is not granted to namespace {TENANT!r}" in problem
    assert "HostGrant" in problem


@pytest.mark.parametrize(
    ("granted", "host", "serves"),
    [
        ("shop.test", "shop.test", True),
        ("*.shop.test", "api.shop.test", True),
        ("*.shop.test", "*.shop.test", True),
        ("*.shop.test", "*", False),  # `*` needs `*`
        ("*", "*", True),
    ],
)
def test_a_grant_lets_its_namespaces_target_what_it_covers(
    granted: str, host: str, serves: bool
) -> None:
    grant = host_grant("shop-hosts", [granted], [SHOP])
    served = serve_sources(cluster=[grant, *shop(host)])
    probe = host.replace("*", "api") if host != "*" else "any.test"
    assert (decided_by(served, probe) == f"AuthzPolicy/{SHOP}/orders") is serves


@pytest.mark.parametrize(
    "targets", [{"hosts": []}, {"contextExtensions": {}}], ids=["no-hosts", "no-binding"]
)
def test_empty_targets_are_a_policy_for_every_host(targets: dict[str, Any]) -> None:
    """`hosts: []` passes the CRD's at-least-one-target rule and narrows nothing: it is `*`."""
    served = serve_sources(cluster=tenant(targets=targets))
    assert decided_by(served, "shop.test") is None
    [problem] = served.statuses[f"AuthzPolicy/{TENANT}/aaa"].problems
    assert "host '*' is not granted" in problem
    granted = serve_sources(cluster=[host_grant("g", ["*"], [TENANT]), *tenant(targets=targets)])
    assert decided_by(granted, "shop.test") == f"AuthzPolicy/{TENANT}/aaa"


def test_a_grant_to_another_namespace_does_not_help() -> None:
    served = serve_sources(cluster=[host_grant("g", ["shop.test"], [SHOP]), *tenant("shop.test")])
    assert decided_by(served, "shop.test") is None


def test_policy_files_need_no_grant() -> None:
    served = serve(issuer(), policy(hosts=["shop.test"]))
    assert decided_by(served, "shop.test") == "AuthzPolicy/default/api"


def test_a_revoked_grant_stops_the_last_good_version_too() -> None:
    grant = host_grant("g", ["shop.test"], [SHOP])
    before = serve_sources(cluster=[grant, *shop("shop.test")])
    assert decided_by(before, "shop.test") == f"AuthzPolicy/{SHOP}/orders"
    after = serve_sources(cluster=shop("shop.test"), previous=before)
    assert decided_by(after, "shop.test") is None
    assert after.statuses[f"AuthzPolicy/{SHOP}/orders"].reason == "HostNotGranted"


def test_an_edit_to_an_ungranted_host_keeps_the_last_good_version() -> None:
    grant = host_grant("g", ["shop.test"], [SHOP])
    before = serve_sources(cluster=[grant, *shop("shop.test")])
    after = serve_sources(cluster=[grant, *shop("shop.test", "bank.test")], previous=before)
    assert decided_by(after, "shop.test") == f"AuthzPolicy/{SHOP}/orders"
    assert decided_by(after, "bank.test") is None
    status = after.statuses[f"AuthzPolicy/{SHOP}/orders"]
    assert (status.accepted, status.serving, status.reason) == (False, True, "HostNotGranted")


# -- contextExtensions bindings ------------------------------------------------------------


def test_a_tenant_binding_matches_only_routes_naming_its_namespace() -> None:
    bound = tenant(targets={"contextExtensions": {"policy": "orders"}})
    served = serve_sources(cluster=bound)
    assert decided_by(served, "shop.test", {"policy": "orders"}) is None
    assert decided_by(served, "shop.test", {"policy": "orders", NS_KEY: SHOP}) is None
    assert decided_by(served, "x", {"policy": "orders", NS_KEY: TENANT}) == (
        f"AuthzPolicy/{TENANT}/aaa"
    )


def test_a_file_binding_matches_as_before() -> None:
    served = serve(issuer(), policy(hosts=None, targets={"contextExtensions": {"policy": "o"}}))
    assert decided_by(served, "x", {"policy": "o"}) == "AuthzPolicy/default/api"


def test_a_tenant_cannot_name_another_namespace_in_its_binding() -> None:
    bound = tenant(targets={"contextExtensions": {"policy": "orders", NS_KEY: SHOP}})
    served = serve_sources(cluster=bound)
    assert decided_by(served, "x", {"policy": "orders", NS_KEY: SHOP}) is None
    [problem] = served.statuses[f"AuthzPolicy/{TENANT}/aaa"].problems
    assert f"must be this policy's namespace {TENANT!r}" in problem


def test_the_route_naming_a_namespace_gets_that_namespace_policy_over_a_file() -> None:
    """Both bindings match {policy: orders, authz.io/namespace: shop}: the one with more
    entries is the more specific, whatever the order of the route's entries."""
    file_policy = policy(
        "fallback", hosts=None, targets={"contextExtensions": {"policy": "orders"}}
    )
    bound = shop(targets={"contextExtensions": {"policy": "orders"}})
    served = serve_sources(files=[issuer(), file_policy], cluster=bound)
    for context in ({"policy": "orders", NS_KEY: SHOP}, {NS_KEY: SHOP, "policy": "orders"}):
        assert decided_by(served, "x", context) == f"AuthzPolicy/{SHOP}/orders"
    assert decided_by(served, "x", {"policy": "orders"}) == "AuthzPolicy/default/fallback"


# -- conflicts ------------------------------------------------------------------------------


def test_the_oldest_policy_serves_a_contested_host_whatever_its_name() -> None:
    grant = host_grant("g", ["shop.test"], [SHOP, TENANT])
    victim = shop("shop.test", name="zzz")
    served = serve_sources(cluster=[grant, *victim, *tenant("shop.test", name="aaa")])
    assert decided_by(served, "shop.test") == f"AuthzPolicy/{SHOP}/zzz"
    status = served.statuses[f"AuthzPolicy/{TENANT}/aaa"]
    assert (status.accepted, status.serving, status.reason) == (False, False, "Conflict")
    [problem] = status.problems
    assert f"host 'shop.test' is served by AuthzPolicy/{SHOP}/zzz" in problem
    assert served.statuses[f"AuthzPolicy/{SHOP}/zzz"].accepted


@pytest.mark.parametrize(
    "targets",
    [
        {"hosts": ["*.shop.test"]},
        {"hosts": ["*"]},
        {"contextExtensions": {"policy": "orders"}},
    ],
    ids=["wildcard", "any", "binding"],
)
def test_identical_claims_conflict(targets: dict[str, Any]) -> None:
    first = policy("b", hosts=None, targets=targets)
    second = policy("a", namespace="other", hosts=None, targets=targets)
    served = serve(issuer(), issuer(namespace="other"), first, second)
    # Policy files have no creation time: the key decides, and it is reported, not silent.
    status = served.statuses["AuthzPolicy/other/a"]
    assert status.reason == "Conflict" and "AuthzPolicy/default/b" in status.problems[0]
    assert served.statuses["AuthzPolicy/default/b"].accepted


def test_more_specific_patterns_are_not_conflicts() -> None:
    docs = [
        policy("exact", hosts=["a.shop.test"]),
        policy("wild", hosts=["*.shop.test"]),
        policy("deeper", hosts=["*.a.shop.test"]),
        policy("any", hosts=["*"]),
    ]
    served = serve(issuer(), *docs)
    assert all(s.accepted for s in served.statuses.values())
    assert decided_by(served, "a.shop.test") == "AuthzPolicy/default/exact"
    assert decided_by(served, "x.a.shop.test") == "AuthzPolicy/default/deeper"
    assert decided_by(served, "b.shop.test") == "AuthzPolicy/default/wild"
    assert decided_by(served, "elsewhere.test") == "AuthzPolicy/default/any"


def test_a_conflict_costs_only_the_contested_host() -> None:
    grant = host_grant("g", ["*.test"], [SHOP, TENANT])
    served = serve_sources(cluster=[grant, *shop("shop.test"), *tenant("shop.test", "own.test")])
    assert decided_by(served, "shop.test") == f"AuthzPolicy/{SHOP}/orders"
    assert decided_by(served, "own.test") == f"AuthzPolicy/{TENANT}/aaa"
    status = served.statuses[f"AuthzPolicy/{TENANT}/aaa"]
    assert (status.accepted, status.serving, status.reason) == (False, True, "Conflict")


# -- the same key from the policy directory and the cluster (item 2) --------------------------


def test_the_policy_directory_version_of_a_key_serves() -> None:
    grant = host_grant("g", ["*"], [SHOP])
    file_policy = policy("orders", namespace=SHOP, hosts=["shop.test"])
    impostor = created(policy("orders", namespace=SHOP, hosts=["*"], issuers=()))
    impostor["spec"]["rules"] = [rule("all", action="allowAnonymous")]
    served = serve_sources(files=[issuer(namespace=SHOP), file_policy], cluster=[grant, impostor])
    key = f"AuthzPolicy/{SHOP}/orders"
    assert decided_by(served, "shop.test") == key
    assert decided_by(served, "elsewhere.test") is None  # the cluster version's `*` is not used
    answer, _ = check(served, host="shop.test")
    assert answer.status == 401  # the file version's rule: a token is required
    refused = served.shadowed[key]
    assert (refused.accepted, refused.serving, refused.reason) == (False, False, "Conflict")
    assert "also defined in the policy directory" in refused.problems[0]
    assert refused.origin == f"kubernetes {key}"
    note = served.statuses[key].problems[0]
    assert served.statuses[key].accepted and f"kubernetes {key}" in note


def test_an_invalid_file_version_still_owns_its_key() -> None:
    broken = policy("orders", namespace=SHOP, rules=[{"action": "bogus"}])
    valid = created(policy("orders", namespace=SHOP, hosts=["shop.test"]))
    served = serve_sources(files=[broken], cluster=[host_grant("g", ["*"], [SHOP]), valid])
    assert decided_by(served, "shop.test") is None
    assert f"AuthzPolicy/{SHOP}/orders" in served.shadowed


# -- workload selectors -----------------------------------------------------------------------


@pytest.mark.parametrize(("workload_namespace", "applies"), [(TENANT, True), (SHOP, False)])
def test_a_tenant_selector_selects_only_its_own_namespace(
    workload_namespace: str, applies: bool
) -> None:
    selecting = tenant(targets={"workloadSelector": {"matchLabels": {"app": "orders"}}})
    served = serve_sources(
        cluster=selecting,
        workload_labels={"app": "orders"},
        workload_namespace=workload_namespace,
    )
    assert (decided_by(served, "shop.test") is not None) is applies


def test_an_empty_selector_in_central_mode_selects_nothing() -> None:
    """`matchLabels: {}` matches any labels: without the namespace rule it was a `*` policy."""
    selecting = tenant(targets={"workloadSelector": {"matchLabels": {}}})
    served = serve_sources(cluster=selecting, workload_namespace="authz-system")
    assert decided_by(served, "shop.test") is None


def test_a_file_selector_selects_any_namespace() -> None:
    selecting = policy(
        namespace=SHOP, hosts=None, targets={"workloadSelector": {"matchLabels": {"app": "o"}}}
    )
    served = serve_sources(
        files=[issuer(namespace=SHOP), selecting],
        workload_labels={"app": "o"},
        workload_namespace="elsewhere",
    )
    assert decided_by(served, "x") == f"AuthzPolicy/{SHOP}/api"


# -- an allowed request through the check pipeline ----------------------------------------------


def test_the_victim_decides_its_own_traffic() -> None:
    """Every takeover of the issue at once, decided through the pipeline."""
    grant = host_grant("g", ["shop.test"], [SHOP])
    # an issuer object claiming the victim's `iss`, with the tenant's own key
    own_iss = issuer("victim-iss", namespace=TENANT, jwks=jwks_of("ES256", "tenant"))
    attacks = [
        *tenant("shop.test", name="exact"),
        *tenant("*.test", name="wild"),
        *tenant("*", name="any"),
        *tenant(name="bind", targets={"contextExtensions": {"policy": "orders"}}),
        created(own_iss),
    ]
    served = serve_sources(cluster=[grant, *shop("shop.test"), *attacks])
    answer, outcome = check(served, host="shop.test")
    assert answer.status == 401 and outcome.decision.policy == f"AuthzPolicy/{SHOP}/orders"
    answer, _ = check(served, host="shop.test", context={"policy": "orders"})
    assert answer.status == 401
    forged = bearer_token(kid="tenant")  # the victim's iss, signed with the tenant's key
    answer, outcome = check(served, host="shop.test", token=forged)
    assert answer.status == 401 and outcome.decision.policy == f"AuthzPolicy/{SHOP}/orders"
    answer, outcome = check(served, host="shop.test", token=bearer_token())
    assert answer.status == 200 and outcome.decision.policy == f"AuthzPolicy/{SHOP}/orders"
