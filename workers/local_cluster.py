"""A Ray cluster of several nodes on this machine, some with a GPU that is not there, to
watch the stage graph place its actors before a real cluster is at hand.

    .venv/bin/python -m workers.local_cluster [--cpu-nodes 2] [--cpus 2] [--gpu-nodes 1]
        [--gpu-node-cpus 1] [--gpus 1]

It prints the cluster's address; ``vidan analyze VIDEOS --out DIR --address ADDR`` runs
on it from another terminal, as on a real cluster. Typing ``cpu`` or ``gpu`` (and Enter)
adds a node of that kind, mid-run if one is going on. Ctrl-C (or SIGTERM) prints which
actors ran on which node, then stops every process it started.

Each node is a raylet of its own on 127.0.0.1 (``ray.cluster_utils``, what Ray's own
tests use: two ``ray start`` nodes cannot share one machine on loopback). Ray schedules
the GPUs a node declares as if they existed: the encoders go there, find no CUDA and run
their CPU path, with a warning. The head gets no CPUs, as on a cluster whose head only
coordinates.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
from collections import Counter, defaultdict
from typing import Optional


class LocalCluster:
    """The cluster, and a name for each node id (``head``, ``cpu-1``, ``gpu-1``...)."""

    def __init__(self, cpus: int, gpu_node_cpus: int, gpus: int):
        from workers.connect import _keep_ray_on_loopback

        _keep_ray_on_loopback()
        from ray.cluster_utils import Cluster

        self.cpus, self.gpu_node_cpus, self.gpus = cpus, gpu_node_cpus, gpus
        # the dashboard serves Ray's state API (where each actor ran) and its actor table
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1"})
        self.names = {self.cluster.head_node.node_id: ("head", "0 CPU")}

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self, kind: str) -> str:
        k = 1 + sum(name.startswith(kind + "-") for name, _ in self.names.values())
        if kind == "gpu":
            node = self.cluster.add_node(num_cpus=self.gpu_node_cpus, num_gpus=self.gpus)
            resources = f"{self.gpu_node_cpus} CPU, {self.gpus} GPU (not real)"
        else:
            node = self.cluster.add_node(num_cpus=self.cpus)
            resources = f"{self.cpus} CPU"
        self.names[node.node_id] = (f"{kind}-{k}", resources)
        return f"{kind}-{k} ({resources})"

    def shutdown(self) -> None:
        self.cluster.shutdown()


def _read_requests(requests: "queue.Queue[str]") -> None:
    """Each line typed, for the main thread (Ray starts a node's processes from there only)."""
    for line in sys.stdin:
        requests.put(line.strip().lower())


def _serve(cluster: LocalCluster, stop: threading.Event, requests: "queue.Queue[str]") -> None:
    while not stop.is_set():
        try:
            kind = requests.get(timeout=0.5)
        except queue.Empty:
            continue
        if kind in ("cpu", "gpu"):
            try:
                print(f"added {cluster.add(kind)}", flush=True)
            except Exception as e:  # a raylet that would not start: say so, keep the rest
                print(f"could not add a {kind} node: {e}", flush=True)
        elif kind:
            print(f"type cpu or gpu to add a node, not {kind!r}", flush=True)


def placements(names: dict, address: str) -> list[tuple[str, str, str]]:
    """(node name, its resources, the vidan actors that ran there) for every node, from
    Ray's state API: actors that have finished are still listed there."""
    from ray.util.state import list_actors

    ran: dict[str, Counter] = defaultdict(Counter)
    # the cluster's own address: without it the state API looks for "the" Ray on this
    # machine, and refuses when another one is running beside this cluster
    for a in list_actors(address=address, detail=True, limit=10_000, raise_on_missing_output=False):
        label = getattr(a, "repr_name", "") or a.class_name
        if label.startswith("vidan:") and a.node_id:
            ran[a.node_id][label] += 1
    rows = []
    for node_id, (name, resources) in names.items():
        actors = ", ".join(f"{label} x{n}" for label, n in sorted(ran[node_id].items())) or "-"
        rows.append((name, resources, actors))
    return rows


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| node | resources | vidan actors that ran there |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.local_cluster", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-nodes", type=int, default=2, help="nodes with CPUs only (default 2)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs each of those has (default 2)")
    ap.add_argument("--gpu-nodes", type=int, default=1, help="nodes that declare GPUs (default 1)")
    ap.add_argument("--gpu-node-cpus", type=int, default=1, help="CPUs each GPU node has (default 1)")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs each GPU node declares (default 1)")
    args = ap.parse_args(argv)
    if min(args.cpu_nodes, args.gpu_nodes, args.gpu_node_cpus, args.gpus) < 0 or args.cpus < 1:
        ap.error("node counts and resources cannot be negative, and a CPU node needs a CPU")
    if args.cpu_nodes + args.gpu_nodes == 0:
        ap.error("a cluster needs at least one node besides its head")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(args.cpus, args.gpu_node_cpus, args.gpus)
    try:
        for _ in range(args.cpu_nodes):
            cluster.add("cpu")
        for _ in range(args.gpu_nodes):
            cluster.add("gpu")
        cluster.cluster.wait_for_nodes()
        import ray

        ray.init(address=cluster.address, log_to_driver=False)
        nodes = ", ".join(f"{name} ({res})" for name, res in cluster.names.values())
        print(f"local Ray cluster at {cluster.address}: {nodes}\n"
              f"dashboard: http://{cluster.cluster.head_node.webui_url}\n"
              f"run:  vidan analyze VIDEOS --out REPORT --address {cluster.address}\n"
              f"Type cpu or gpu (Enter) to add a node. Ctrl-C prints where each stage ran and stops "
              f"the cluster.", flush=True)
        requests: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_requests, args=(requests,), daemon=True).start()
        _serve(cluster, stop, requests)
        print(table(placements(cluster.names, cluster.address)), flush=True)
    finally:
        try:
            import ray

            ray.shutdown()
        finally:
            cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
