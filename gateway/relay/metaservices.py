# test-case-name: tests.test_metaservices
"""X-Road metaservices on this gateway: ``listClients`` on the client port, and the provider
side's ``listMethods``/``allowedMethods`` for SOAP and REST (documents: :mod:`protocols.xroad.meta`).

* :class:`ListClientsResource` answers ``GET /listClients[?xRoadInstance=XX]`` from the installed
  global configuration (own instance by default; a federated one while its shared parameters
  are not expired, as X-Road's ``findShared``).  Failures are SOAP faults with HTTP 200 and
  ``SOAPAction: ""`` (X-Road's ``HandlerBase.sendErrorResponse``): no valid configuration is
  ``Server.ClientProxy.OutdatedGlobalConf``, an unknown instance
  ``Server.ClientProxy.InternalError``.
* :func:`soap_metaservice_response` and :func:`rest_metaservice_body` build the provider side's
  answer to a request whose service code :func:`is_metaservice` says is reserved; for the
  reserved codes not served here they raise ``Server.ServerProxy.UnknownService``, as X-Road
  does when the add-on is missing.  X-Road checks no access rights for these services (the
  handler's ``shouldVerifyAccess`` is false) but verifies the request's signature and that the
  provider is a client of this server as for any request.

``listMethods`` lists every service of the provider of the request's kind (SOAP: type ``soap``
with its version; REST: type ``rest`` with its endpoints), disabled ones included, as X-Road's
server configuration queries do.  ``allowedMethods`` lists the ones
:func:`gateway.relay.access.allowed_services` grants the caller (which leaves out disabled
services; X-Road lists them); for REST the endpoint list is narrowed to the endpoints the
caller's rules cover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from gateway.config import ClientConfig, ServiceConfig
from gateway.relay.access import GroupCheck, allowed_services, check_access
from protocols.errors import VdxpError
from protocols.gconf.params import SharedParameters
from protocols.xroad import meta
from protocols.xroad.faults import (
    SERVER_CLIENTPROXY,
    SOAP_FAULT_CONTENT_TYPE,
    SOAP_FAULT_HTTP_STATUS,
    Dialect,
    XRoadFault,
)
from protocols.xroad.ids import ClientId, ServiceId
from protocols.xroad.meta import is_metaservice
from protocols.xroad.soap import SoapMessage

__all__ = [
    "ListClientsResource",
    "allowed_rest_services",
    "allowed_soap_services",
    "is_list_clients_request",
    "is_metaservice",
    "list_clients_answer",
    "rest_metaservice_body",
    "rest_services",
    "soap_metaservice_response",
    "soap_services",
]


class InstalledConfLike(Protocol):
    """What :class:`gateway.globalconf.disk.InstalledConf` offers and ``listClients`` needs."""

    @property
    def own_instance(self) -> str: ...

    def find_shared(self, instance: str, now: datetime) -> SharedParameters | None: ...


# --------------------------------------------------------------------------- listClients


def is_list_clients_request(method: bytes | str, path: bytes | str) -> bool:
    """Whether a client-port request is X-Road's ``listClients`` (``GET /listClients``, exact path,
    query aside).  Other methods on that path (HEAD included) go to the ordinary SOAP handling, as
    in X-Road, whose metadata handler takes GET only."""
    m = method.decode("ascii", "replace") if isinstance(method, bytes) else method
    p = path.decode("latin-1") if isinstance(path, bytes) else path
    return m.upper() == "GET" and p.split("?", 1)[0] == meta.LIST_CLIENTS_PATH


def list_clients_answer(conf: InstalledConfLike, instance: str | None, accept: Iterable[str],
                        now: datetime) -> tuple[str, bytes]:
    """``(content type, body)`` of ``listClients`` for ``instance`` (blank: the own instance), or
    ``Server.ClientProxy.InternalError`` when there are no shared parameters of it."""
    target = instance if instance is not None and instance.strip() else conf.own_instance
    shared = conf.find_shared(target, now)
    if shared is None:
        raise meta.unknown_instance_fault(target)
    return meta.client_list_body(meta.clients_of(shared), accept)


class ListClientsResource(Resource):
    """``GET /listClients`` on the client port (8080/8443).

    ``conf`` returns the installed global configuration or raises a
    :class:`~protocols.errors.VdxpError` when there is none valid (``ConfClient.check_valid``);
    ``now`` gives the time federated instances' expiry is judged at.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, conf: Callable[[], InstalledConfLike], now: Callable[[], datetime], *,
                 dialect: Dialect = Dialect.CAMEL) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._conf = conf
        self._now = now
        self.dialect = dialect

    def render_GET(self, request: Request) -> bytes:
        try:
            content_type, body = self._answer(request)
        except XRoadFault as fault:
            return self._fault(request, fault)
        except VdxpError as exc:  # no valid configuration
            return self._fault(request, XRoadFault("OutdatedGlobalConf", exc.message, prefix=SERVER_CLIENTPROXY))
        except Exception as exc:  # X-Road: anything else is Server.ClientProxy.InternalError
            internal = XRoadFault("InternalError", str(exc), prefix=SERVER_CLIENTPROXY)
            self.log.failure("listClients: unexpected error ({detail})", detail=internal.detail)
            return self._fault(request, internal)
        request.setResponseCode(200)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        return body

    def _answer(self, request: Request) -> tuple[str, bytes]:
        conf = self._conf()
        values = (request.args or {}).get(meta.LIST_CLIENTS_INSTANCE_PARAM.encode("ascii"), [])
        instance = values[0].decode("utf-8", "replace") if values else None
        accept = [v.decode("latin-1") for v in request.requestHeaders.getRawHeaders(b"accept", [])]
        return list_clients_answer(conf, instance, accept, self._now())

    def _fault(self, request: Request, fault: XRoadFault) -> bytes:
        self.log.warn("listClients fault {faultcode} ({detail}): {faultstring}",
                      faultcode=fault.faultcode(self.dialect), detail=fault.detail, faultstring=fault.faultstring)
        body = fault.to_soap(self.dialect)
        request.setResponseCode(SOAP_FAULT_HTTP_STATUS)
        request.setHeader(b"content-type", SOAP_FAULT_CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"soapaction", b"")
        request.setHeader(b"content-length", str(len(body)).encode("ascii"))
        return body


# --------------------------------------------------------------------------- service lists


def _soap(services: Iterable[ServiceConfig]) -> list[ServiceConfig]:
    return [s for s in services if s.type == "soap" and not is_metaservice(s.code)]


def _rest(services: Iterable[ServiceConfig]) -> list[ServiceConfig]:
    return [s for s in services if s.type == "rest" and not is_metaservice(s.code)]


def soap_services(local: ClientConfig, provider: ClientId) -> list[ServiceId]:
    """``listMethods`` (SOAP): every SOAP service of ``local`` with its version."""
    return [ServiceId.of(provider, s.code, s.version) for s in _soap(local.services)]


def allowed_soap_services(local: ClientConfig, provider: ClientId, caller: str,
                          in_group: GroupCheck) -> list[ServiceId]:
    """``allowedMethods`` (SOAP): the SOAP services ``caller`` may call."""
    return [ServiceId.of(provider, s.code, s.version) for s in _soap(allowed_services(local, caller, in_group))]


def _endpoints(service: ServiceConfig) -> tuple[tuple[str, str], ...]:
    return tuple((e.method, e.path) for e in service.endpoints)


def rest_services(local: ClientConfig, provider: ClientId) -> list[meta.RestServiceDetails]:
    """``listMethods`` (REST): every REST service of ``local`` with all its endpoints."""
    return [meta.RestServiceDetails(provider, s.code, "REST", _endpoints(s)) for s in _rest(local.services)]


def _endpoint_allowed(local: ClientConfig, service: ServiceConfig, caller: str, in_group: GroupCheck,
                      method: str, path: str) -> bool:
    # X-Road: some ACL endpoint of the caller matches the service endpoint (method, path glob).
    try:
        check_access(local, service.code, caller, in_group, rest=True, method=method,
                     path=path if path.startswith("/") else "/" + path)
    except XRoadFault:
        return False
    return True


def allowed_rest_services(local: ClientConfig, provider: ClientId, caller: str,
                          in_group: GroupCheck) -> list[meta.RestServiceDetails]:
    """``allowedMethods`` (REST): the REST services ``caller`` may call, each with the endpoints
    its rules cover (``ServerConfImpl.getAllowedRestServices``)."""
    out = []
    for s in _rest(allowed_services(local, caller, in_group)):
        endpoints = tuple((m, p) for m, p in _endpoints(s)
                          if _endpoint_allowed(local, s, caller, in_group, m, p))
        out.append(meta.RestServiceDetails(provider, s.code, "REST", endpoints))
    return out


# --------------------------------------------------------------------------- provider-side answers


def soap_metaservice_response(local: ClientConfig, request: SoapMessage, in_group: GroupCheck) -> bytes:
    """The SOAP answer (``text/xml; charset=UTF-8``, header echoed, ``requestHash`` set) to a
    request for a reserved service code of ``local``; raises ``Server.ServerProxy.UnknownService``
    for a metaservice not served here."""
    service = request.service
    provider = service.provider
    if service.service_code == meta.LIST_METHODS:
        listed = soap_services(local, provider)
    elif service.service_code == meta.ALLOWED_METHODS:
        listed = allowed_soap_services(local, provider, str(request.client), in_group)
    else:
        raise meta.unavailable_metaservice_fault(service)
    return meta.build_method_list_response(request, listed)


def rest_metaservice_body(local: ClientConfig, service: ServiceId, caller: str, verb: str,
                          in_group: GroupCheck) -> tuple[str, bytes]:
    """``(content type, body)`` of the REST answer (status 200 "OK") to ``verb`` on a reserved
    service code of ``local``.  Only ``GET`` of ``listMethods``/``allowedMethods`` is served;
    anything else is ``Server.ServerProxy.UnknownService`` (X-Road's REST metadata handler takes
    GET only and the request then finds no such service)."""
    if verb.upper() != "GET" or service.service_code not in meta.METHOD_LIST_CODES:
        raise meta.unavailable_metaservice_fault(service)
    provider = service.provider
    if service.service_code == meta.LIST_METHODS:
        listed = rest_services(local, provider)
    else:
        listed = allowed_rest_services(local, provider, caller, in_group)
    return meta.REST_CONTENT_TYPE, meta.build_rest_method_list(listed)
