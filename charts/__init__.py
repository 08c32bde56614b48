"""Tooling for the chart in charts/rillet: its chart repository (`make chart`) and its
generated README (`make manifests`). Not shipped: the wheel carries operator/ and runtime/."""
