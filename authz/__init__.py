"""authz: a JWT authorizer for Envoy's external authorization API."""

__version__ = "0.1.0"
