"""What parsing one CheckRequest costs: xds-protos (upb) vs envoy-data-plane (betterproto2).

    python -m tests.bench.proto_parse            # prints the figures protos/README.md quotes

envoy-data-plane generates `authz proxy-config`'s Envoy files; this shows why it must never
parse requests. The request is shaped like Envoy's (tests.bench.stack.check_request) with a
Keycloak-sized access token and a browser's headers, 2.2 KB on the wire.
"""

from __future__ import annotations

import time
import timeit

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest as UpbCheckRequest
from envoy_data_plane.envoy.service.auth.v3 import CheckRequest as DataPlaneCheckRequest
from google.protobuf.internal import api_implementation

from authz.devtools import generate_key, mint_token
from tests.bench.stack import check_request

BROWSER_HEADERS = {
    "user-agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36"
    ),
    "accept": "application/json, text/plain, */*",
    "accept-language": "en-GB,en;q=0.9,de;q=0.8",
    "accept-encoding": "gzip, deflate, br, zstd",
    "x-forwarded-for": "203.0.113.7",
    "x-envoy-expected-rq-timeout-ms": "15000",
    "sec-fetch-site": "same-origin",
    "sec-fetch-mode": "cors",
    "referer": "https://orders.example.com/app/orders?page=2",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "cookie": "_ga=GA1.1.1234567890.1700000000; theme=dark; consent=analytics%3Dno%26ads%3Dno",
}


def typical_request() -> bytes:
    """A serialized CheckRequest as Envoy sends one for a browser's API call."""
    private, _ = generate_key("RS256", "shop-2025")
    now = int(time.time())
    claims = {
        "iss": "https://sso.example.com/realms/shop",
        "aud": ["orders-api", "account"],
        "sub": "f3c9a0e2-5b1d-4c7e-9a55-2b7f1c0d9e11",
        "iat": now,
        "exp": now + 300,
        "azp": "orders-web",
        "sid": "8d9b2c1e-6f3a-4b7d-8e2a-9c0d1e2f3a4b",
        "jti": "0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e",
        "scope": "openid profile email orders.read orders.write",
        "realm_access": {"roles": ["offline_access", "uma_authorization", "orders-admin"]},
        "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
        "email": "alice@example.com",
        "name": "Alice Example",
        "preferred_username": "alice",
        "groups": ["/shop/orders", "/shop/support", "/staff"],
        "allowed-origins": ["https://orders.example.com"],
    }
    request = check_request("orders.example.com", "/orders/1?x=1", mint_token(private, claims))
    request.attributes.request.http.headers.update(BROWSER_HEADERS)
    raw: bytes = request.SerializeToString()
    return raw


def best_us(raw: bytes, rounds: int = 9) -> tuple[float, float]:
    """Best per-parse time of each, in rounds that alternate, so load on the shared machine
    hits both alike."""
    upb = timeit.Timer(lambda: UpbCheckRequest.FromString(raw))
    data_plane = timeit.Timer(lambda: DataPlaneCheckRequest.parse(raw))
    upb_best = data_plane_best = float("inf")
    for _ in range(rounds):
        upb_best = min(upb_best, upb.timeit(20_000) / 20_000 * 1e6)
        data_plane_best = min(data_plane_best, data_plane.timeit(200) / 200 * 1e6)
    return upb_best, data_plane_best


def main() -> None:
    raw = typical_request()
    upb = UpbCheckRequest.FromString(raw)
    ours = DataPlaneCheckRequest.parse(raw)
    header = upb.attributes.request.http.headers["authorization"]
    assert ours.attributes.request.http.headers["authorization"] == header
    upb_us, data_plane_us = best_us(raw)
    ratio = data_plane_us / upb_us
    print(f"CheckRequest: {len(raw)} bytes; protobuf backend: {api_implementation.Type()}")
    print(f"xds-protos (upb)                {upb_us:8.2f} us")
    print(f"envoy-data-plane (betterproto2) {data_plane_us:8.1f} us  ({ratio:.0f}x)")


if __name__ == "__main__":
    main()
