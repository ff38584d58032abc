"""Generated docs stay in step with the config model."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from router.config import RouterConfig

ROOT = Path(__file__).resolve().parent.parent


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_settings", ROOT / "docs" / "gen_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_page_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_settings.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_stale_settings_page_fails_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _load_generator()
    stale = tmp_path / "settings.md"
    stale.write_text(generator.render().replace("| `listen` |", "| `listen_address` |"), encoding="utf-8")
    monkeypatch.setattr(generator, "SETTINGS_PATH", stale)
    assert generator.main(["--check"]) == 1


@pytest.mark.parametrize("section", sorted(RouterConfig.model_fields))
def test_settings_page_documents_each_section(section: str) -> None:
    assert f"| `{section}` |" in (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("output_type", ["stdout", "file", "kafka", "slack", "webhook"])
def test_settings_page_has_table_per_output_type(output_type: str) -> None:
    assert f"## outputs.<name> with type: {output_type}\n" in (ROOT / "docs" / "settings.md").read_text(
        encoding="utf-8"
    )
