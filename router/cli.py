"""The ``falco-router`` command: run, check, replay."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from router import __version__
from router.config import ConfigError, RouterConfig, load_config, resolve_secrets
from router.logs import configure_logging

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
    parser = argparse.ArgumentParser(prog="falco-router", description="Route Falco alerts to Kafka, Slack and webhooks.")
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
    check.set_defaults(handler=_check)

    replay = commands.add_parser("replay", help="send the alerts of a JSON-lines file through the pipeline")
    replay.add_argument("file", type=Path, help="JSON-lines file of Falco alerts ('-' for standard input)")
    replay.add_argument("--config", type=Path, help="YAML config file (default: the embedded default config)")
    replay.set_defaults(handler=_replay)
    return parser


def _load(path: Path | None, *, secrets: bool = True) -> RouterConfig | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        _print_problems(path, exc.problems)
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
    print(f"{args.config}: OK ({len(config.outputs)} outputs, {len(config.routes)} routes)")
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(config.log.level, config.log.format)
    from router.run import run_daemon

    return _run_loop(lambda: run_daemon(config))


def _replay(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(config.log.level, config.log.format)
    from router.replay import replay_file

    summary = _run_loop(lambda: replay_file(config, args.file))
    print(summary.describe(), file=sys.stderr)
    return 0 if summary.ok else 1


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
    return uvloop.new_event_loop


def _run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # The loop is chosen before the coroutine exists, so an invalid choice leaves none un-awaited.
    loop_factory = _loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


if __name__ == "__main__":
    sys.exit(main())
