"""Converters from other authorization configurations into authz objects (`authz convert`).

A CLI-side tool: nothing in the server process imports it (an import-linter contract).
"""
