"""Allow-list: known, accepted activity that must not page anyone.

Results do not depend on entry order: every active entry whose expression matches is reported (sorted
by name) and counted. Entries whose expression requires a rule name are indexed by it, so an alert is
tested against its rule's entries and the entries that name no rule, not against all of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from router.config.policy import AllowListEntry
from router.event import Event
from router.policy.match import Matcher, canonical, compile_match


@dataclass(slots=True)
class CompiledEntry:
    """One allow-list entry, ready to test."""

    config: AllowListEntry
    match: Matcher
    rules: frozenset[str] | None
    """Rule names the expression requires (None: any rule), used only to index the entry."""
    hits: int = 0
    warned_on: dt.date | None = None

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
    _by_rule: dict[str, list[CompiledEntry]] = field(default_factory=dict)
    _any_rule: list[CompiledEntry] = field(default_factory=list)

    @classmethod
    def compile(cls, configs: Iterable[AllowListEntry], today: dt.date) -> AllowList:
        """Compile the entries and index the active ones for ``today``."""
        entries = [CompiledEntry(c, compile_match(c.match), required_rules(c.match)) for c in configs]
        allow_list = cls(entries, today)
        allow_list.set_today(today)
        return allow_list

    def set_today(self, today: dt.date) -> list[CompiledEntry]:
        """Re-index for a new date; return the entries that are expired on it."""
        self.today = today
        self._by_rule = {}
        self._any_rule = []
        expired = []
        for entry in self.entries:
            if entry.expired(today):
                expired.append(entry)
                continue
            if entry.rules is None:
                self._any_rule.append(entry)
            else:
                for rule in entry.rules:
                    self._by_rule.setdefault(rule, []).append(entry)
        return expired

    def matching(self, event: Event) -> list[CompiledEntry]:
        """Return the active entries that match the alert, sorted by name."""
        found = [entry for entry in self._by_rule.get(event.rule, ()) if entry.match(event)]
        found += [entry for entry in self._any_rule if entry.match(event)]
        if len(found) > 1:
            found.sort(key=lambda entry: entry.name)
        return found

    def expiring(self, within_days: int) -> list[CompiledEntry]:
        """Return the entries that expire within ``within_days`` days or have already expired."""
        limit = self.today + dt.timedelta(days=within_days)
        return [e for e in self.entries if e.config.expires is not None and e.config.expires <= limit]


def required_rules(spec: Any) -> frozenset[str] | None:
    """Return the rule names an expression requires (``rule`` equals or in, alone or inside ``all``).

    None means the expression can match any rule. Only conditions that must hold are used, so the index
    never hides an entry from an alert it would match.
    """
    if isinstance(spec, list):
        spec = {"all": spec}
    if isinstance(spec, str):
        name, _, rest = spec.partition("==")
        if name.strip() == "rule" and rest:
            value = rest.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            return frozenset((value,)) if canonical(value) == value else None
        return None
    if not isinstance(spec, dict):
        return None
    if spec.get("field") == "rule":
        # The index compares raw names, so a name that canonicalises differently (numeric text) stays
        # out of it and is tested like any other entry.
        equals = spec.get("equals")
        if isinstance(equals, str) and canonical(equals) == equals:
            return frozenset((equals,))
        values = spec.get("in")
        if isinstance(values, list) and all(isinstance(v, str) and canonical(v) == v for v in values):
            return frozenset(values)
        return None
    parts = spec.get("all")
    if isinstance(parts, list):
        for part in parts:
            rules = required_rules(part)
            if rules is not None:
                return rules
    return None
