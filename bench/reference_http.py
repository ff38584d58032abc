"""Reference HTTP server: bare aiohttp that reads the body and responds 200, nothing else.

The HTTP benchmarks compare the router against this server run the same way, so the ratio shows what
the router adds on top of aiohttp itself. ``--uvloop`` runs it on uvloop, like the router with uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    """Read the whole body and respond 200 with an empty body, as the router does on success."""
    await request.read()
    return web.Response(status=200)


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:port until SIGTERM."""
    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/{path:.*}", receive)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(prog="python -m bench.reference_http", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args(argv)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.uvloop:
        import uvloop  # noqa: PLC0415 - optional, in the bench extra

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
