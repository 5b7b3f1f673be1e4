# test-case-name: tests.test_xroad_soap
"""X-Road fault codes in both dialects, the :class:`XRoadFault` error, and its wire forms.

A fault code is a dotted sequence of *terms*: an origin prefix (``Client``,
``Server.ClientProxy``, ``Server.ServerProxy``, ``Signer``, ``Server.ServerProxy.OpMonitor``),
a code (``InvalidSoap``, ``ServiceFailed``) and optional sub-codes
(``Server.ClientProxy.ServiceFailed.InconsistentResponse``, ``MalformedSignature.InvalidHashChainRef``).

X-Road 7.7 and earlier write every term in CamelCase (``ErrorCodes.java`` at tag 7.7.1); 7.8
renamed them all to lower snake_case (``ErrorCodes.java`` and ``ErrorCode.java`` at 7.8: commit
4229e1292e, XRDDEV-2962), and lower-cases any term it does not know (``ErrorCode.prepareCode``).
The catalogue below pairs each 7.7 term with its 7.8 name, taken from those sources constant by
constant (``X_OUTDATED_GLOBALCONF`` = ``OutdatedGlobalConf`` / ``global_conf_outdated``).  Terms
that exist in only one version carry a stand-in for the other: 7.8's ``unknown_host`` is
``NetworkError`` in 7.7 (what 7.7 reports for an unresolvable service host), 7.7's
``TimestampValidation`` is ``timestamp_validation``.

We *emit* the dialect the federation is configured for (:class:`Dialect`) and *parse* both,
case-insensitively (:func:`parse_code`).  Terms we do not know survive unchanged (7.7) or
lower-cased (7.8), as X-Road relays them.

Wire forms, as X-Road writes them:

* SOAP 1.1 fault (``HandlerBase.sendErrorResponse``, ``SoapFault.createFaultXml``): HTTP 200,
  ``text/xml; charset=UTF-8``, ``SOAPAction: ""``, and ``faultcode``, ``faultstring``,
  ``faultactor``, ``detail/faultDetail`` (the UUID also written to the log).
* REST error (``ClientRestMessageHandler.sendErrorResponse``): HTTP 500 for ``Server.*`` codes and
  400 otherwise, header ``X-Road-Error: <code>``, body ``{"type", "message", "detail"}`` in JSON,
  or ``<error><type/><message/><detail/></error>`` when ``Accept`` names ``text/xml``,
  ``application/xml`` or ``text/*``.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lxml import etree

from protocols.errors import VdxpError, XmlError
from protocols.xmlsafe import parse_xml

__all__ = [
    "CLIENT",
    "SERVER_CLIENTPROXY",
    "SERVER_SERVERPROXY",
    "SERVER_SERVERPROXY_OPMONITOR",
    "SIGNER",
    "SOAP_ENV_NS",
    "SOAP_FAULT_CONTENT_TYPE",
    "SOAP_FAULT_HTTP_STATUS",
    "TERMS",
    "Dialect",
    "RestError",
    "Term",
    "XRoadFault",
    "parse_code",
    "parse_rest_error",
    "parse_soap_fault",
    "render_code",
    "rest_error_content_type",
]

SOAP_ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_FAULT_HTTP_STATUS = 200
SOAP_FAULT_CONTENT_TYPE = "text/xml; charset=UTF-8"


class Dialect(enum.Enum):
    """How fault codes are spelled on the wire."""

    CAMEL = "camel"  # X-Road 7.7 and earlier: Server.ClientProxy.OutdatedGlobalConf (the default)
    SNAKE = "snake"  # X-Road 7.8: server.clientproxy.global_conf_outdated

    @classmethod
    def parse(cls, value: str) -> Dialect:
        """``camel``/``7.7`` or ``snake``/``7.8`` (case-insensitive)."""
        v = value.strip().lower()
        if v in ("camel", "camelcase", "7.7", "legacy"):
            return cls.CAMEL
        if v in ("snake", "snake_case", "7.8"):
            return cls.SNAKE
        raise ValueError(f"unknown X-Road fault dialect {value!r} (use camel/7.7 or snake/7.8)")


@dataclass(frozen=True, slots=True)
class Term:
    """One term of a fault code in both dialects.  ``origin`` marks the prefix terms."""

    camel: str
    snake: str
    origin: bool = False


# (camel, snake) pairs from ErrorCodes.java @ 7.7.1 and ErrorCodes/ErrorCode.java @ 7.8.
_PAIRS: tuple[tuple[str, str], ...] = (
    # generic
    ("IOError", "io_error"), ("NetworkError", "network_error"), ("InternalError", "internal_error"),
    ("BadRequest", "bad_request"), ("NotFound", "not_found"), ("HttpError", "http_error"),
    ("DatabaseError", "database_error"), ("InvalidResponse", "invalid_response"),
    ("InvalidRequest", "invalid_request"),
    # verification
    ("CannotCreateSignature", "cannot_create_signature"), ("CertValidation", "cert_validation"),
    ("MissingValidationInfo", "missing_validation_info"), ("IncorrectValidationInfo", "incorrect_validation_info"),
    ("CannotCreateCertPath", "cannot_create_cert_path"), ("CertValidityTime", "cert_validity_time"),
    ("IncorrectCertificate", "incorrect_certificate"), ("UnsupportedAlgorithm", "unsupported_algorithm"),
    ("InvalidSignatureValue", "invalid_signature_value"), ("MalformedSignature", "malformed_signature"),
    ("InvalidXml", "invalid_xml"), ("InvalidReference", "invalid_reference"),
    ("InvalidCertPath", "invalid_cert_path"), ("SignatureVerification", "signature_verification"),
    ("MalformedSoap", "malformed_soap"), ("InvalidHashChain", "invalid_hash_chain"),
    ("MalformedHashChain", "malformed_hash_chain"), ("HashChainUnusedInputs", "hashchain_unused_inputs"),
    ("InvalidHashChainRef", "invalid_hash_chain_ref"),
    # message processing
    ("SslAuthenticationFailed", "ssl_authentication_failed"), ("LoggingFailed", "logging_failed"),
    ("TimestampingFailed", "timestamping_failed"), ("InvalidContentType", "invalid_content_type"),
    ("InvalidSoapAction", "invalid_soap_action"), ("InvalidHttpMethod", "invalid_http_method"),
    ("InvalidMessage", "invalid_message"), ("InvalidSecurityServer", "invalid_security_server"),
    ("MimeParsingFailed", "mime_parsing_failed"), ("MissingHeader", "missing_header"),
    ("MissingHeaderField", "missing_header_field"), ("DuplicateHeaderField", "duplicate_header_field"),
    ("MissingBody", "missing_body"), ("InvalidBody", "invalid_body"),
    ("InconsistentHeaders", "inconsistent_headers"), ("InconsistentResponse", "inconsistent_response"),
    ("MissingSoap", "missing_soap"), ("InvalidSoap", "invalid_soap"), ("MissingRest", "missing_rest"),
    ("InvalidRest", "invalid_rest"), ("AccessDenied", "access_denied"), ("ServiceDisabled", "service_disabled"),
    ("ServiceFailed", "service_failed"), ("MissingSignature", "missing_signature"),
    ("UnknownService", "unknown_service"), ("InvalidProtocolVersion", "invalid_protocol_version"),
    ("InvalidClientIdentifier", "invalid_client_identifier"), ("ServiceType", "service_type"),
    ("ClientProxyVersionNotSupported", "client_proxy_version_not_supported"),
    # ASiC
    ("AsicInvalidContainer", "asic_invalid_container"), ("AsicMimeTypeNotFound", "asic_mime_type_not_found"),
    ("AsicSignatureNotFound", "asic_signature_not_found"), ("AsicMessageNotFound", "asic_message_not_found"),
    ("AsicInvalidMimeType", "asic_invalid_mime_type"),
    ("AsicHashChainResultNotFound", "asic_hash_chain_result_not_found"),
    ("AsicHashChainNotFound", "asic_hash_chain_not_found"), ("AsicTimestampNotFound", "asic_timestamp_not_found"),
    ("AsicManifestNotFound", "asic_manifest_not_found"),
    # configuration
    ("UnknownMember", "unknown_member"), ("MalformedServerConf", "malformed_server_conf"),
    ("MalformedKeyConf", "malformed_key_conf"), ("MalformedGlobalConf", "malformed_global_conf"),
    ("MalformedOptionalPartsConf", "malformed_optional_parts_conf"),
    ("OutdatedGlobalConf", "global_conf_outdated"), ("ServiceMissingUrl", "service_missing_url"),
    ("ServiceMalformedUrl", "service_malformed_url"), ("AdapterWsdlNotFound", "adapter_wsdl_not_found"),
    ("HSMNonOperational", "hsm_non_operational"), ("MaintenanceMode", "maintenance_mode"),
    # signer
    ("KeyNotFound", "key_not_found"), ("KeyNotAvailable", "key_not_available"), ("CertNotFound", "cert_not_found"),
    ("CsrNotFound", "csr_not_found"), ("TokenNotFound", "token_not_found"), ("TokenNotActive", "token_not_active"),
    ("TokenNotInitialized", "token_not_initialized"), ("TokenNotAvailable", "token_not_available"),
    ("TokenReadOnly", "token_readonly"), ("CannotSign", "cannot_sign"),
    ("UnsupportedSignAlgorithm", "unsupported_sign_algorithm"),
    ("FailedToGenerateCertificateRequest", "failed_to_generate_certificate_request"),
    ("FailedToGeneratePrivateKey", "failed_to_generate_private_key"),
    ("FailedToGeneratePublicKey", "failed_to_generate_public_key"), ("FailedToDeleteKey", "failed_to_delete_key"),
    ("CertExists", "cert_exists"), ("CannotGetMemberIdFromCertificate", "cannot_get_member_id_from_certificate"),
    ("WrongCertUsage", "wrong_cert_usage"), ("CannotFindMember", "cannot_find_member"),
    ("LoginFailed", "login_failed"), ("LogoutFailed", "logout_failed"), ("PinIncorrect", "pin_incorrect"),
    ("CertImportFailed", "cert_import_failed"), ("TokenPinPolicyFailure", "token_pin_policy_failure"),
    # message log
    ("TimestamperFailed", "timestamper_failed"),
    # only in 7.7 (no 7.8 constant; spelled as 7.8 would lower-case it)
    ("TimestampValidation", "timestamp_validation"),
)
_ORIGINS: tuple[tuple[str, str], ...] = (
    ("Client", "client"), ("Server", "server"), ("ClientProxy", "clientproxy"), ("ServerProxy", "serverproxy"),
    ("Signer", "signer"), ("OpMonitor", "opmonitor"),
)
#: Terms of 7.8 without a 7.7 constant: (snake name, what 7.7 reports instead).
_SNAKE_ONLY: tuple[tuple[str, str], ...] = (("unknown_host", "NetworkError"),)

TERMS: tuple[Term, ...] = tuple(
    [Term(c, s, origin=True) for c, s in _ORIGINS] + [Term(c, s) for c, s in _PAIRS]
    + [Term(c, s) for s, c in _SNAKE_ONLY])

# lower-case camel or snake spelling -> canonical token (camel, or the snake name of a 7.8-only term)
_LOOKUP: dict[str, str] = {}
_CANON: dict[str, Term] = {}
for _t in TERMS:
    _key = _t.snake if (_t.snake, _t.camel) in _SNAKE_ONLY else _t.camel
    _CANON[_key] = _t
    _LOOKUP.setdefault(_t.snake.lower(), _key)
    if (_t.snake, _t.camel) not in _SNAKE_ONLY:
        _LOOKUP[_t.camel.lower()] = _key
del _t, _key

_ORIGIN_TOKENS = frozenset(c for c, _ in _ORIGINS)

CLIENT: tuple[str, ...] = ("Client",)
SERVER_CLIENTPROXY: tuple[str, ...] = ("Server", "ClientProxy")
SERVER_SERVERPROXY: tuple[str, ...] = ("Server", "ServerProxy")
SERVER_SERVERPROXY_OPMONITOR: tuple[str, ...] = ("Server", "ServerProxy", "OpMonitor")
SIGNER: tuple[str, ...] = ("Signer",)


def parse_code(text: str) -> tuple[str, ...]:
    """Split a fault code of either dialect into canonical tokens (case-insensitive).  Known terms
    become their CamelCase name (``unknown_host`` stays itself); unknown terms are kept as written."""
    text = text.strip()
    if not text:
        return ()
    return tuple(_LOOKUP.get(seg.lower(), seg) for seg in text.split("."))


def _render_token(token: str, dialect: Dialect) -> str:
    term = _CANON.get(token)
    if term is None:
        return token if dialect is Dialect.CAMEL else token.lower()
    return term.camel if dialect is Dialect.CAMEL else term.snake


def render_code(tokens: Iterable[str], dialect: Dialect = Dialect.CAMEL) -> str:
    """Spell canonical tokens in ``dialect``."""
    return ".".join(_render_token(t, dialect) for t in tokens)


_INVALID_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _xml_text(value: str) -> str:
    value = _INVALID_XML_CHARS.sub("\ufffd", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class XRoadFault(VdxpError):
    """An X-Road fault: code tokens (prefix, code, sub-codes), faultstring, faultactor and a
    detail (a fresh UUID unless given, to be logged with the fault).

    ``code`` (our stable dotted code) is ``xroad.`` + the snake_case fault code, e.g.
    ``xroad.client.missing_header``; ``xroad_code`` is the CamelCase fault code.
    """

    code = "xroad.fault"

    def __init__(self, fault_code: str | Sequence[str], faultstring: str = "", *, faultactor: str = "",
                 detail: str | None = None, prefix: Sequence[str] = ()) -> None:
        tokens = parse_code(fault_code) if isinstance(fault_code, str) else tuple(fault_code)
        self.tokens: tuple[str, ...] = _with_prefix(tokens, tuple(prefix))
        self.faultstring = faultstring
        self.faultactor = faultactor
        self.detail = detail if detail is not None else str(uuid.uuid4())
        super().__init__(faultstring or render_code(self.tokens),
                         code="xroad." + render_code(self.tokens, Dialect.SNAKE), xroad_code=render_code(self.tokens))

    def __str__(self) -> str:
        return f"{render_code(self.tokens)}: {self.faultstring}" if self.faultstring else render_code(self.tokens)

    def __repr__(self) -> str:
        return f"XRoadFault({render_code(self.tokens)!r}, {self.faultstring!r}, detail={self.detail!r})"

    # -- structure

    @property
    def prefix(self) -> tuple[str, ...]:
        """The origin terms (``("Server", "ClientProxy")``), possibly empty."""
        n = 0
        while n < len(self.tokens) - 1 and self.tokens[n] in _ORIGIN_TOKENS:
            n += 1
        return self.tokens[:n]

    @property
    def base(self) -> str:
        """The code after the prefix (``ServiceFailed``, ``InvalidSoap``)."""
        rest = self.tokens[len(self.prefix):]
        return rest[0] if rest else ""

    @property
    def subcodes(self) -> tuple[str, ...]:
        """Terms after the code (``("InconsistentResponse",)``)."""
        return self.tokens[len(self.prefix) + 1:]

    def faultcode(self, dialect: Dialect = Dialect.CAMEL) -> str:
        return render_code(self.tokens, dialect)

    def matches(self, code: str) -> bool:
        """Whether this fault's code equals ``code`` given in either dialect (case-insensitive)."""
        return tuple(t.lower() for t in self.tokens) == tuple(t.lower() for t in parse_code(code))

    def with_prefix(self, *prefix: str) -> XRoadFault:
        """The same fault (same detail UUID) with ``prefix`` in front, unless the code already
        starts with it (X-Road's ``CodedException.withPrefix``)."""
        return XRoadFault(_with_prefix(self.tokens, parse_code(".".join(prefix))), self.faultstring,
                          faultactor=self.faultactor, detail=self.detail)

    @property
    def is_client_error(self) -> bool:
        return bool(self.tokens) and self.tokens[0].lower() == "client"

    # -- SOAP

    def to_soap(self, dialect: Dialect = Dialect.CAMEL) -> bytes:
        """The SOAP 1.1 fault envelope X-Road writes (UTF-8, with XML declaration)."""
        return build_soap_fault(self.faultcode(dialect), self.faultstring, self.faultactor, self.detail)

    # -- REST

    @property
    def rest_status(self) -> int:
        """500 for ``Server.*`` codes, 400 for the rest."""
        return 500 if self.tokens and self.tokens[0].lower() == "server" else 400

    def to_rest(self, accept: Iterable[str] = (), dialect: Dialect = Dialect.CAMEL) -> RestError:
        """The REST error response for a request whose ``Accept`` header values are ``accept``."""
        content_type = rest_error_content_type(accept)
        code = self.faultcode(dialect)
        if content_type == "application/json":
            body = json.dumps({"type": code, "message": self.faultstring, "detail": self.detail},
                              ensure_ascii=False).encode("utf-8")
        else:
            body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error><type>" + _xml_text(code) + "</type><message>"
                    + _xml_text(self.faultstring) + "</message><detail>" + _xml_text(self.detail)
                    + "</detail></error>\n").encode("utf-8")
        return RestError(self.rest_status, content_type + "; charset=UTF-8", {"X-Road-Error": code}, body)


def _with_prefix(tokens: tuple[str, ...], prefix: tuple[str, ...]) -> tuple[str, ...]:
    if not prefix:
        return tokens
    low = tuple(t.lower() for t in tokens[:len(prefix)])
    if low == tuple(p.lower() for p in prefix):
        return tokens
    return prefix + tokens


@dataclass(frozen=True, slots=True)
class RestError:
    """An X-Road REST error response."""

    status: int
    content_type: str
    headers: Mapping[str, str]
    body: bytes


_XML_TYPES = ("text/xml", "application/xml", "text/*")


def rest_error_content_type(accept: Iterable[str]) -> str:
    """``text/xml`` or ``application/xml`` when an ``Accept`` value names one of them (``text/*``
    counts as ``text/xml``), else ``application/json`` (X-Road's ``decideErrorResponseContentType``)."""
    for header in accept:
        for item in header.split(","):
            media = item.split(";", 1)[0].strip().lower()
            if media in _XML_TYPES:
                return "text/xml" if media == "text/*" else media
    return "application/json"


def build_soap_fault(faultcode: str, faultstring: str, faultactor: str | None, detail: str | None) -> bytes:
    """A SOAP 1.1 fault envelope in X-Road's layout."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV_NS}"><SOAP-ENV:Body><SOAP-ENV:Fault>',
             f"<faultcode>{_xml_text(faultcode)}</faultcode>",
             f"<faultstring>{_xml_text(faultstring)}</faultstring>"]
    if faultactor is not None:
        parts.append(f"<faultactor>{_xml_text(faultactor)}</faultactor>")
    if detail is not None:
        parts.append(f'<detail><faultDetail xmlns="">{_xml_text(detail)}</faultDetail></detail>')
    parts.append("</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>")
    return "".join(parts).encode("utf-8")


def fault_from_element(fault_el: etree._Element) -> XRoadFault:
    """Read a ``SOAP-ENV:Fault`` element as X-Road does: children matched by local name,
    ``detail`` taken from a ``faultDetail`` child or else the detail's own text."""
    code = string = actor = ""
    detail: str | None = None
    for child in fault_el:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if name == "faultcode":
            code = _text(child)
        elif name == "faultstring":
            string = _text(child)
        elif name == "faultactor":
            actor = _text(child)
        elif name == "detail":
            for sub in child:
                if isinstance(sub.tag, str) and etree.QName(sub).localname == "faultDetail":
                    detail = _text(sub)
            if not detail:
                own = _text(child)
                detail = own if own.strip() else detail
    return XRoadFault(code.strip(), string, faultactor=actor, detail=detail if detail is not None else "")


def _text(el: etree._Element) -> str:
    pieces = [el.text or ""]
    pieces.extend(c.tail or "" for c in el)
    return "".join(pieces)


def parse_soap_fault(data: bytes) -> XRoadFault | None:
    """The fault in a SOAP 1.1 envelope, or ``None`` when the body holds no ``Fault``.  Raises
    :class:`~protocols.errors.XmlError` for malformed or hostile XML."""
    root = parse_xml(data)
    if root.tag != f"{{{SOAP_ENV_NS}}}Envelope":
        raise XmlError("not a SOAP 1.1 envelope", code="xml.malformed")
    for body in root.iterchildren(f"{{{SOAP_ENV_NS}}}Body"):
        for fault_el in body.iterchildren(f"{{{SOAP_ENV_NS}}}Fault"):
            return fault_from_element(fault_el)
    return None


def parse_rest_error(body: bytes, content_type: str) -> XRoadFault:
    """Parse an X-Road REST error body (JSON, or XML for an XML content type)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.endswith("xml"):
        root = parse_xml(body)
        if root.tag != "error":
            raise XmlError("REST error body is not <error>", code="xml.malformed")
        fields = {etree.QName(c).localname: _text(c) for c in root if isinstance(c.tag, str)}
    else:
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise VdxpError(f"REST error body is not JSON: {exc}", code="xroad.rest_error_malformed") from exc
        if not isinstance(obj, dict):
            raise VdxpError("REST error body is not a JSON object", code="xroad.rest_error_malformed")
        fields = {k: v for k, v in obj.items() if isinstance(v, str)}
    if "type" not in fields:
        raise VdxpError("REST error body has no type", code="xroad.rest_error_malformed")
    return XRoadFault(fields["type"], fields.get("message", ""), detail=fields.get("detail", ""))
