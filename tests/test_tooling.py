"""The linters are part of the test suite, so CI fails on a lint or type error like on a failed test."""

from __future__ import annotations

import subprocess
import sys

from tests.support.data import PROJECT_ROOT

LINTED = ["router", "tests", "bench", "helm", "docs", "scripts"]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=PROJECT_ROOT, check=False, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing() -> None:
    result = run_tool("ruff", "check", *LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    result = run_tool("ruff", "format", "--check", *LINTED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    result = run_tool("mypy", "router", "bench")
    assert result.returncode == 0, result.stdout + result.stderr
