"""C-ECHO to a destination: is it there and does it accept us (the answer in words, never raises)."""

from __future__ import annotations

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomnode.addresses import Destination


def echo(destination: Destination, calling_ae: str, timeout: float = 5.0) -> str:
    """ "ok", or why not: "association rejected or refused", or "status 0x...."."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return "no association (refused, rejected or unreachable)"
    try:
        answer = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(answer, "Status", None)
    if code is None:
        return "no answer to C-ECHO"
    return "ok" if int(code) == 0 else f"status 0x{int(code):04X}"
