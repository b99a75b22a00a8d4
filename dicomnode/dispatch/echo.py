"""C-ECHO: is a destination there, and does it accept our AE title? Answered in words for people."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomnode.addresses import Destination


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    detail: str  # "ok (12 ms)", or why not


def echo(destination: Destination, calling_ae: str, *, timeout: float = 3.0) -> EchoResult:
    """One C-ECHO to ``destination``; never raises for network or peer failures."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    started = time.monotonic()
    try:
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    except Exception as exc:  # e.g. an unresolvable host name
        return EchoResult(False, f"failed: {type(exc).__name__}: {exc}")
    if assoc.is_rejected:
        return EchoResult(False, f"association rejected (is our AE title {calling_ae} registered there?)")
    if not assoc.is_established:
        return EchoResult(False, "no association (connection refused or timed out)")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = status.get("Status") if status else None
    if code is None:
        return EchoResult(False, "no answer to C-ECHO")
    if int(code) != 0:
        return EchoResult(False, f"C-ECHO status 0x{int(code):04X}")
    return EchoResult(True, f"ok ({(time.monotonic() - started) * 1000:.0f} ms)")
