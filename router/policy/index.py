"""Candidate indexes: test an alert only against the policy items that can match it.

An item (allow-list entry, dedup rule, correlation rule) whose expression requires ``FIELD equals V``
or ``FIELD in [...]`` (alone or inside ``all``) can only match alerts that carry one of those values,
so it is filed under them. Items without such a condition are tested against every alert. The index
only narrows the candidates; the full expression still decides, so results are the same as testing
every item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from router.event import MISSING, Event
from router.policy.match import canonical

T = TypeVar("T")

Anchor = tuple[str, frozenset[str]]
"""A field and the canonical values one of which an alert must carry in it."""

_MAX_CACHED_RULES = 10_000


def anchor(spec: Any, prefer: str = "rule") -> Anchor | None:
    """Return a condition the expression requires, preferring one on ``prefer``; None when there is none."""
    found = _anchors(spec)
    for item in found:
        if item[0] == prefer:
            return item
    return found[0] if found else None


def _anchors(spec: Any) -> list[Anchor]:
    if isinstance(spec, list):
        spec = {"all": spec}
    if isinstance(spec, str):
        name, separator, rest = spec.partition("==")
        value = rest.strip()
        if not separator or not value or "!" in name or "=" in value[:1]:
            return []
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        return [(name.strip(), frozenset((value,)))]
    if not isinstance(spec, dict):
        return []
    if "field" in spec:
        name = spec["field"]
        if name == "priority":
            return []
        if "equals" in spec and (form := canonical(spec["equals"])) is not None:
            return [(name, frozenset((form,)))]
        values = spec.get("in")
        if isinstance(values, list):
            forms = [canonical(v) for v in values]
            if all(form is not None for form in forms):
                return [(name, frozenset(f for f in forms if f is not None))]
        return []
    parts = spec.get("all")
    if isinstance(parts, list):
        return [found for part in parts for found in _anchors(part)]
    return []


def sequence_anchor(specs: Sequence[Any]) -> Anchor | None:
    """Return the union of the rule-name conditions of several expressions, None unless all have one."""
    values: set[str] = set()
    for spec in specs:
        found = anchor(spec)
        if found is None or found[0] != "rule":
            return None
        values |= found[1]
    return ("rule", frozenset(values))


class ByRule(Generic[T]):
    """Items filed by the rule names they require, returned in their original order."""

    def __init__(self, items: Sequence[tuple[T, Anchor | None]]) -> None:
        self._items = [(item, found[1] if found is not None and found[0] == "rule" else None) for item, found in items]
        self._unanchored: tuple[T, ...] = tuple(item for item, rules in self._items if rules is None)
        self._cache: dict[str, tuple[T, ...]] = {}

    def candidates(self, event: Event) -> tuple[T, ...]:
        """Return the items that can match the alert's rule, in their original order."""
        rule = event.rule
        cached = self._cache.get(rule)
        if cached is None:
            if len(self._cache) >= _MAX_CACHED_RULES:
                self._cache.clear()
            cached = tuple(item for item, rules in self._items if rules is None or rule in rules)
            self._cache[rule] = cached
        return cached


class ByField(Generic[T]):
    """Items filed by one required field value each; the order of the result is unspecified."""

    def __init__(self, items: Sequence[tuple[T, Anchor | None]]) -> None:
        self._fields: dict[str, dict[str, list[T]]] = {}
        self._unanchored: list[T] = []
        for item, found in items:
            if found is None:
                self._unanchored.append(item)
                continue
            name, values = found
            by_value = self._fields.setdefault(name, {})
            for value in values:
                by_value.setdefault(value, []).append(item)

    def candidates(self, event: Event) -> list[T]:
        """Return every item that can match the alert (each at most once)."""
        found = list(self._unanchored)
        for name, by_value in self._fields.items():
            value = event.get_field(name)
            if value is MISSING:
                continue
            if isinstance(value, list):
                seen: set[int] = set()
                for element in value:
                    for item in by_value.get(canonical(element) or "", ()):
                        if id(item) not in seen:
                            seen.add(id(item))
                            found.append(item)
            else:
                found.extend(by_value.get(canonical(value) or "", ()))
        return found
