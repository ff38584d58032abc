"""Run the router daemon as ``python -m router run`` does, for the process-level spool tests.

When ``router.outputs.webhook`` is not in this checkout, ``webhook`` outputs are served by the test
``PostOutput``; once that module is merged the tests start ``python -m router run`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from router.app import RouterApp, StartupError
from router.config import load_config
from router.logs import configure_logging, get_logger
from router.outputs.base import Output
from tests.support.webhook import PostOutput


async def _serve(config_path: Path) -> int:
    config = load_config(config_path)
    configure_logging(config.log.level, config.log.format)
    overrides: dict[str, Output] = {
        name: PostOutput(name, cfg) for name, cfg in config.outputs.items() if cfg.type == "webhook"
    }
    app = RouterApp(config, overrides=overrides)
    try:
        await app.start()
    except StartupError as exc:
        get_logger("app").error("router_start_failed", error=str(exc))
        await app.shutdown(grace_s=0)
        return 1
    app.install_signal_handlers()
    return await app.run_until_stopped(config.shutdown.grace_s)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    return asyncio.run(_serve(args.config))


if __name__ == "__main__":
    sys.exit(main())
