"""The router end to end with Kubernetes enrichment: an API server that is down at start-up, then returns."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from router.app import RouterApp
from router.config import RouterConfig
from router.event import parse_alert
from router.outputs.stream import StdoutOutput
from tests.k8s.conftest import eventually
from tests.support.fake_kube import FakeKube, TlsFiles, pod, write_kubeconfig


def alert(container_id: str) -> dict[str, Any]:
    return {
        "rule": "Terminal shell in container",
        "priority": "Notice",
        "time": "2023-11-14T22:13:20.000000000Z",
        "source": "syscall",
        "output_fields": {"container.id": container_id, "k8s.ns.name": None, "k8s.pod.name": None},
    }


def delivered(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_alerts_flow_while_api_down_at_startup(tls: TlsFiles, tmp_path: Path) -> None:
    fake = FakeKube(tls)  # not started yet: the API server is down
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.server, tls.ca, token=fake.token)
    config = RouterConfig.model_validate(
        {
            "outputs": {"out": {"type": "stdout"}},
            "routes": [{"name": "all", "outputs": ["out"]}],
            "kubernetes": {
                "enabled": True,
                "kubeconfig": str(kubeconfig),
                "node_name": "host-a",
                "backoff_initial_s": 0.01,
                "backoff_max_s": 0.05,
            },
        }
    )
    stream = io.BytesIO()
    app = RouterApp(config, overrides={"out": StdoutOutput("out", config.outputs["out"], stream)})
    await app.start(ingest=False)
    try:
        app.pipeline.submit([parse_alert(alert("5" * 12))])
        await eventually(lambda: len(delivered(stream)) == 1, "first alert delivered")
        during = delivered(stream)[0]
        health_during = app.health.status

        fake.add_pod(pod("web-1", labels={"app": "web"}, container_id="containerd://" + "5" * 64))
        await fake.start()
        await eventually(lambda: app.health.status == "ok", "health ok after the API server returned")
        app.pipeline.submit([parse_alert(alert("5" * 12))])
        await eventually(lambda: len(delivered(stream)) == 2, "second alert delivered")
        after = delivered(stream)[1]
    finally:
        await app.shutdown(grace_s=1)
        await fake.stop()

    assert during["enrichment"]["k8s"] == {"status": "not_found"}
    assert health_during == "degraded"
    assert after["enrichment"]["k8s"]["status"] == "hit"
    assert after["enrichment"]["k8s"]["labels"] == {"app": "web"}
    assert after["output_fields"]["k8s.pod.name"] is None
