"""Correlation: turn several alerts that share a key into one incident alert.

Three kinds, each keyed by a set of fields (container, pod, namespace, host):

- sequence: alerts matching step 1, then step 2 (then step 3 ...) within ``window_s`` of step 1;
- threshold: ``count`` matching alerts within ``window_s``;
- distinct: matching alerts with ``count`` different values of ``distinct_field`` within ``window_s``.

State is bounded: each rule keeps at most ``max_keys`` keys, drops a key once its window has passed,
and evicts the key that started first when it needs room. Windows are half-open: an alert exactly
``window_s`` after the first no longer joins it.
"""

from __future__ import annotations

import uuid
from collections import deque
from datetime import UTC, datetime

from router.config.policy import CorrelationRule
from router.event import MISSING, Event
from router.policy.dedup import key_values
from router.policy.match import Matcher, canonical, compile_match
from router.priority import parse_priority


class _Track:
    """The alerts one key has collected so far."""

    __slots__ = ("distinct", "ids", "start", "step", "times")

    def __init__(self, start: float) -> None:
        self.start = start
        self.step = 0
        self.ids: list[str] = []
        self.times: deque[tuple[float, str]] = deque()
        self.distinct: dict[str, tuple[float, str]] = {}


class CorrelationState:
    """The tracked keys of one correlation rule."""

    def __init__(self, rule: CorrelationRule) -> None:
        self.rule = rule
        self.steps: tuple[Matcher, ...] = tuple(compile_match(step) for step in rule.steps or ())
        self.match: Matcher | None = compile_match(rule.match) if rule.match is not None else None
        self.tracks: dict[tuple[str, ...], _Track] = {}
        self._fields = sorted(rule.key)
        self.evicted = 0
        self.fired = 0

    def process(self, event: Event, now: float) -> Event | None:
        """Feed one alert; return the incident alert when this alert completes one."""
        if self.rule.kind == "sequence":
            return self._sequence(event, now)
        if self.match is not None and not self.match(event):
            return None
        key = key_values(event, self._fields)
        track = self._track(key, now)
        window = self.rule.window_s
        if self.rule.kind == "threshold":
            times = track.times
            while times and now - times[0][0] >= window:
                times.popleft()
            times.append((now, event.id))
            self._touch(key)
            if len(times) < (self.rule.count or 0):
                return None
            ids = [alert_id for _, alert_id in times]
        else:
            field = self.rule.distinct_field or ""
            value = event.get_field(field)
            if value is MISSING or value is None or value == "null":
                return None
            stale = [form for form, (seen, _) in track.distinct.items() if now - seen >= window]
            for form in stale:
                del track.distinct[form]
            track.distinct[canonical(value) or repr(value)] = (now, event.id)
            self._touch(key)
            if len(track.distinct) < (self.rule.count or 0):
                return None
            ids = [alert_id for _, alert_id in track.distinct.values()]
        del self.tracks[key]
        return self._incident(event, ids)

    def _sequence(self, event: Event, now: float) -> Event | None:
        steps = self.steps
        key: tuple[str, ...] | None = None
        track: _Track | None = None
        matches_next = False
        for index, step in enumerate(steps):
            if not step(event):
                continue
            if key is None:
                key = key_values(event, self._fields)
                track = self.tracks.get(key)
                if track is not None and now - track.start >= self.rule.window_s:
                    del self.tracks[key]
                    track = None
            if track is not None and index == track.step:
                matches_next = True
                break
        if key is None:
            return None
        if matches_next and track is not None:
            track.step += 1
            track.ids.append(event.id)
            if track.step < len(steps):
                return None
            del self.tracks[key]
            return self._incident(event, track.ids)
        if steps[0](event) and (track is None or track.step == 1):
            # A new first step restarts a key that has not got past it, because the later start
            # leaves more of the window for the next step.
            if track is not None:
                del self.tracks[key]
            track = self._track(key, now)
            track.step = 1
            track.ids = [event.id]
        return None

    def _track(self, key: tuple[str, ...], now: float) -> _Track:
        track = self.tracks.get(key)
        if track is not None:
            return track
        if len(self.tracks) >= self.rule.max_keys:
            self.expire(now)
        if len(self.tracks) >= self.rule.max_keys:
            del self.tracks[next(iter(self.tracks))]
            self.evicted += 1
        track = _Track(now)
        self.tracks[key] = track
        return track

    def _touch(self, key: tuple[str, ...]) -> None:
        # Re-inserting moves the key to the end, so the dict stays ordered by last activity and
        # ``expire`` and eviction find the stale keys at the front.
        self.tracks[key] = self.tracks.pop(key)

    def expire(self, now: float) -> int:
        """Drop keys whose whole window has passed; return how many were dropped."""
        window = self.rule.window_s
        dropped = 0
        while self.tracks:
            key, track = next(iter(self.tracks.items()))
            if now - _newest(track) < window:
                break
            del self.tracks[key]
            dropped += 1
        return dropped

    def _incident(self, event: Event, ids: list[str]) -> Event:
        self.fired += 1
        config = self.rule.incident
        priority = parse_priority(config.priority)
        key = {name: value for name in self.rule.key if (value := event.get_field(name)) is not MISSING}
        summary = config.output or (
            f"{config.rule}: {len(ids)} alerts joined by correlation {self.rule.name} ("
            + " ".join(f"{name}={value}" for name, value in key.items())
            + ")"
        )
        incident = Event(
            rule=config.rule,
            priority=priority,
            priority_raw=priority.falco_name if priority is not None else config.priority,
            time_ns=event.time_ns,
            time_raw=_rfc3339(event.time_ns),
            output=summary,
            output_fields=dict(key),
            source="correlation",
            hostname=event.hostname,
            tags=list(config.tags) or None,
            id=str(uuid.uuid4()),
        )
        incident.enrichment = dict(event.enrichment)
        incident.annotations["incident"] = {
            "correlation": self.rule.name,
            "kind": self.rule.kind,
            "alert_ids": ids,
            "key": key,
        }
        return incident


def _newest(track: _Track) -> float:
    # A sequence is bound to its first step; the other kinds stay alive while any alert is in the window.
    if track.times:
        return track.times[-1][0]
    if track.distinct:
        return max(seen for seen, _ in track.distinct.values())
    return track.start


def _rfc3339(time_ns: int) -> str:
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"
