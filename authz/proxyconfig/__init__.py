"""`authz proxy-config`: the proxy settings authz's security model relies on, generated.

Envoy (bootstrap or filter + cluster), Istio (mesh providers, CUSTOM AuthorizationPolicy),
NGINX and Caddy configuration from one set of deployment inputs, and ``--check`` for an
existing Envoy file. Command-line only: the server process never imports this package
(envoy-data-plane costs ~0.8 s to import and ~225x upb to parse a request; see
protos/README.md).
"""
