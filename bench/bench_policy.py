"""Benchmark of the policy engine: microseconds per alert, and memory of 100,000 open dedup windows.

Run: .venv/bin/python bench/bench_policy.py
The policy has 100 allow-list entries (70 tied to a rule name, 30 that apply to every rule), 20 dedup
rules and 10 correlation rules (sequence, threshold and distinct). Alerts are corpus-shaped, spread
over 30 rule names, 50 hosts and 2,000 containers; about one in eight is allow-listed. This is a
benchmark, not a test: it asserts nothing and prints its numbers.
"""

from __future__ import annotations

import gc
import platform
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.config.policy import DedupRule, PolicyConfig, PolicyFile
from router.event import Event, parse_alert
from router.logs import configure_logging
from router.policy.dedup import DedupState
from router.policy.engine import PolicyEngine

RULES = [f"Rule number {i}" for i in range(30)]
ALERTS = 50_000
DEDUP_KEYS = 100_000


def policy_document() -> dict[str, Any]:
    """Return the benchmark policy described in the module docstring, as a policy file's content."""
    allow_list: list[dict[str, Any]] = []
    for i in range(70):
        allow_list.append(
            {
                "name": f"ruled-{i}",
                "match": {
                    "all": [
                        {"field": "rule", "equals": RULES[i % 30]},
                        {"field": "proc.cmdline", "glob": f"*tool-{i}*"},
                        {"field": "k8s.ns.name", "in": [f"ns-{i % 7}", "kube-system"]},
                    ]
                },
                "reason": "bench",
                "owner": "bench",
            }
        )
    for i in range(30):
        allow_list.append(
            {
                "name": f"any-rule-{i}",
                "match": {
                    "all": [
                        {"field": "k8s.ns.name", "equals": f"ns-{i % 10}"},
                        {"field": "proc.name", "equals": f"agent-{i}"},
                    ]
                },
                "reason": "bench",
                "owner": "bench",
            }
        )
    dedup = [
        {
            "name": f"dedup-{i}",
            "match": {"field": "rule", "in": RULES[(i * 3) % 30 : (i * 3) % 30 + 2]},
            "key": ["rule", "hostname", "container.id"] if i % 2 else ["rule", "k8s.pod.name"],
            "window_s": 10,
            "distinct": ["proc.cmdline"],
        }
        for i in range(19)
    ]
    dedup.append({"name": "dedup-default", "window_s": 10, "distinct": ["proc.cmdline"]})
    correlation: list[dict[str, Any]] = []
    for i in range(4):
        correlation.append(
            {
                "name": f"sequence-{i}",
                "kind": "sequence",
                "key": ["container.id"],
                "window_s": 300,
                "steps": [f'rule == "{RULES[i]}"', f'rule == "{RULES[i + 10]}"', f'rule == "{RULES[i + 20]}"'],
                "incident": {"rule": f"Incident sequence {i}"},
            }
        )
    for i in range(3):
        correlation.append(
            {
                "name": f"threshold-{i}",
                "kind": "threshold",
                "key": ["container.id"],
                "window_s": 60,
                "match": {"priority": ">= warning"} if i == 0 else {"field": "rule", "equals": RULES[i + 5]},
                "count": 50,
                "incident": {"rule": f"Incident threshold {i}"},
            }
        )
    for i in range(3):
        correlation.append(
            {
                "name": f"distinct-{i}",
                "kind": "distinct",
                "key": ["rule"],
                "window_s": 600,
                "match": {"field": "rule", "equals": RULES[i + 25]},
                "distinct_field": "hostname",
                "count": 40,
                "incident": {"rule": f"Incident distinct {i}"},
            }
        )
    return {"allow_list": allow_list, "dedup": dedup, "correlation": correlation}


def build_policy() -> PolicyFile:
    """Return the benchmark policy, validated."""
    return PolicyFile.model_validate(policy_document())


def make_alert(rng: random.Random, index: int) -> Event:
    """Return one synthetic alert shaped like the corpus."""
    rule = rng.choice(RULES)
    tool = rng.randrange(80)
    return parse_alert(
        {
            "hostname": f"node-{rng.randrange(50)}",
            "output": f"{rule} fired",
            "priority": rng.choice(["Notice", "Warning", "Critical", "Informational"]),
            "rule": rule,
            "source": "syscall",
            "tags": ["container"],
            "time": "2023-11-14T22:13:20.000000000Z",
            "output_fields": {
                "container.id": f"{rng.randrange(2000):012x}",
                "k8s.ns.name": f"ns-{rng.randrange(8)}",
                "k8s.pod.name": f"pod-{rng.randrange(500)}",
                "proc.cmdline": f"bin/tool-{tool} --run {index % 13}",
                "proc.name": f"agent-{rng.randrange(40)}",
                "proc.tty": rng.choice([0, 34816, "34816"]),
                "user.name": rng.choice(["root", None]),
            },
        }
    )


def bench_throughput() -> tuple[float, dict[str, int]]:
    """Return (microseconds per alert, decision counts) for the full policy on one core."""
    engine = PolicyEngine(PolicyConfig())
    engine.install(build_policy(), "bench")
    rng = random.Random(7)
    alerts = [make_alert(rng, i) for i in range(ALERTS)]
    counts = {"suppressed": 0, "repeat": 0, "incidents": 0}
    incidents: list[Event] = []
    engine.inject = incidents.append
    now = 1_700_000_000.0
    # The pre-built alerts stand for nothing in production, where each alert is short-lived; frozen,
    # they are left out of the collector's scans.
    gc.collect()
    gc.freeze()
    start = time.perf_counter()
    for index, event in enumerate(alerts):
        now += 0.002  # 500 alerts per second of event time
        engine.process(event, now=now)
        if index % 500 == 0:
            engine.tick(now)
    elapsed = time.perf_counter() - start
    gc.unfreeze()
    for event in alerts:
        counts["suppressed"] += "suppressed" in event.annotations
        counts["repeat"] += event.annotations.get("dedup", {}).get("role") == "repeat"
    counts["incidents"] = len(incidents)
    return elapsed / ALERTS * 1e6, counts


def bench_dedup_memory() -> float:
    """Return the MiB held by one dedup rule with 100,000 open windows (alerts themselves excluded)."""
    rule = DedupRule(name="memory", window_s=3600, distinct=["proc.cmdline"], max_keys=DEDUP_KEYS * 2)
    gc.collect()
    tracemalloc.start()
    state = DedupState(rule)
    rng = random.Random(11)
    for index in range(DEDUP_KEYS):
        event = make_alert(rng, index)
        event.output_fields["container.id"] = f"{index:012x}"
        state.process(event, 1_700_000_000.0, lambda _update: None)
        del event
    gc.collect()
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if len(state.groups) != DEDUP_KEYS:
        raise RuntimeError(f"expected {DEDUP_KEYS} open windows, found {len(state.groups)}")
    return current / 2**20


def main() -> None:
    """Run both benchmarks and print the results with the machine they ran on."""
    # Production runs at info, where the per-alert debug events are filtered before formatting.
    configure_logging("info", "json")
    rounds = sorted((bench_throughput() for _ in range(5)), key=lambda result: result[0])
    per_alert, counts = rounds[len(rounds) // 2]
    memory = bench_dedup_memory()
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'unknown cpu'}")
    print(f"policy: 100 allow-list entries, 20 dedup rules, 10 correlation rules; {ALERTS} alerts")
    print(f"  median of 5 rounds: {per_alert:.1f} us/alert (best {rounds[0][0]:.1f}, worst {rounds[-1][0]:.1f})")
    print(f"  per round: suppressed {counts['suppressed']}, folded {counts['repeat']}, incidents {counts['incidents']}")
    print(f"dedup memory: {DEDUP_KEYS} open windows hold {memory:.1f} MiB")


if __name__ == "__main__":
    main()
