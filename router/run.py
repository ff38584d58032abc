"""``falco-router run``: start the daemon and serve until SIGTERM or SIGINT; SIGHUP reloads the config."""

from __future__ import annotations

from pathlib import Path

from router.app import RouterApp, StartupError
from router.config import RouterConfig
from router.gc_tuning import tune_for_throughput
from router.logs import get_logger


async def run_daemon(config: RouterConfig, config_path: Path | None = None) -> int:
    """Run the router until it is stopped; return the exit code. SIGHUP reloads ``config_path``."""
    log = get_logger("app")
    app = RouterApp(config, config_path=config_path)
    try:
        await app.start()
    except StartupError as exc:
        log.error("router_start_failed", error=str(exc))
        await app.shutdown(grace_s=0)
        return 1
    app.install_signal_handlers()
    tune_for_throughput()
    return await app.run_until_stopped(config.shutdown.grace_s)
