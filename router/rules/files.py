"""Rules sets on disk: read a folder into a hashed snapshot, and write one into Falco's folder atomically.

The kubelet updates a mounted ConfigMap by writing a new timestamped folder (``..2026_01_02_03_04_05.123``)
and then swapping the ``..data`` symlink to it. The visible ``name.yaml`` entries are symlinks through
``..data``. Reading the folder by content, following symlinks and skipping dot entries, turns each swap
into one change of the set.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

RULES_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class RulesSet:
    """The rules files of one folder by file name, in Falco's load order (alphabetical)."""

    files: dict[str, bytes]

    @property
    def sha256(self) -> str:
        """Return the hash of the whole set: names and contents, so a rename is a change too."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            content = self.files[name]
            digest.update(f"{name}\0{len(content)}\0".encode())
            digest.update(content)
        return digest.hexdigest()

    def names(self) -> list[str]:
        """Return the file names in load order."""
        return sorted(self.files)


def is_rules_file_name(name: str) -> bool:
    """Tell whether Falco (0.41+) would load a file of this name from a rules folder."""
    return not name.startswith(".") and name.endswith(RULES_SUFFIXES)


def read_rules_dir(folder: Path) -> RulesSet:
    """Read every .yaml/.yml file of ``folder``, following symlinks; raises ``OSError`` when unreadable.

    A file that vanishes while the folder is read (a ConfigMap swap in progress) raises
    ``FileNotFoundError``; the caller reads again on its next poll.
    """
    files: dict[str, bytes] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_rules_file_name(entry.name) and entry.is_file():
                files[entry.name] = Path(entry.path).read_bytes()
    return RulesSet(dict(sorted(files.items())))


def write_rules_set(folder: Path, rules: RulesSet) -> None:
    """Make ``folder`` hold exactly ``rules``: each file replaced atomically, stale rules files removed.

    Each file is written to a temporary dot file in the same folder, fsynced and renamed over the old one,
    so Falco never reads a half-written file. The folder is fsynced so that the renames survive a crash.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in rules.files.items():
        _replace_file(folder / name, content)
    for entry in folder.iterdir():
        if is_rules_file_name(entry.name) and entry.name not in rules.files:
            entry.unlink()
    _fsync_dir(folder)


def _replace_file(path: Path, content: bytes) -> None:
    # NOTE: Falco before 0.41 loads every file of a rules folder, dot files included, so it could see
    # the temporary file if it restarts during the few microseconds between write and rename.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
