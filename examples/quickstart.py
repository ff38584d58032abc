"""Quick start: run falco-router on its embedded default config and post the sample alerts to it.

The router listens on 127.0.0.1:2801 like falcosidekick and writes every alert to stdout as one JSON
line. This script starts it, posts each alert of sample_alerts.jsonl the way Falco's http_output does
(one POST per alert), shows the lines the router wrote, and stops it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
URL = "http://127.0.0.1:2801/"


def wait_ready(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the router exited with status {process.returncode}; is port 2801 already in use?")
        try:
            with urllib.request.urlopen(URL + "healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    sys.exit("the router did not become ready within 15 s")


def main() -> int:
    router = subprocess.Popen(
        [sys.executable, "-m", "router", "run"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(router)
        alerts = [line for line in (HERE / "sample_alerts.jsonl").read_text().splitlines() if line.strip()]
        print(f"Posting {len(alerts)} sample alerts to {URL} ...")
        for line in alerts:
            request = urllib.request.Request(URL, data=line.encode(), headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as answer:
                rule = json.loads(line)["rule"]
                print(f"  HTTP {answer.status}  {rule}")
        time.sleep(0.5)
    finally:
        router.send_signal(signal.SIGTERM)
        out, _ = router.communicate(timeout=30)
    print("\nThe router delivered these alerts to its stdout output (one JSON line each):")
    for line in out.decode().splitlines():
        alert = json.loads(line)
        print(f"  [{alert['priority']:>13}] {alert['rule']}  uuid={alert['uuid']}")
    return 0 if len(out.splitlines()) == len(alerts) else 1


if __name__ == "__main__":
    sys.exit(main())
