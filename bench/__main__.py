"""Run the benchmarks: ``python -m bench`` runs all, ``python -m bench NAME ...`` the named ones.

Results are merged into bench/results/latest.json and the generated section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shlex
import sys
import traceback
from collections.abc import Callable

from bench import e2e, grpc_ingest, http_ingest, memory, replay, replay_instructions
from bench.common import Options, Result, Skipped, machine, uvloop_available
from bench.report import write_doc, write_json, write_plot

BENCHMARKS: dict[str, Callable[[Options], Result]] = {
    "http_sequential": http_ingest.sequential,
    "http_concurrent": http_ingest.concurrent,
    "http_event_loop": http_ingest.event_loops,
    "grpc": grpc_ingest.run,
    "e2e": e2e.run,
    "replay": replay.run,
    "replay_instructions": replay_instructions.run,
    "memory": memory.run,
}


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and write the results; exit 1 when one of them failed."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side; medians are reported (default 3)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per HTTP round (default 3)")
    parser.add_argument(
        "--memory-minutes", type=float, default=10.0, help="minutes of load in the memory benchmark (default 10)"
    )
    parser.add_argument("--replay-alerts", type=int, default=1_000_000, help="alerts in the replay file (default 1e6)")
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s rounds, 1 minute memory, 200k replay")
    loop = parser.add_mutually_exclusive_group()
    loop.add_argument("--uvloop", action="store_true", help="run the router and the references on uvloop")
    loop.add_argument("--no-uvloop", action="store_true", help="run on the standard asyncio loop (the default)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: expected one of {', '.join(BENCHMARKS)}")

    options = Options(
        rounds=args.rounds,
        duration_s=args.duration,
        memory_minutes=args.memory_minutes,
        replay_alerts=args.replay_alerts,
        uvloop=args.uvloop,
    )
    if args.quick:
        options = dataclasses.replace(options, rounds=1, duration_s=1.0, memory_minutes=1.0, replay_alerts=200_000)
    if options.uvloop and not uvloop_available():
        print("--uvloop given but uvloop is not installed: run `make bench` or pip install uvloop", file=sys.stderr)
        return 2

    run = {
        "command": shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "options": dataclasses.asdict(options),
        "benchmarks": {},
    }
    failed = False
    for name in args.names or BENCHMARKS:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            result = BENCHMARKS[name](options)
        except Skipped as exc:
            result = Result(name, (BENCHMARKS[name].__doc__ or name).splitlines()[0].rstrip("."), skipped=str(exc))
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the results of the others
            failed = True
            traceback.print_exc()
            continue
        print(f"   {result.skipped or result.metrics}", file=sys.stderr, flush=True)
        entry = dataclasses.asdict(result)
        # Each benchmark keeps the command and date of its own run, because a run of some benchmarks
        # keeps the others' earlier results.
        entry["run"] = {"command": run["command"], "date": run["date"]}
        run["benchmarks"][name] = entry  # type: ignore[index]

    record = write_json(run)
    write_doc(record, write_plot(record))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
