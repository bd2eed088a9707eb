"""`authz proxy-config`: the proxy settings authz's security model relies on, generated.

Envoy (bootstrap or filter + cluster), Istio (mesh providers, CUSTOM AuthorizationPolicy),
NGINX and Caddy configuration from one set of deployment inputs, and ``--check`` for an
existing Envoy file. Command-line only: the server process never imports this package
(envoy-data-plane's models cost ~0.6 s to import and ~300x upb to parse; see protos/README.md).
"""
