"""`authz webhook`: a validating admission webhook running `authz lint`'s checks on apply."""
