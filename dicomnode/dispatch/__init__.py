"""The sending side: C-STORE SCU with status classification and retry backoff."""

from dicomnode.dispatch.policy import Outcome, backoff_delay, classify_status
from dicomnode.dispatch.scu import SendOutcome, StoreSCU

__all__ = ["Outcome", "SendOutcome", "StoreSCU", "backoff_delay", "classify_status"]
