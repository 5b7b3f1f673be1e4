"""What the benchmarks share: the X-Road SOAP ``echo`` envelope they send, and signal handling
(Ctrl-C and SIGTERM interrupt a run; the clean-up that follows is not cut short)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

# The envelope is SOAP_HEAD + x:id + SOAP_MID + the payload text + SOAP_TAIL.
SOAP_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:x="http://x-road.eu/xsd/xroad.xsd"
 xmlns:id="http://x-road.eu/xsd/identifiers"><s:Header>
<x:client id:objectType="SUBSYSTEM"><id:xRoadInstance>VN-TEST</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
<id:memberCode>000.00.00.H41</id:memberCode><id:subsystemCode>edoc</id:subsystemCode></x:client>
<x:service id:objectType="SERVICE"><id:xRoadInstance>VN-TEST</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
<id:memberCode>000.00.00.G22</id:memberCode><id:subsystemCode>example</id:subsystemCode>
<id:serviceCode>echo</id:serviceCode></x:service>
<x:id>"""
SOAP_MID = """</x:id><x:protocolVersion>4.0</x:protocolVersion></s:Header>
<s:Body><m:echo xmlns:m="http://example.org/"><text>"""
SOAP_TAIL = "</text></m:echo></s:Body></s:Envelope>"


def on_term(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: stop the run as Ctrl-C does."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def ignoring_signals() -> Iterator[None]:
    """Cleanup must not be cut short by a second Ctrl-C or a SIGTERM."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
