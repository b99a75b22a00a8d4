"""What the HTTP app needs of the node it runs in, handed over by the node (the app never builds a node)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dicomnode.config import Settings
from dicomnode.db.engine import Database
from dicomnode.plugins.registry import Registry
from dicomnode.scp.handlers import InstanceSink
from dicomnode.store import InstanceStore


class NodeProbe(Protocol):
    """The running node's own view of its parts, for /ready."""

    def scp_listening(self) -> bool: ...

    def loops_alive(self) -> dict[str, bool]: ...


@dataclass(frozen=True)
class NodeServices:
    settings: Settings
    db: Database
    registry: Registry
    store: InstanceStore
    sink: InstanceSink
    probe: NodeProbe | None = None  # None: the API serves a database without a node in this process
