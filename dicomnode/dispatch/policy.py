"""How a C-STORE answer is judged (accepted, worth retrying, or not) and how long to wait before retrying.

The classification (PS3.4 B.2.3, PS3.7 Annex C):
- ACCEPTED: Success 0x0000 and every warning (0x0001, 0xB000 coercion, 0xB006 elements discarded, 0xB007 data set
  does not match SOP class, any other 0xBxxx, 0x0107 attribute list, 0x0116 value out of range): the peer kept it.
- RETRYABLE: the peer is short of something that may come back: 0xA7xx out of resources, 0x0110 processing
  failure, 0x0213 resource limitation, 0x0210 duplicate invocation, 0xFE00 cancel.
- PERMANENT: the object or our configuration is wrong and sending it again will fail the same way: 0xA9xx data
  set does not match SOP class, 0xCxxx cannot understand, 0x0122 SOP class not supported, 0x0124 not authorized,
  0x0117 invalid SOP instance, 0x0111 duplicate SOP instance, 0x0211/0x0212, and any status we do not know.
"""

from __future__ import annotations

import enum
import random

from dicomnode import dimse as st
from dicomnode.errors import ValidationError


class Outcome(enum.Enum):
    """What one C-STORE attempt means for the delivery."""

    ACCEPTED = "accepted"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    # The destination's configuration does not fit it (a TLS certificate or trust refused on either side): not
    # the object's fault, so it is not failed, and not the network's, so it is not retried at the network's
    # rate: the destination waits a long cool-down, or until an operator resumes it.
    CONFIGURATION = "configuration"


_ACCEPTED_CODES = frozenset({st.SUCCESS, 0x0001, st.ATTRIBUTE_LIST_ERROR, st.ATTRIBUTE_VALUE_OUT_OF_RANGE})
_RETRYABLE_CODES = frozenset({st.PROCESSING_FAILURE, st.RESOURCE_LIMITATION, st.DUPLICATE_INVOCATION, st.CANCEL})


def classify_status(status: int) -> Outcome:
    """Classify a C-STORE response status (see the module docstring for the table)."""
    if status in _ACCEPTED_CODES or 0xB000 <= status <= 0xBFFF:
        return Outcome.ACCEPTED
    if status in _RETRYABLE_CODES or 0xA700 <= status <= 0xA7FF:
        return Outcome.RETRYABLE
    return Outcome.PERMANENT


_MAX_EXPONENT = 60  # 2**60 seconds is past any cap; keeps the float finite for absurd attempt counts


def backoff_delay(attempt: int, *, base: float = 2.0, cap: float = 300.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = first retry): full jitter in [0, min(cap, base*2^n)].

    Full jitter spreads the retries of many deliveries that failed together (a PACS restart) over the window.
    """
    if attempt < 0:
        raise ValidationError(f"attempt must be >= 0, got {attempt}")
    if base <= 0 or cap <= 0:
        raise ValidationError(f"base and cap must be positive, got base={base} cap={cap}")
    bound = min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))
    return (rng or random).uniform(0.0, bound)
