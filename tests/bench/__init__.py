"""`make bench`: authz measured side by side with Envoy's jwt_authn, OPA-Envoy and a trivial
always-allow grpcio server, in one run on one machine (issue 6).

`python -m tests.bench --help` for options; `tests/bench/scenarios.py` lists the scenarios.
"""
