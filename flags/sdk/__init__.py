"""The Python SDK: a client that polls the controller's snapshot and evaluates flags
in-process with the core's code (``client``), its HTTP port (``transport``), the counts
and impressions it reports (``reporting``) and an OpenFeature provider (``openfeature``,
with the optional extra: import ``flags.sdk.openfeature`` for it).

The SDK is the one part of ``flags`` that does network, file and thread work; the
evaluation core beside it imports none of that (an import-linter contract keeps it so).

    from flags.sdk import FlagClient
"""

from flags.sdk.client import ClientEvent, ClientStatus, FlagClient, Source
from flags.sdk.transport import HttpTransport, Reply, Transport, TransportError

__all__ = [
    "ClientEvent",
    "ClientStatus",
    "FlagClient",
    "HttpTransport",
    "Reply",
    "Source",
    "Transport",
    "TransportError",
]
