"""Falco priorities: the eight levels, their order and how spellings map to them."""

from __future__ import annotations

import enum


class Priority(enum.IntEnum):
    """A Falco priority, valued by severity so that ``a >= b`` means "a is at least as severe as b".

    Falco numbers them the other way round on the wire (gRPC enum EMERGENCY=0 .. DEBUG=7); use
    ``falco_number`` for that form.
    """

    DEBUG = 0
    INFORMATIONAL = 1
    NOTICE = 2
    WARNING = 3
    ERROR = 4
    CRITICAL = 5
    ALERT = 6
    EMERGENCY = 7

    @property
    def falco_name(self) -> str:
        """Return the Titlecase spelling Falco itself emits, such as ``Informational``."""
        return self.name.capitalize()

    @property
    def falco_number(self) -> int:
        """Return the number used by Falco's gRPC ``falco.schema.priority`` enum."""
        return 7 - int(self)


# Falco parses rule priorities case-insensitively and accepts "info" as a synonym of
# "informational" (falco_common.cpp). Downstream tools also emit "Info".
_SPELLINGS: dict[str, Priority] = {p.name.lower(): p for p in Priority}
_SPELLINGS["info"] = Priority.INFORMATIONAL


def parse_priority(text: str) -> Priority | None:
    """Return the priority named by ``text`` (any case, ``info`` included), or None when unknown.

    An unknown spelling is not an error: the caller keeps the alert, flags it and delivers it,
    because a typo in a rules file must not hide a security alert.
    """
    return _SPELLINGS.get(text.strip().lower())


def priority_from_falco_number(number: int) -> Priority | None:
    """Return the priority for a gRPC enum number (0 = Emergency .. 7 = Debug), None when out of range."""
    if 0 <= number <= 7:
        return Priority(7 - number)
    return None


PRIORITY_NAMES: tuple[str, ...] = tuple(p.name.lower() for p in sorted(Priority, reverse=True))
"""Lower-case names from most to least severe, for error messages and docs."""
