"""Talking to the Falco process: find its pid, send it SIGHUP, run `falco -V`, read its rules hash.

Exception tree::

    FalcoUnreachableError  no Falco process can be found or signalled; the message gives the reason and the fix
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from router.rules.files import RulesSet
from router.rules.validate import RuleProblem

FALCO_RULES_HASH_METRIC = "falcosecurity_falco_sha256_rules_files_info"
_STATUS_LINE = re.compile(r"^(?P<file>\S.*): (?P<status>Ok|Ok, with warnings|Invalid)$")
_POSITION = re.compile(r":(?P<line>\d+):\d+\)")


class FalcoUnreachableError(Exception):
    """No Falco process can be found or signalled."""


def find_falco_pid(pid_file: Path | None, process_name: str, *, scan_proc: bool, proc: Path = Path("/proc")) -> int:
    """Return Falco's pid from the pid file, else from a /proc scan; raises ``FalcoUnreachableError`` if neither works.

    A pid file whose pid is not running, or runs a process of another name, is stale: the pid may have
    been reused by an unrelated process, which must never receive the signal.
    """
    reasons: list[str] = []
    if pid_file is not None:
        pid = _read_pid(pid_file, reasons)
        if pid is not None:
            name = process_comm(pid, proc)
            if name is None:
                reasons.append(f"pid file {pid_file} is stale: process {pid} is not running")
            elif name != process_name:
                reasons.append(f"pid file {pid_file} is stale: process {pid} is {name!r}, not {process_name!r}")
            else:
                return pid
    if scan_proc:
        found = _scan_proc(process_name, proc)
        if len(found) == 1:
            return found[0]
        if found:
            reasons.append(
                f"{len(found)} processes are named {process_name!r} (pids {found}); set pid_file to choose one"
            )
        else:
            reasons.append(f"no process named {process_name!r} in {proc} (a sidecar needs shareProcessNamespace: true)")
    if not reasons:
        reasons.append("neither pid_file nor scan_proc is configured")
    raise FalcoUnreachableError("; ".join(reasons))


def send_sighup(pid: int) -> None:
    """Send SIGHUP to ``pid``; raises ``FalcoUnreachableError`` when the process is gone or not ours to signal."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise FalcoUnreachableError(f"Falco (pid {pid}) exited before it could be signalled") from exc
    except PermissionError as exc:
        raise FalcoUnreachableError(
            f"not permitted to signal Falco (pid {pid}): run the router as Falco's user or grant it CAP_KILL"
        ) from exc


def process_comm(pid: int, proc: Path = Path("/proc")) -> str | None:
    """Return the process name of ``pid`` (/proc/PID/comm), or None when no such process runs."""
    try:
        return (proc / str(pid) / "comm").read_text(encoding="utf-8", errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None


def _read_pid(pid_file: Path, reasons: list[str]) -> int | None:
    try:
        text = pid_file.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        reasons.append(f"pid file {pid_file} does not exist (start Falco with --pidfile {pid_file})")
        return None
    except OSError as exc:
        reasons.append(f"pid file {pid_file} cannot be read: {exc.strerror}")
        return None
    if not text.isdigit() or int(text) <= 0:
        reasons.append(f"pid file {pid_file} does not contain a pid (found {text[:20]!r})")
        return None
    return int(text)


def _scan_proc(process_name: str, proc: Path) -> list[int]:
    own = os.getpid()
    found = []
    for entry in proc.iterdir():
        if entry.name.isdigit() and int(entry.name) != own and process_comm(int(entry.name), proc) == process_name:
            found.append(int(entry.name))
    return sorted(found)


async def falco_validate(
    binary: Path,
    falco_config: Path | None,
    base_files: Sequence[Path],
    candidates: RulesSet,
    timeout_s: float,
) -> list[RuleProblem]:
    """Run ``falco -V`` on the base files then the candidates, in load order; return its problems.

    The candidates are written to a temporary folder under their own names, so Falco's messages name the
    files as the operator knows them.
    """
    with tempfile.TemporaryDirectory(prefix="falco-router-rules-") as staging:
        staged: dict[str, str] = {}
        for name, content in candidates.files.items():
            path = Path(staging) / name
            path.write_bytes(content)
            staged[str(path)] = name
        command = [str(binary)]
        if falco_config is not None:
            command += ["-c", str(falco_config)]
        for path_text in [*map(str, base_files), *staged]:
            command += ["-V", path_text]
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            return [RuleProblem(str(binary), None, f"falco -V could not be started: {exc.strerror}")]
        try:
            async with asyncio.timeout(timeout_s):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            return [RuleProblem(str(binary), None, f"falco -V did not finish within {timeout_s} s")]
        return parse_validation_output(
            stdout.decode(errors="replace"), stderr.decode(errors="replace"), process.returncode or 0, staged
        )


def parse_validation_output(stdout: str, stderr: str, returncode: int, names: dict[str, str]) -> list[RuleProblem]:
    """Turn the text output of ``falco -V`` into problems; ``names`` maps staged paths to file names."""
    problems: list[RuleProblem] = []
    current: str | None = None
    details: list[str] = []

    def finish() -> None:
        if current is not None:
            text = " ".join(line.strip() for line in details if line.strip()) or "Invalid"
            position = _POSITION.search(text)
            line = int(position.group("line")) if position else None
            problems.append(RuleProblem(current, line, f"falco -V: {_rename(text, names)}"))

    for raw in stdout.splitlines():
        status = _STATUS_LINE.match(raw.strip())
        if status:
            finish()
            current, details = None, []
            file_name = names.get(status.group("file"), status.group("file"))
            if status.group("status") == "Invalid":
                current = file_name
            elif status.group("status") == "Ok, with warnings":
                problems.append(
                    RuleProblem(file_name, None, "falco -V: Ok, with warnings (see Falco's log)", "warning")
                )
        elif current is not None:
            details.append(raw)
    finish()
    if returncode != 0 and not any(p.severity == "error" for p in problems):
        tail = " ".join((stderr or stdout).strip().splitlines()[-5:])
        problems.append(RuleProblem("falco -V", None, f"exited with status {returncode}: {_rename(tail, names)}"))
    return problems


def _rename(text: str, names: dict[str, str]) -> str:
    for staged, name in names.items():
        text = text.replace(staged, name)
    return text


async def fetch_falco_rules_hash(url: str, timeout_s: float = 5.0) -> str | None:
    """Return the rules-files hash label Falco exports on its Prometheus endpoint, or None when absent."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.get(url) as response,
    ):
        response.raise_for_status()
        text = await response.text()
    return parse_rules_hash(text)


def parse_rules_hash(text: str) -> str | None:
    """Return the hash label of ``falcosecurity_falco_sha256_rules_files_info`` in Prometheus text."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != FALCO_RULES_HASH_METRIC:
                continue
            if "sha256_rules_files" in sample.labels:
                return sample.labels["sha256_rules_files"]
            for label, value in sample.labels.items():
                if label.startswith("sha256"):
                    return value
    return None
