"""The test control plane: Kubernetes' own binaries built from Go modules, run locally."""

from testcluster.cluster import TestCluster, build

__all__ = ["TestCluster", "build"]
