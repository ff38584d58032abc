"""A stand-in for the Falco process in rules-reload tests, run as a subprocess.

It writes its pid file, loads a rules folder and, on SIGHUP, loads it again and appends one JSON line per
reload to ``--reload-log``: ``{"event": "start" | "reload" | "rejected" | "ignored", "sha256": ..., "files": [...]}``.

Like Falco 0.35+, it rejects a rules set whose files contain ``--reject-marker``: it keeps the old rules and
POSTs the hot restart failure alert (``--reject-alert``, a JSON file) to ``--ingest-url``, as Falco's
http_output does. ``--ignore-sighup`` imitates Falco 0.42.0 to 0.44.1 with watch_config_files false.
``--metrics-port`` serves the rules hash as Falco's Prometheus endpoint does, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_PR_SET_NAME = 15


def rules_hash(folder: Path) -> tuple[str, list[str], bytes]:
    """Return the hash, the file names and the joined content of the .yaml/.yml files of ``folder``."""
    names = sorted(p.name for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and not p.name.startswith("."))
    contents = [(folder / name).read_bytes() for name in names]
    digest = hashlib.sha256()
    for name, content in zip(names, contents, strict=True):
        digest.update(name.encode() + b"\0" + content)
    return digest.hexdigest(), names, b"".join(contents)


class FakeFalco:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sha256, self.files, _ = rules_hash(args.rules_dir)
        self.hup = threading.Event()

    def record(self, event: str, **fields: Any) -> None:
        with self.args.reload_log.open("a", encoding="utf-8") as log:
            log.write(json.dumps({"event": event, **fields}) + "\n")

    def reload(self) -> None:
        if self.args.ignore_sighup:
            self.record("ignored", sha256=self.sha256)
            return
        sha256, files, content = rules_hash(self.args.rules_dir)
        if self.args.reject_marker and self.args.reject_marker.encode() in content:
            self.record("rejected", sha256=sha256, files=files)
            body = self.args.reject_alert.read_bytes()
            request = urllib.request.Request(
                self.args.ingest_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
            return
        self.sha256, self.files = sha256, files
        self.record("reload", sha256=sha256, files=files)

    def serve_metrics(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (
                    "# TYPE falcosecurity_falco_sha256_rules_files_info gauge\n"
                    'falcosecurity_falco_sha256_rules_files_info{raw_name="sha256_rules_files",'
                    f'sha256_rules_files="{fake.sha256}"}} 1\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.args.metrics_port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules-dir", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--reload-log", type=Path, required=True)
    parser.add_argument("--name", default="falco", help="process name shown in /proc/PID/comm")
    parser.add_argument("--reject-marker", default="")
    parser.add_argument("--reject-alert", type=Path)
    parser.add_argument("--ingest-url", default="")
    parser.add_argument("--ignore-sighup", action="store_true")
    parser.add_argument("--metrics-port", type=int, default=0)
    args = parser.parse_args()

    # Falco's process name is what the router checks before it signals a pid from the pid file.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, args.name.encode()[:15], 0, 0, 0)

    fake = FakeFalco(args)
    signal.signal(signal.SIGHUP, lambda *_: fake.hup.set())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.metrics_port:
        fake.serve_metrics()
    fake.record("start", sha256=fake.sha256, files=fake.files)
    args.pid_file.write_text(f"{os.getpid()}\n", encoding="ascii")
    while True:
        if fake.hup.wait(timeout=0.05):
            fake.hup.clear()
            fake.reload()


if __name__ == "__main__":
    sys.exit(main())
