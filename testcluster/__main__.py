"""`make cluster`: a control plane for a person, with the ChatService CRD installed.
Prints the KUBECONFIG to export and stops cleanly on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

from testcluster.cluster import TestCluster

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__)
    parser.add_argument("--workdir", type=Path, help="state and logs (default: a temp dir)")
    parser.add_argument("--nodes", type=int, default=3, help="fake KWOK nodes")
    options = parser.parse_args()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="rillet-cluster-"))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # set explicitly: a background job
        signal.signal(signum, lambda *_: stop.set())  # starts with SIGINT ignored
    print(f"starting etcd, kube-apiserver, controllers, scheduler and KWOK in {workdir} ...")
    with TestCluster(workdir, nodes=options.nodes, crds=(ROOT / "crds",)) as cluster:
        print(
            f"\nready: {cluster.server}, {options.nodes} fake nodes, the ChatService CRD.\n"
            f"  export KUBECONFIG={cluster.kubeconfig} PATH={cluster.bin_dir}:$PATH\n"
            "  make operator &     # then: kubectl apply -f docs/examples/demo.yaml\n"
            f"logs: {cluster.logs}. Ctrl-C stops it.",
            flush=True,
        )
        stop.wait()
        print("stopping ...")


if __name__ == "__main__":
    main()
