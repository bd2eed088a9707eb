"""The Check path: extract token -> verify -> authorize -> respond. Reads only a Snapshot."""
