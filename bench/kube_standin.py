"""A Kubernetes API stand-in with N pods, for the benchmarks that run the router with its pod cache full.

Runs the test suite's fake API server (TLS, bearer token, list and watch) on 127.0.0.1 as its own
process, fills it with generated pods and writes a kubeconfig that points at it, then serves until
SIGTERM. The first pods carry the container ids of the corpus alerts, so those alerts find their pod
in the router's cache; the rest only fill the cache.

Run: python -m bench.kube_standin --directory DIR [--pods 5000]; DIR/kubeconfig appears when it is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from bench.bench_k8s_cache import pod_document
from bench.common import corpus_documents
from tests.support.fake_kube import FakeKube, make_tls, write_kubeconfig

TOKEN = "bench-token"
KUBECONFIG_NAME = "kubeconfig"


def corpus_container_ids() -> list[str]:
    """Return the distinct 12-character container ids of the corpus alerts, in corpus order."""
    ids: list[str] = []
    for document in corpus_documents():
        raw = (document.get("output_fields") or {}).get("container.id")
        if isinstance(raw, str) and len(raw) == 12 and raw not in ids:
            ids.append(raw)
    return ids


def bench_pods(count: int) -> list[dict[str, Any]]:
    """Return ``count`` pod documents; the first ones run the corpus alerts' containers."""
    pods = [pod_document(i) for i in range(count)]
    for pod, short_id in zip(pods, corpus_container_ids(), strict=False):
        statuses = pod["status"]["containerStatuses"]
        statuses[0]["containerID"] = f"containerd://{short_id}" + "c" * 52
    return pods


async def serve(directory: Path, count: int) -> None:
    """Serve the pods until SIGTERM; writes the kubeconfig last, as the sign that the server is up."""
    kube = FakeKube(make_tls(directory), token=TOKEN)
    for pod in bench_pods(count):
        kube.add_pod(pod)
    await kube.start()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    partial = directory / f"{KUBECONFIG_NAME}.partial"
    write_kubeconfig(partial, kube.server, kube.tls.ca, token=TOKEN)
    partial.rename(directory / KUBECONFIG_NAME)
    try:
        await stopped.wait()
    finally:
        await kube.stop()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m bench.kube_standin", description=__doc__)
    parser.add_argument("--directory", type=Path, required=True, help="folder for the TLS files and the kubeconfig")
    parser.add_argument("--pods", type=int, default=5000, help="pods to serve (default 5000)")
    args = parser.parse_args()
    asyncio.run(serve(args.directory, args.pods))


if __name__ == "__main__":
    main()
