"""Issuer keys: JWK parsing and signature verification, shared by policy and request layers."""
