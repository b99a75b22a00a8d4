"""The receiving side: a Storage SCP that spools what it receives and records it through a sink."""

from dicomnode.scp.handlers import InstanceSink, ReceivedInstance
from dicomnode.scp.server import ScpSettings, StorageSCP, TlsListener

__all__ = ["InstanceSink", "ReceivedInstance", "ScpSettings", "StorageSCP", "TlsListener"]
