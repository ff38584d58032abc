"""Allow-list: known, accepted activity that must not page anyone.

Results do not depend on entry order: every active entry whose expression matches is reported (sorted
by name) and counted. Entries are indexed by a field value their expression requires (the rule name
when there is one), so an alert is tested against a few candidates, not against every entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from router.config.policy import AllowListEntry
from router.event import Event
from router.policy.index import Anchor, ByField, anchor
from router.policy.match import Matcher, compile_match


@dataclass(slots=True)
class CompiledEntry:
    """One allow-list entry, ready to test."""

    config: AllowListEntry
    match: Matcher
    anchor: Anchor | None
    """A field value the expression requires, used only to index the entry."""
    hits: int = 0
    warned_on: dt.date | None = None
    counter: Any = None
    """The metric child counting this entry's suppressions (set by the engine)."""

    @property
    def name(self) -> str:
        """Return the entry name."""
        return self.config.name

    def expired(self, today: dt.date) -> bool:
        """Tell whether the entry has stopped suppressing: its expiry date is before ``today``."""
        return self.config.expires is not None and self.config.expires < today


@dataclass(slots=True)
class AllowList:
    """The compiled allow-list of the active policy."""

    entries: list[CompiledEntry]
    today: dt.date
    _index: ByField[CompiledEntry] = field(default_factory=lambda: ByField([]))

    @classmethod
    def compile(cls, configs: Iterable[AllowListEntry], today: dt.date) -> AllowList:
        """Compile the entries and index the active ones for ``today``."""
        entries = [CompiledEntry(c, compile_match(c.match), anchor(c.match)) for c in configs]
        allow_list = cls(entries, today)
        allow_list.set_today(today)
        return allow_list

    def set_today(self, today: dt.date) -> list[CompiledEntry]:
        """Re-index for a new date; return the entries that are expired on it."""
        self.today = today
        expired = [entry for entry in self.entries if entry.expired(today)]
        self._index = ByField([(entry, entry.anchor) for entry in self.entries if not entry.expired(today)])
        return expired

    def matching(self, event: Event) -> list[CompiledEntry]:
        """Return the active entries that match the alert, sorted by name."""
        found = [entry for entry in self._index.candidates(event) if entry.match(event)]
        if len(found) > 1:
            found.sort(key=lambda entry: entry.name)
        return found

    def expiring(self, within_days: int) -> list[CompiledEntry]:
        """Return the entries that expire within ``within_days`` days or have already expired."""
        limit = self.today + dt.timedelta(days=within_days)
        return [e for e in self.entries if e.config.expires is not None and e.config.expires <= limit]
