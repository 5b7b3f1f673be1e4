"""X-Road message protocol: identifiers, faults, SOAP 4.0 messages and MIME streaming.

Pure code (no Twisted, no sockets, no files): the relay's client and server sides build on it.

* :mod:`protocols.xroad.ids` — identifiers (client, service, security server, groups) in their
  string, encoded, XML and REST forms.
* :mod:`protocols.xroad.faults` — the fault catalogue in both dialects (7.7 CamelCase, 7.8
  snake_case), :class:`~protocols.xroad.faults.XRoadFault`, SOAP and REST error bodies.
* :mod:`protocols.xroad.soap` — X-Road Message Protocol 4.0: header parsing and validation as
  the Java client proxy does it, request/response consistency, ``requestHash``, response and
  fault envelopes, and a streaming decoder for ``text/xml``, SwA and MTOM requests.
* :mod:`protocols.xroad.mime` — an incremental multipart parser with bounded memory.
"""
