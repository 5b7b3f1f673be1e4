"""The development central server: the federation's signed global configuration, served as X-Road does.

``vdxp-gateway central serve -c federation.yaml`` reads a YAML description of the
federation (members and subsystems, security servers with their addresses,
authentication certificates and clients, approved CAs with OCSP responders, TSAs,
global groups, intervals), builds ``shared-params.xml`` and ``private-params.xml``
(version 6), signs the directory with a key on a PKCS#11 token, and serves
``/internalconf`` and ``/externalconf`` (``?version=6``) plus the files under
``/V6/<generation>/`` over HTTP, like an X-Road central server behind its nginx.
It regenerates every ``interval`` (re-reading the YAML, so edits appear at the next
generation) with an expiry of ``expiry`` seconds, and writes the anchor clients import.

In production the axis operator's X-Road central server plays this role.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, ValidationError
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from gateway.config import Duration, format_path
from protocols.errors import UsageError, VdxpError

KEEP_GENERATIONS = 5
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"
RSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
ECDSA_SHA512_URI = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Pin(_M):
    file: str | None = None
    env: str | None = None
    credential: str | None = None


class _Token(_M):
    module: str | None = None
    label: str
    pin: _Pin
    key: str  # key label or CKA_ID (hex) of the signing key


class _Subsystem(_M):
    code: str
    name: str | None = None


class _Member(_M):
    member_class: str
    code: str
    name: str
    subsystems: list[str | _Subsystem] = []


class _Server(_M):
    owner: str  # INSTANCE/CLASS/CODE
    code: str
    address: str
    auth_certs: list[str] = []  # PEM files: their SHA-256 hashes are published
    clients: list[str] = []  # INSTANCE/CLASS/CODE[/SUBSYSTEM]
    maintenance: str | None = None


class _Ocsp(_M):
    url: str
    cert: str | None = None


class _Intermediate(_M):
    cert: str
    ocsp: list[_Ocsp] = []


class _Ca(_M):
    name: str
    top_ca: str
    ocsp: list[_Ocsp] = []
    intermediates: list[_Intermediate] = []
    authentication_only: bool = False
    certificate_profile: str = "ee.ria.xroad.common.certificateprofile.impl.BasicCertificateProfileInfoProvider"


class _Tsa(_M):
    name: str
    url: str
    cert: str


class _Group(_M):
    code: str
    description: str = ""
    members: list[str] = []


class _Federation(_M):
    instance: str
    listen: str = "tcp:8090:interface=127.0.0.1"
    public_url: str | None = None
    output: str = "central"
    token: _Token
    signing_cert: str
    expiry: Duration = 600.0
    interval: Duration = 60.0
    time_stamping_interval: Duration = 60.0
    ocsp_freshness: Duration = 3600.0
    member_classes: dict[str, str] = {"GOV": "Government agencies"}
    members: list[_Member] = []
    security_servers: list[_Server] = []
    cas: list[_Ca] = []
    tsas: list[_Tsa] = []
    global_groups: list[_Group] = []
    management_provider: str | None = None


@dataclass(frozen=True)
class Federation:
    raw: _Federation
    base: Path

    def path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.base / p

    @property
    def output(self) -> Path:
        return self.path(self.raw.output)


def load_federation(path: Path) -> Federation:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", code="config.not_found") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: YAML syntax error: {exc}", code="config.yaml_syntax") from None
    try:
        raw = _Federation.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{format_path(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise UsageError(f"{path}: {problems}", code="config.invalid") from None
    return Federation(raw=raw, base=path.resolve().parent)


def _cert(fed: Federation, value: str) -> x509.Certificate:
    from gateway.devpki import load_certificate

    return load_certificate(fed.path(value))


def build_parameters(fed: Federation, public_url: str, signing_cert: x509.Certificate) -> tuple[Any, Any]:
    """The federation's shared and private parameters (protocols.gconf.params models)."""
    from urllib.parse import urlsplit

    from protocols.gconf import params as p

    r = fed.raw
    inst = r.instance

    def client(text: str) -> Any:
        return p.ClientId.parse(text)

    members = []
    for m in r.members:
        subs = tuple(p.Subsystem(code=s, name=None) if isinstance(s, str) else p.Subsystem(code=s.code, name=s.name)
                     for s in m.subsystems)
        members.append(p.Member(id=p.ClientId(inst, m.member_class, m.code), name=m.name, subsystems=subs))
    servers = []
    for s in r.security_servers:
        hashes = tuple(hashlib.sha256(_cert(fed, c).public_bytes(serialization.Encoding.DER)).digest()
                       for c in s.auth_certs)
        servers.append(p.SecurityServer(owner=client(s.owner), server_code=s.code, address=s.address,
                                        auth_cert_hashes=hashes,
                                        auth_cert_hash_algorithm="SHA-256",
                                        clients=tuple(client(c) for c in s.clients),
                                        maintenance_message=s.maintenance))

    def ocsp(items: list[_Ocsp]) -> tuple[Any, ...]:
        return tuple(p.OcspInfo(url=o.url, cert=_cert(fed, o.cert) if o.cert else None, cost_type=None)
                     for o in items)

    cas = tuple(p.ApprovedCa(name=c.name, authentication_only=c.authentication_only, top_ca=_cert(fed, c.top_ca),
                             top_ca_ocsp=ocsp(c.ocsp),
                             intermediates=tuple(p.CaInfo(_cert(fed, i.cert), ocsp(i.ocsp)) for i in c.intermediates),
                             certificate_profile_info=c.certificate_profile, default_csr_format=None)
                for c in r.cas)
    tsas = tuple(p.ApprovedTsa(name=t.name, url=t.url, cert=_cert(fed, t.cert), cost_type=None) for t in r.tsas)
    groups = tuple(p.GlobalGroup(code=g.code, description=g.description, members=tuple(client(x) for x in g.members))
                   for g in r.global_groups)
    source = p.ConfigurationSource(address=urlsplit(public_url).hostname or "localhost",
                                   internal_verification_certs=(signing_cert,),
                                   external_verification_certs=(signing_cert,))
    shared = p.SharedParameters(
        version=6, instance=inst, sources=(source,), cas=cas, tsas=tsas, members=tuple(members), servers=tuple(servers),
        global_groups=groups, member_classes=tuple(sorted(r.member_classes.items())),
        ocsp_freshness_seconds=int(r.ocsp_freshness))
    if r.management_provider:
        provider = client(r.management_provider)
    elif r.members:
        provider = p.ClientId(inst, r.members[0].member_class, r.members[0].code, "management")
    else:
        raise UsageError("the federation needs at least one member (or management_provider)", code="config.invalid")
    management = p.ManagementService(auth_cert_reg_address=f"{public_url}/managementservice/",
                                     auth_cert_reg_cert=signing_cert, provider=provider)
    private = p.PrivateParameters(version=6, instance=inst, anchors=(), management=management,
                                  time_stamping_interval_seconds=int(r.time_stamping_interval))
    return shared, private


def generation_name(when: datetime) -> str:
    """X-Road's directory naming: UTC date and time with nanoseconds, e.g. 20251110170000548026000."""
    return when.strftime("%Y%m%d%H%M%S") + f"{when.microsecond * 1000:09d}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Central:
    """Generates, signs and keeps the directories; :class:`CentralResource` serves them."""

    log = Logger()

    def __init__(self, reactor: Any, config_path: Path) -> None:
        self._reactor = reactor
        self.config_path = config_path
        self.fed = load_federation(config_path)
        self._signer: Any = None
        self.generations = 0
        self.bound_url: str | None = None  # where `central serve` listens, if public_url is not set

    def _open_signer(self) -> Any:
        from hsm.config import PinSource, TokenSpec
        from hsm.signer import TokenDigestSigner, resolve_mechanism
        from hsm.token import Token

        t = self.fed.raw.token
        pin = PinSource(file=self.fed.path(t.pin.file) if t.pin.file else None, env=t.pin.env,
                        credential=t.pin.credential)
        token = Token(TokenSpec(id="central", label=t.label, module=t.module, pin=pin))
        info = None
        for k in token.list_keys():
            if t.key in (k.label, k.key_id):
                info = k
        if info is None:
            raise VdxpError(f"no key {t.key!r} on token {t.label!r}", code="hsm.key_not_found")
        cert = _cert(self.fed, self.fed.raw.signing_cert)
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        if spki != info.public_key_der:
            raise VdxpError(f"{self.fed.raw.signing_cert} does not certify key {t.key!r}",
                            code="central.cert_mismatch")
        return TokenDigestSigner(self._reactor, token, info.key_id, info.key_type,
                                 resolve_mechanism("auto", info.key_type)), cert

    def public_url(self) -> str:
        if self.fed.raw.public_url:
            return self.fed.raw.public_url.rstrip("/")
        if self.bound_url:
            return self.bound_url
        raise UsageError("public_url is not set and cannot be derived", code="config.invalid")

    def write_anchor(self, cert: x509.Certificate) -> Path:
        from protocols.gconf.anchor import AnchorSource, build_anchor

        data = build_anchor(self.fed.raw.instance,
                            [AnchorSource(download_url=f"{self.public_url()}/internalconf",
                                          verification_certs=(cert,))],
                            datetime.fromtimestamp(self._reactor.seconds(), UTC))
        path = self.fed.output / "anchor.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
        return path

    async def generate(self) -> str:
        """One new generation: re-read the YAML, build, sign, publish.  Returns its name."""
        from protocols.gconf.directory import build_directory
        from protocols.gconf.params import build_private_params, build_shared_params

        try:
            self.fed = load_federation(self.config_path)
        except VdxpError as exc:
            self.log.error("Keeping the previous federation description: {error}", error=str(exc), code=exc.code)
        if self._signer is None:
            self._signer = self._open_signer()
        signer, cert = self._signer
        now = datetime.fromtimestamp(self._reactor.seconds(), UTC)
        name = generation_name(now)
        shared, private = build_parameters(self.fed, self.public_url(), cert)
        shared_xml = build_shared_params(shared)
        private_xml = build_private_params(private)
        inst = self.fed.raw.instance
        out = self.fed.output / "V6"
        gen_dir = out / name
        gen_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(gen_dir / "shared-params.xml", shared_xml)
        _write_atomic(gen_dir / "private-params.xml", private_xml)
        expire = now + timedelta(seconds=self.fed.raw.expiry)
        algorithm = ECDSA_SHA512_URI if signer.key_type == "ec" else RSA_SHA512_URI
        for kind, files in (
            ("internalconf", [("PRIVATE-PARAMETERS", inst, f"/V6/{name}/private-params.xml", private_xml),
                              ("SHARED-PARAMETERS", inst, f"/V6/{name}/shared-params.xml", shared_xml)]),
            ("externalconf", [("SHARED-PARAMETERS", inst, f"/V6/{name}/shared-params.xml", shared_xml)]),
        ):
            prepared = build_directory(expire_date=expire, version=6, files=files)
            digest = hashlib.sha512(prepared.data_to_sign).digest()
            signature = await signer.sign_digest(digest, "sha512")
            body, content_type = prepared.finish(signature_algorithm=algorithm, signature=signature,
                                                 verification_cert=cert)
            _write_atomic(out / f"{kind}.content-type", content_type.encode())
            _write_atomic(out / kind, body)
        self._prune(out, keep=name)
        self.generations += 1
        self.log.info("Generated global configuration {name} of {instance}: {members} members, {servers} security "
                      "servers, expires {expires}", name=name, instance=inst, members=len(shared.members),
                      servers=len(shared.servers), expires=expire.isoformat())
        return name

    def _prune(self, out: Path, keep: str) -> None:
        gens = sorted(p for p in out.iterdir() if p.is_dir() and p.name.isdigit())
        for old in gens[:-KEEP_GENERATIONS]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)


class CentralResource(Resource):
    """``GET /internalconf?version=6``, ``/externalconf?version=6`` and ``/V6/<generation>/<file>``."""

    isLeaf = True

    def __init__(self, output: Path) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.output = output

    def render_GET(self, request: Request) -> bytes:
        path = (request.path or b"/").decode("ascii", "replace")
        version = (request.args or {}).get(b"version", [b"2"])[0].decode("ascii", "replace")
        parts = [p for p in path.split("/") if p]
        if len(parts) == 1 and parts[0] in ("internalconf", "externalconf"):
            if version != "6":
                return self._not_found(request, f"configuration version {version} is not served")
            body = self._read(self.output / "V6" / parts[0])
            ctype = self._read(self.output / "V6" / f"{parts[0]}.content-type")
            if body is None or ctype is None:
                return self._not_found(request, "no configuration generated yet")
            request.setHeader(b"content-type", ctype)  # type: ignore[no-untyped-call]
            return body
        if len(parts) == 3 and parts[0] == "V6" and parts[1].isdigit() and parts[2] in (
                "shared-params.xml", "private-params.xml"):
            body = self._read(self.output / "V6" / parts[1] / parts[2])
            if body is None:
                return self._not_found(request, "no such file")
            request.setHeader(b"content-type", b"application/octet-stream")  # type: ignore[no-untyped-call]
            return body
        return self._not_found(request, "not found")

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    @staticmethod
    def _not_found(request: Request, text: str) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
        return text.encode() + b"\n"

