"""Policy: source (files or Kubernetes) -> validate -> compile -> snapshot -> swap."""
