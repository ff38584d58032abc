"""The ``falco-router`` command: run, check, replay."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from router import __version__
from router.config import ConfigError, RouterConfig, load_config, resolve_secrets
from router.logs import configure_logging
from router.policy.dryrun import DryRun, allow_list_report


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
    check.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="JSON-lines file of Falco alerts; list the allow-list entries that match none of them",
    )
    check.set_defaults(handler=_check)

    replay = commands.add_parser("replay", help="send the alerts of a JSON-lines file through the pipeline")
    replay.add_argument("file", type=Path, help="JSON-lines file of Falco alerts ('-' for standard input)")
    replay.add_argument("--config", type=Path, help="YAML config file (default: the embedded default config)")
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="deliver nothing; print one JSON decision per alert (allow-list, dedup, correlation, routes, outputs)",
    )
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
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(config.log.level, config.log.format)
    from router.run import run_daemon

    return asyncio.run(run_daemon(config))


def _replay(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(config.log.level, config.log.format)
    if args.dry_run:
        return _dry_run(config, args.file)
    from router.replay import replay_file

    summary = asyncio.run(replay_file(config, args.file))
    print(summary.describe(), file=sys.stderr)
    return 0 if summary.ok else 1


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


if __name__ == "__main__":
    sys.exit(main())
