"""Presentation contexts the node accepts: every storage SOP class, every transfer syntax pydicom names.

pynetdicom accepts, for each proposed context, the first transfer syntax in the *acceptor's* list that the
requestor offered. Senders (dcmtk storescu among them) propose a compressed file's own syntax together with the
uncompressed ones in one context; listing the encapsulated syntaxes first means such a file arrives, and is
stored, exactly as the sender holds it instead of the sender being asked to decompress (which it may not be able
to do). Implicit VR comes last: it loses the VRs.
"""

from __future__ import annotations

from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

# SMPTE ST 2110 syntaxes are for real-time streams, not for stored objects.
_NOT_FOR_STORAGE = frozenset({"1.2.840.10008.1.2.7.1", "1.2.840.10008.1.2.7.2", "1.2.840.10008.1.2.7.3"})

_NATIVE_IN_PREFERENCE_ORDER: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
ACCEPTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    tuple(ts for ts in AllTransferSyntaxes if ts not in _NOT_FOR_STORAGE and ts not in _NATIVE_IN_PREFERENCE_ORDER)
    + _NATIVE_IN_PREFERENCE_ORDER
)
UNCOMPRESSED_LITTLE_ENDIAN: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def storage_scp_contexts() -> list[PresentationContext]:
    """Verification plus every storage SOP class pynetdicom knows, each with every accepted transfer syntax."""
    contexts = [build_context(Verification, list(UNCOMPRESSED_LITTLE_ENDIAN))]
    for cx in AllStoragePresentationContexts:
        contexts.append(build_context(str(cx.abstract_syntax), list(ACCEPTED_TRANSFER_SYNTAXES)))
    return contexts
