"""Provider metadata: the endpoints of a discovery document for exactly our issuer,
fetched by a job, kept, and retried no more often than the retry interval."""

from __future__ import annotations

import pytest

from authz.keys.fetch import FetchError, FetchResult
from authz.oidc.http import HttpSettings
from authz.oidc.jobs import Jobs
from authz.oidc.provider import Discovery, ProviderMetadata, parse_metadata
from tests.support.keyserver import KeyServer

ISS = "https://op.example"
DOC = {
    "issuer": ISS,
    "authorization_endpoint": f"{ISS}/authorize",
    "token_endpoint": f"{ISS}/token",
    "end_session_endpoint": f"{ISS}/logout",
}


def test_the_endpoints_of_our_issuer() -> None:
    found = parse_metadata(DOC, ISS, allow_http=False)
    assert found == ProviderMetadata(ISS, f"{ISS}/authorize", f"{ISS}/token", f"{ISS}/logout")


@pytest.mark.parametrize(
    ("change", "result"),
    [
        ({"issuer": "https://other.example"}, FetchResult.ISSUER_MISMATCH),
        ({"token_endpoint": None}, FetchResult.INVALID),
        ({"authorization_endpoint": "http://op.example/authorize"}, FetchResult.INVALID),
        ({"end_session_endpoint": "javascript:alert(1)"}, FetchResult.INVALID),
        ({"code_challenge_methods_supported": ["plain"]}, FetchResult.INVALID),
    ],
)
def test_a_document_we_cannot_use(change: dict[str, object], result: FetchResult) -> None:
    doc = {**DOC, **change}
    with pytest.raises(FetchError) as refused:
        parse_metadata(doc, ISS, allow_http=False)
    assert refused.value.result == result


def test_discovery_is_fetched_once_and_a_failure_is_not_retried_at_once() -> None:
    jobs = Jobs()
    with KeyServer() as server:
        settings = HttpSettings(timeout=2, allow_http=True)
        discovery = Discovery(jobs, retry=60)
        found = discovery.lookup(server.url, settings)
        assert not isinstance(found, ProviderMetadata)  # a job to wait for: not found yet
        with pytest.raises(FetchError):
            found.result(5)  # 404
        with pytest.raises(FetchError):
            discovery.lookup(server.url, settings)  # remembered, not fetched again
        assert server.hits("/.well-known/openid-configuration") == 1

        server.json(
            "/.well-known/openid-configuration",
            {
                "issuer": server.url,
                "authorization_endpoint": f"{server.url}/a",
                "token_endpoint": f"{server.url}/t",
            },
        )
        discovery = Discovery(jobs, retry=60)
        job = discovery.lookup(server.url, settings)
        assert not isinstance(job, ProviderMetadata)
        assert job.result(5).token_endpoint == f"{server.url}/t"
        assert discovery.lookup(server.url, settings) == job.result()
        assert server.hits("/.well-known/openid-configuration") == 2
    jobs.close()
