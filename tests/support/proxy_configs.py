"""`make proxy-configs`: the shipped Envoy, Istio, NGINX and Caddy wiring, generated.

    python -m tests.support.proxy_configs        # writes into the repository
    render(root)                                  # writes the same files under `root`

Each file is `authz proxy-config ARGS` for the ARGS in :data:`OUTPUTS` (its header says which),
so the examples can only say what the generator says. tests/unit/proxyconfig/
test_generated_files.py renders into a temp dir and compares: a stale file fails with
"run make proxy-configs". `make manifests` runs this too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from authz.proxyconfig import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_WORKLOAD = ["--namespace", "shop", "--workload", "app=orders"]

# path -> `authz proxy-config` arguments
OUTPUTS: dict[Path, list[str]] = {
    Path("examples/envoy/envoy.yaml"): ["envoy", "--route", "/bound/=bound"],
    Path("examples/envoy/envoy-http.yaml"): ["envoy", "--transport", "http"],
    Path("manifests/istio/meshconfig.yaml"): ["istio-mesh"],
    Path("manifests/istio/meshconfig-http.yaml"): ["istio-mesh", "--transport", "http"],
    Path("manifests/istio/authorizationpolicy.yaml"): [
        "istio-policy", *EXAMPLE_WORKLOAD, "--gateway-host", "orders.example.com",
    ],
    Path("manifests/istio/sidecar-local-provider.yaml"): ["istio-sidecar", *EXAMPLE_WORKLOAD],
    Path("examples/nginx/nginx.conf"): ["nginx"],
    Path("examples/caddy/Caddyfile"): ["caddy"],
}  # fmt: skip


def render(root: Path) -> list[Path]:
    """Write every generated file under ``root``; return their paths."""
    written = []
    for relative, args in OUTPUTS.items():
        path = root / relative
        if cli.main([*args, "--output", str(path)]) != 0:
            raise RuntimeError(f"authz proxy-config {' '.join(args)} failed")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else REPO_ROOT
    for path in render(root):
        print(path.relative_to(root))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
