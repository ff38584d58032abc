"""Access to the shared corpus of real Falco alerts and field cases, which live beside the project."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FALCO_ROUTER_SHARED", PROJECT_ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"
CASES = SHARED / "cases" / "cases.jsonl"


def corpus_lines() -> list[str]:
    """Return the raw JSON lines of the alert corpus, exactly as stored."""
    text = (CORPUS / "falco_events.jsonl").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def cases(name: str | None = None) -> list[dict[str, Any]]:
    """Return the field cases, all of them or those of one case id such as ``C07``."""
    rows = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if name is None or row["case"] == name]


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
