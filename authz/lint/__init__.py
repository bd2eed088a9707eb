"""`authz lint` and the admission webhook's shared checks: inputs, findings, rules, report."""
