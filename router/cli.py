"""The ``falco-router`` command: run, check, replay."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from router import __version__
from router.config import (
    ConfigError,
    RouterConfig,
    config_warnings,
    load_config,
    resolve_secrets,
    secret_reference_problems,
)
from router.logs import configure_logging
from router.policy.dryrun import DryRun, allow_list_report
from router.rules.check import check_rules_set, find_falco_binary
from router.rules.files import read_rules_dir
from router.spool.admin import list_dead_letters, requeue_dead_letters
from router.spool.store import SpoolError

T = TypeVar("T")

EVENT_LOOP_ENV = "FALCO_ROUTER_EVENT_LOOP"
"""Environment variable that picks the event loop: ``asyncio`` (default), ``uvloop``, or ``auto`` (uvloop when
installed)."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="falco-router", description="Route Falco alerts to Kafka, Slack and webhooks."
    )
    parser.add_argument("--version", action="version", version=f"falco-router {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="run the router daemon")
    run.add_argument("--config", type=Path, help="YAML config file (default: the embedded default config)")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate a config file and list every problem")
    check.add_argument("--config", type=Path, required=True, help="YAML config file to check")
    check.add_argument(
        "--skip-secrets", action="store_true", help="do not check that secrets are readable (for CI without secrets)"
    )
    check.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="JSON-lines file of Falco alerts; list the allow-list entries that match none of them",
    )
    check.set_defaults(handler=_check)

    rules = commands.add_parser("rules", help="work with Falco rules files")
    rules_commands = rules.add_subparsers(metavar="COMMAND")
    rules_check = rules_commands.add_parser(
        "check", help="validate a folder of Falco rules files; print every problem as file:line: message"
    )
    rules_check.add_argument("folder", type=Path, help="folder of .yaml/.yml rules files, loaded in name order")
    rules_check.add_argument(
        "--base",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="rules file Falco loads before the folder (repeat, in load order); makes unresolved names errors",
    )
    rules_check.add_argument(
        "--falco-binary", type=Path, help="falco executable for `falco -V` (default: falco on PATH, if any)"
    )
    rules_check.add_argument("--falco-config", type=Path, help="falco.yaml passed to `falco -V` with -c")
    rules_check.add_argument("--no-falco", action="store_true", help="skip `falco -V` even when falco is on PATH")
    rules_check.set_defaults(handler=_rules_check)

    replay = commands.add_parser("replay", help="send the alerts of a JSON-lines file through the pipeline")
    replay.add_argument("file", type=Path, help="JSON-lines file of Falco alerts ('-' for standard input)")
    replay.add_argument("--config", type=Path, help="YAML config file (default: the embedded default config)")
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="deliver nothing; print one JSON decision per alert (allow-list, dedup, correlation, routes, outputs)",
    )
    replay.set_defaults(handler=_replay)

    spool = commands.add_parser("spool", help="inspect the spool of a stopped router")
    spool_commands = spool.add_subparsers(metavar="SPOOL_COMMAND")
    list_dead = spool_commands.add_parser("list-dead", help="list dead-lettered alerts, newest last")
    list_dead.add_argument("--config", type=Path, required=True, help="YAML config file with a spool section")
    list_dead.add_argument("--output", help="only this output's dead letters")
    list_dead.add_argument("--limit", type=int, default=100, help="newest dead letters to list (default: 100)")
    list_dead.add_argument("--body", action="store_true", help="also print each alert as JSON")
    list_dead.set_defaults(handler=_spool_list_dead)
    requeue = spool_commands.add_parser(
        "requeue-dead", help="queue an output's dead letters for delivery again (router stopped)"
    )
    requeue.add_argument("output", help="output name whose dead letters to requeue")
    requeue.add_argument("--config", type=Path, required=True, help="YAML config file with a spool section")
    requeue.set_defaults(handler=_spool_requeue_dead)
    return parser


def _load(path: Path | None, *, secrets: bool = True) -> RouterConfig | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems = list(exc.problems)
        if secrets and path is not None:
            # Unreadable secrets are reported in the same run as the other problems, not after a fix.
            reported = {p.path for p in problems}
            text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
            problems += [p for p in secret_reference_problems(text, str(path)) if p.path not in reported]
        _print_problems(path, problems)
        return None
    if secrets:
        problems = resolve_secrets(config)
        if problems:
            _print_problems(path, problems)
            return None
    return config


def _print_problems(path: Path | None, problems: list[Any]) -> None:
    name = str(path) if path else "the embedded default config"
    print(f"{name}: {len(problems)} problem(s) found:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config, secrets=not args.skip_secrets)
    if config is None:
        return 1
    # Warnings only: check prints its own report, and expired allow-list entries are logged as warnings.
    configure_logging("warning", config.log.format)
    try:
        if args.replay is not None:
            with args.replay.open(encoding="utf-8", errors="replace") as stream:
                report = allow_list_report(config.policy, stream)
        else:
            report = allow_list_report(config.policy)
    except ConfigError as exc:
        _print_problems(args.config, exc.problems)
        return 1
    except OSError as exc:
        print(f"cannot read the replay file {args.replay}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"{args.config}: OK ({len(config.outputs)} outputs, {len(config.routes)} routes)")
    for line in report:
        print(f"  - {line}")
    for warning in config_warnings(config):
        print(f"  - warning: {warning}")
    return 0


def _rules_check(args: argparse.Namespace) -> int:
    try:
        candidate = read_rules_dir(args.folder)
    except OSError as exc:
        print(f"{args.folder}: cannot read the folder: {exc.strerror}", file=sys.stderr)
        return 1
    binary = None if args.no_falco else find_falco_binary(args.falco_binary)
    problems = asyncio.run(
        check_rules_set(candidate, args.base, falco_binary=binary, falco_config=args.falco_config, folder=args.folder)
    )
    for problem in problems:
        print(problem)
    if not candidate.files:
        print(
            f"{args.folder}: warning: no .yaml or .yml rules files; deploying this folder removes every custom rule",
            file=sys.stderr,
        )
    errors = sum(1 for p in problems if p.severity == "error")
    checked = f"{len(candidate.files)} file(s)" + (", falco -V" if binary is not None else ", without falco -V")
    if errors:
        print(f"{args.folder}: {errors} error(s), {len(problems) - errors} warning(s) in {checked}", file=sys.stderr)
        return 1
    print(f"{args.folder}: OK ({checked}, {len(problems)} warning(s))", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(config.log.level, config.log.format)
    # Imported by the commands that run the pipeline only, so that `check` starts fast.
    from router.run import run_daemon  # noqa: PLC0415

    return _run_loop(lambda: run_daemon(config, args.config))


def _replay(args: argparse.Namespace) -> int:
    # A dry run delivers nothing, so it runs where the output secrets are not mounted.
    config = _load(args.config, secrets=not args.dry_run)
    if config is None:
        return 1
    configure_logging(config.log.level, config.log.format)
    if args.dry_run:
        return _dry_run(config, args.file)
    from router.replay import replay_file  # noqa: PLC0415 - as for run_daemon above

    summary = _run_loop(lambda: replay_file(config, args.file))
    print(summary.describe(), file=sys.stderr)
    return 0 if summary.ok else 1


def _spool_path(args: argparse.Namespace) -> Path | None:
    config = _load(args.config, secrets=False)
    if config is None:
        return None
    if config.spool is None:
        print(f"{args.config}: no spool is configured (add spool: {{path: ...}})", file=sys.stderr)
        return None
    return config.spool.path


def _spool_list_dead(args: argparse.Namespace) -> int:
    path = _spool_path(args)
    if path is None:
        return 1
    try:
        letters = list_dead_letters(path, args.output, args.limit)
    except SpoolError as exc:
        print(exc, file=sys.stderr)
        return 1
    for letter in letters:
        dead_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.dead_ns / 1e9))
        print(f"{dead_at} {letter.output} {letter.alert_id} {letter.reason} attempts={letter.attempts} {letter.error}")
        if args.body:
            print(f"  {letter.body.decode('utf-8', errors='replace')}")
    print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    return 0


def _spool_requeue_dead(args: argparse.Namespace) -> int:
    path = _spool_path(args)
    if path is None:
        return 1
    try:
        moved = requeue_dead_letters(path, args.output)
    except SpoolError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{moved} dead letter(s) of {args.output} queued for delivery at the next start")
    return 0


def _dry_run(config: RouterConfig, path: Path) -> int:
    try:
        dry_run = DryRun(config, sys.stdout)
    except ConfigError as exc:
        print(f"policy: {len(exc.problems)} problem(s) found:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    if str(path) == "-":
        summary = dry_run.run(sys.stdin)
    else:
        with path.open(encoding="utf-8", errors="replace") as stream:
            summary = dry_run.run(stream)
    print(summary.describe(), file=sys.stderr)
    return 0 if not summary.rejected else 1


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory when ``FALCO_ROUTER_EVENT_LOOP`` selects it, else None (asyncio's loop).

    NOTE: uvloop is opt-in because ``python -m bench http_event_loop`` measured no gain from it on a
    shared 2-CPU machine; re-run it on a quiet machine before making ``auto`` the default.
    """
    choice = os.environ.get(EVENT_LOOP_ENV, "asyncio")
    if choice not in ("asyncio", "uvloop", "auto"):
        raise SystemExit(f"{EVENT_LOOP_ENV}={choice!r} is invalid: expected asyncio, uvloop or auto")
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional dependency, imported only when it is used
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed: pip install uvloop") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # The loop is chosen before the coroutine exists, so an invalid choice leaves none un-awaited.
    loop_factory = _loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


if __name__ == "__main__":
    sys.exit(main())
