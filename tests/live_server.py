"""A real uvicorn server on a free loopback port, in a thread, for tests that need real TCP."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from flexguard.service.app import create_app
from flexguard.service.settings import Settings

TIMEOUT_S = 30.0
READY_POLL_S = 0.02


def free_port() -> int:
    """A loopback port nobody listens on now, for a server started as a separate process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[tuple[str, object]]:
    """Yield (base URL, app) once ``/readyz`` answers 200; stop the server and check it stopped."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=settings.keep_alive_s)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(READY_POLL_S)
    try:
        yield base, app
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_S)
        listener.close()
    assert not thread.is_alive(), "server did not shut down (a wedged worker?)"
