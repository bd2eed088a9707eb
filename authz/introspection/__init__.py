"""Opaque tokens checked at the issuer (RFC 7662 token introspection), off the request path.

The request path never calls the endpoint itself: it asks an issuer's `Introspector`, which
answers from its cache or hands the call to a bounded pool and lets the Check wait a
bounded time for it (single-flight per token, a circuit breaker, fail closed). Layered
between policy (which compiles introspecting issuers) and keys (whose fetch limits it uses).
"""
