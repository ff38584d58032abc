"""``falco-router replay``: recorded alerts through the same pipeline as live traffic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.data import CORPUS, corpus_lines

FILE_OUTPUT = """
outputs:
  archive:
    type: file
    path: {path}
routes:
  - name: everything
    internal: include  # Falco's own health alerts too
    outputs: [archive]
"""


def replay(tmp_path: Path, source: Path) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    out = tmp_path / "out.jsonl"
    config = tmp_path / "router.yaml"
    config.write_text(FILE_OUTPUT.format(path=out))
    result = subprocess.run(
        [sys.executable, "-m", "router", "replay", str(source), "--config", str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = out.read_text().splitlines() if out.exists() else []
    return result, [json.loads(line) for line in lines]


def test_replay_delivers_every_corpus_alert(tmp_path: Path) -> None:
    result, delivered = replay(tmp_path, CORPUS / "falco_events.jsonl")
    assert result.returncode == 0, result.stderr
    assert len(delivered) == 40
    assert [d["rule"] for d in delivered] == [json.loads(line)["rule"] for line in corpus_lines()]
    assert "40 alerts read" in result.stderr
    assert "output archive: 40 delivered, 0 lost" in result.stderr


def test_replay_skips_falco_log_lines(tmp_path: Path) -> None:
    source = tmp_path / "falco.log"
    source.write_text(
        "Falco version: 0.43.0 (x86_64)\n"
        + corpus_lines()[0]
        + "\nLoading rules from file /etc/falco/falco_rules.yaml\n"
    )
    result, delivered = replay(tmp_path, source)
    assert result.returncode == 0, result.stderr
    assert len(delivered) == 1
    assert "2 non-JSON lines skipped" in result.stderr


def test_replay_reports_invalid_alert_and_fails(tmp_path: Path) -> None:
    source = tmp_path / "alerts.jsonl"
    source.write_text(corpus_lines()[0] + '\n{"rule":"r","priority":"Warning"}\n')
    result, delivered = replay(tmp_path, source)
    assert result.returncode == 1
    assert len(delivered) == 1
    assert "line 2: time is missing" in result.stderr


def test_quickstart_routes_sample_alerts() -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "quickstart.py")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("HTTP 200") == 5
    assert "Terminal shell in container  uuid=" in result.stdout


def test_replay_repairs_and_flags_invalid_utf8(tmp_path: Path) -> None:
    alert = json.loads(corpus_lines()[0])
    alert["output"] = "file opened: PLACEHOLDER"
    line = json.dumps(alert, ensure_ascii=False).encode().replace(b"PLACEHOLDER", b"/tmp/\xff\xfe.bin")
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(line + b"\n" + corpus_lines()[1].encode() + b"\n")
    result, delivered = replay(tmp_path, source)
    assert result.returncode == 0, result.stderr
    assert delivered[0]["output"] == "file opened: /tmp/\ufffd\ufffd.bin"
    assert delivered[0]["router"]["flags"] == ["utf8_repaired"]
    assert "0 rejected, 1 repaired (invalid UTF-8)" in result.stderr
    assert "flags" not in delivered[1].get("router", {})


def test_replay_reports_a_line_that_is_not_json(tmp_path: Path) -> None:
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(b'{"rule": "r", \xff\n' + corpus_lines()[0].encode() + b"\n")
    result, delivered = replay(tmp_path, source)
    assert result.returncode == 1
    assert len(delivered) == 1
    assert "line 1:" in result.stderr


def test_replay_strips_a_byte_order_mark(tmp_path: Path) -> None:
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + corpus_lines()[0].encode() + b"\n" + corpus_lines()[1].encode() + b"\n")
    result, delivered = replay(tmp_path, source)
    assert result.returncode == 0, result.stderr
    assert len(delivered) == 2
    assert "2 alerts read, 0 non-JSON lines skipped" in result.stderr
