"""The HTTP app served by uvicorn in a background thread of the node (one process, no extra service)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from dicomnode.errors import ConfigError

log = logging.getLogger(__name__)


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host = host
        # Bound here so that a port in use is a clear start-up error and port 0 has a number at once.
        try:
            self.socket = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise ConfigError(f"http: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        self.port = int(self.socket.getsockname()[1])
        # log_config None: our logging configuration (text or JSON) applies to uvicorn's records too.
        config = uvicorn.Config(app, log_config=None, access_log=True, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        log.info("http_started host=%s port=%d", self.host, self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
