"""Routes compiled once at load: which outputs an alert goes to."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from router.config.routes import RouteConfig
from router.event import Event
from router.priority import Priority, parse_priority

_WILDCARD = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its conditions prepared for fast matching."""

    name: str
    outputs: tuple[str, ...]
    min_priority: Priority | None
    rule_names: frozenset[str] | None
    rule_pattern: re.Pattern[str] | None
    sources: frozenset[str] | None
    tags: frozenset[str] | None

    @classmethod
    def compile(cls, config: RouteConfig) -> CompiledRoute:
        """Prepare one route from its config."""
        names = None
        pattern = None
        if config.rules is not None:
            names = frozenset(r for r in config.rules if not _WILDCARD.search(r))
            globs = [fnmatch.translate(r) for r in config.rules if _WILDCARD.search(r)]
            pattern = re.compile("|".join(globs)) if globs else None
        return cls(
            name=config.name,
            outputs=tuple(config.outputs),
            min_priority=parse_priority(config.min_priority) if config.min_priority else None,
            rule_names=names,
            rule_pattern=pattern,
            sources=frozenset(config.sources) if config.sources is not None else None,
            tags=frozenset(config.tags) if config.tags is not None else None,
        )

    def matches(self, event: Event) -> bool:
        """Tell whether the alert meets every condition of the route."""
        # An unknown priority passes any minimum: a misspelt priority must not hide an alert.
        if self.min_priority is not None and event.priority is not None and event.priority < self.min_priority:
            return False
        if self.rule_names is not None and event.rule not in self.rule_names:
            if self.rule_pattern is None or not self.rule_pattern.fullmatch(event.rule):
                return False
        if self.sources is not None and event.source not in self.sources:
            return False
        return self.tags is None or (event.tags is not None and not self.tags.isdisjoint(event.tags))


class Router:
    """Selects the outputs for an alert from every route it matches."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self.routes = [CompiledRoute.compile(r) for r in routes]

    def select(self, event: Event) -> tuple[list[str], list[str]]:
        """Return (outputs, names of matching routes); each output appears once, in route order."""
        outputs: list[str] = []
        matched: list[str] = []
        for route in self.routes:
            if route.matches(event):
                matched.append(route.name)
                for output in route.outputs:
                    if output not in outputs:
                        outputs.append(output)
        return outputs, matched
