"""Destinations that misbehave, on loopback: one that accepts TCP and never answers (a black hole), a pynetdicom
SCP that answers a script of statuses (slowly, if asked), and one that never answers a C-STORE until released."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event


class BlackHole:
    """A listening socket that accepts every connection and never sends a byte (until closed)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        """Close the listener and every accepted connection (the peers see the connection end)."""
        self._listener.close()
        for conn in self.connections:
            conn.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ScriptedSCP:
    """A Storage SCP that answers each C-STORE with the next status of ``statuses`` (the last one repeats),
    recording each SOP Instance UID with the status it got; a slow one after ``delay_seconds`` each."""

    def __init__(self, statuses: list[int], ae_title: str = "SCRIPTED", delay_seconds: float = 0.0) -> None:
        self.ae_title = ae_title
        self._statuses = list(statuses)
        self._delay = delay_seconds
        self.answered: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = StoragePresentationContexts
        self._server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = int(self._server.server_address[1])

    def _on_store(self, event: Event) -> int:
        time.sleep(self._delay)
        with self._lock:
            status = self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]
            self.answered.append((str(event.request.AffectedSOPInstanceUID), status))
        return status

    def close(self) -> None:
        self._server.shutdown()

    def __enter__(self) -> ScriptedSCP:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class StuckSCP:
    """A Storage SCP whose C-STORE handler blocks until :meth:`release` (then answers Success)."""

    def __init__(self, ae_title: str = "STUCK") -> None:
        self.ae_title = ae_title
        self.entered = threading.Event()
        self._released = threading.Event()
        self.received: list[str] = []
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = StoragePresentationContexts
        self._server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = int(self._server.server_address[1])

    def _on_store(self, event: Event) -> int:
        self.entered.set()
        self._released.wait()
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()

    def __enter__(self) -> StuckSCP:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
