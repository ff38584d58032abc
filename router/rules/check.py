"""The whole validation of a candidate rules set: our schema and reference checks, then ``falco -V``."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from router.rules.falco import falco_validate
from router.rules.files import RulesSet
from router.rules.validate import RuleProblem, RulesFile, has_errors, validate_rules


def find_falco_binary(configured: Path | None) -> Path | None:
    """Return the configured falco executable, else ``falco`` from PATH, else None."""
    if configured is not None:
        return configured
    found = shutil.which("falco")
    return Path(found) if found else None


async def check_rules_set(
    candidate: RulesSet,
    base_files: Sequence[Path],
    *,
    falco_binary: Path | None,
    falco_config: Path | None,
    timeout_s: float = 60.0,
    folder: Path | None = None,
) -> list[RuleProblem]:
    """Return every problem of ``candidate`` loaded after ``base_files``.

    ``falco -V`` runs only when our own checks found no error, because Falco stops at the first invalid
    file and would hide the rest. Problems name files as ``folder/name`` when ``folder`` is given.
    """
    problems: list[RuleProblem] = []
    base: list[RulesFile] = []
    for path in base_files:
        try:
            base.append(RulesFile(str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(RuleProblem(str(path), None, f"base file cannot be read: {exc}"))
    files = [
        RulesFile(str(folder / name) if folder else name, content.decode("utf-8", errors="replace"))
        for name, content in candidate.files.items()
    ]
    problems += validate_rules(files, base)
    if falco_binary is not None and not has_errors(problems):
        for problem in await falco_validate(falco_binary, falco_config, base_files, candidate, timeout_s):
            shown = str(folder / problem.file) if folder and problem.file in candidate.files else problem.file
            problems.append(RuleProblem(shown, problem.line, problem.message, problem.severity))
    return problems
