"""Where results go: a remote AE (title, host, port) under a name the configuration uses."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicomnode.errors import ValidationError

_DESTINATION = re.compile(r"(?P<aet>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>[0-9]+)")


def validate_ae_title(value: str, field: str = "ae_title") -> str:
    """An AE title: 1-16 characters of the default repertoire, no backslash or control characters."""
    title = value.strip()
    if not 0 < len(title) <= 16:
        raise ValidationError(f"{field} must be 1-16 characters, got {value!r}")
    if "\\" in title or any(ord(c) < 0x20 or ord(c) > 0x7E for c in title):
        raise ValidationError(f"{field} may not contain backslash or control/non-ASCII characters, got {value!r}")
    return title


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP the node sends to."""

    name: str
    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        validate_ae_title(self.ae_title, "Destination.ae_title")
        if not self.name:
            raise ValidationError("Destination.name must not be empty")
        if not self.host:
            raise ValidationError("Destination.host must not be empty")
        if not 0 < self.port <= 65535:
            raise ValidationError(f"Destination.port must be 1-65535, got {self.port}")

    @classmethod
    def parse(cls, text: str, name: str | None = None) -> Destination:
        """Parse ``AET@HOST:PORT`` (IPv6 as ``AET@[::1]:104``); the name defaults to the AE title."""
        match = _DESTINATION.fullmatch(text.strip())
        if match is None:
            raise ValidationError(f"destination must look like AET@HOST:PORT (e.g. PACS@10.0.0.5:104), got {text!r}")
        aet = validate_ae_title(match["aet"], "destination AE title")
        host = match["host"].strip("[]")
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise ValidationError(f"destination {text!r}: expected a port 1-65535, got {port}")
        return cls(name=name or aet, ae_title=aet, host=host, port=port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"
