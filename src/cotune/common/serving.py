"""Run an ASGI app on uvicorn in a background thread (the aggregator's API, tests)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class BackgroundServer:
    """A uvicorn server running in a daemon thread."""

    server: Any
    thread: threading.Thread
    port: int

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_background(app: Any, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Start ``app`` on ``host:port`` (0: any free port) and wait until it listens.

    Raises ``RuntimeError`` if it does not come up within 10 seconds (a port in use).
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.01)
    return BackgroundServer(server, thread, int(server.servers[0].sockets[0].getsockname()[1]))
