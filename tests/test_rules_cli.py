"""`falco-router rules check` for CI, and `falco -V` through a stand-in falco executable."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

from router.cli import main
from router.rules.check import check_rules_set
from router.rules.files import read_rules_dir
from tests.support.data import CORPUS

BASE_TEXT = """\
- macro: spawned_process
  condition: (evt.type in (execve, execveat) and evt.dir=<)
- macro: outbound
  condition: (evt.type = connect and evt.dir=<)
"""


def test_rules_check_passes_corpus_folder(tmp_path, capsys):  # type: ignore[no-untyped-def]
    for name in ("rules_lab_usrlocalbin.yaml", "rules_miner_blog.yaml"):
        shutil.copy(CORPUS / name, tmp_path / name)

    code = main(["rules", "check", str(tmp_path), "--no-falco"])

    assert code == 0
    assert "OK (2 file(s)" in capsys.readouterr().err


def test_rules_check_rejects_invalid_file(tmp_path, capsys):  # type: ignore[no-untyped-def]
    shutil.copy(CORPUS / "rules_invalid_append_enabled.yaml", tmp_path / "custom.yaml")

    code = main(["rules", "check", str(tmp_path), "--no-falco"])

    assert code == 1
    output = capsys.readouterr().out
    assert f"{tmp_path}/custom.yaml:1: appended rule 'Disallowed SSH Connection' must have condition" in output


def test_rules_check_base_makes_unknown_macro_an_error(tmp_path, capsys):  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(CORPUS / "rules_miner_blog.yaml", rules / "custom.yaml")
    base = tmp_path / "falco_rules.yaml"
    base.write_text(BASE_TEXT.replace("outbound", "outbound_v2"))

    code = main(["rules", "check", str(rules), "--base", str(base), "--no-falco"])

    assert code == 1
    assert f"{rules}/custom.yaml:22: rule 'Detect outbound connections" in capsys.readouterr().out


def test_rules_check_base_resolves_default_macros(tmp_path):  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(CORPUS / "rules_miner_blog.yaml", rules / "custom.yaml")
    base = tmp_path / "falco_rules.yaml"
    base.write_text(BASE_TEXT)

    assert main(["rules", "check", str(rules), "--base", str(base), "--no-falco"]) == 0


def fake_falco_binary(folder: Path) -> Path:
    """Write an executable that imitates `falco -V`: a file containing 'evt.bogus' is Invalid."""
    script = folder / "falco"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "paths = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == '-V']\n"
        "bad = False\n"
        "for path in paths:\n"
        "    text = open(path).read()\n"
        "    if 'evt.bogus' in text:\n"
        "        line = text[: text.index('evt.bogus')].count('\\n') + 1\n"
        "        print(f'{path}: Invalid')\n"
        "        print('1 Errors:')\n"
        '        print(f"In rules content: ({path}:{line}:13) "\n'
        "              \"LOAD_ERR_COMPILE_CONDITION: unknown field 'evt.bogus'\")\n"
        "        bad = True\n"
        "    else:\n"
        "        print(f'{path}: Ok')\n"
        "sys.exit(1 if bad else 0)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


async def test_falco_validation_reports_file_and_line(tmp_path):  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules"
    rules.mkdir()
    text = (CORPUS / "rules_lab_usrlocalbin.yaml").read_text().replace("evt.is_open_write", "evt.bogus")
    (rules / "custom.yaml").write_text(text)

    problems = await check_rules_set(
        read_rules_dir(rules), [], falco_binary=fake_falco_binary(tmp_path), falco_config=None
    )

    errors = [p for p in problems if p.severity == "error"]
    assert [(p.file, p.line) for p in errors] == [("custom.yaml", 8)]
    assert "unknown field 'evt.bogus'" in errors[0].message
    assert "falco-router-rules-" not in errors[0].message


async def test_falco_validation_passes_valid_files(tmp_path):  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(CORPUS / "rules_lab_usrlocalbin.yaml", rules / "custom.yaml")

    problems = await check_rules_set(
        read_rules_dir(rules), [], falco_binary=fake_falco_binary(tmp_path), falco_config=None
    )

    assert problems == []


def test_rules_check_warns_on_empty_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "router", "rules", "check", str(tmp_path), "--no-falco"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "no .yaml or .yml rules files" in result.stderr
