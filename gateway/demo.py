"""``vdxp-gateway demo``: the foundation, shown end to end on this machine.

A SoftHSM2 token is created, keys generated on it, certificates requested from a
development CA and imported, a development OCSP responder and TSA started on
127.0.0.1, and a batch of messages signed with X-Road hash chains; every signature,
chain, OCSP response and time-stamp token is verified, each step printed.
Everything lives in one directory, kept afterwards for inspection.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.client import Agent
from twisted.web.server import Site

INSTANCE = "VN-TEST"
MEMBERS = (
    ("VN-TEST/GOV/000.00.00.H41", "UBND tinh H41", "rsa"),
    ("VN-TEST/GOV/000.00.00.G22", "Van phong Chinh phu", "ec"),
)
TOKEN_LABEL = "vdxp-demo"  # noqa: S105 - a token label, not a secret


class Demo:
    def __init__(self, reactor: Any, directory: Path, messages: int, out: Callable[[str], None]) -> None:
        self.reactor = reactor
        self.dir = directory
        self.messages = messages
        self.out = out
        self.step = 0
        self.steps = 8

    def say(self, text: str) -> None:
        self.step += 1
        self.out(f"[{self.step}/{self.steps}] {text}")

    def detail(self, text: str) -> None:
        self.out(f"      {text}")

    async def run(self) -> None:
        from treq.client import HTTPClient

        from gateway.commands.key import make_csr
        from gateway.commands.token import write_secret_file
        from gateway.devocsp import OcspResponderResource
        from gateway.devpki import init_pki
        from gateway.devtsa import TsaResource
        from hsm.config import PinSource, TokenSpec, resolve_module
        from hsm.inittoken import init_token
        from hsm.ocsp import OcspClient
        from hsm.p11thread import ModuleThread
        from hsm.signer import MessageSigner, SigningKey, TokenDigestSigner, resolve_mechanism
        from hsm.token import Token
        from hsm.tsa import TsaClient
        from protocols import hashchain, xades

        d = self.dir
        self.out(f"vdxp-gateway demo: working in {d}")

        # 1. Token.
        (d / "tokens").mkdir(parents=True)
        conf = d / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        module = resolve_module(None)
        import secrets

        write_secret_file(d / "pin", secrets.token_urlsafe(12))
        write_secret_file(d / "pin.so", secrets.token_urlsafe(12))
        pin = PinSource(file=d / "pin")
        serial = ModuleThread.for_module(module).call(init_token, module, TOKEN_LABEL,
                                                      PinSource(file=d / "pin.so").read(), pin.read())
        token = Token(TokenSpec(id="demo", label=TOKEN_LABEL, pin=pin, module=module))
        self.say(f"SoftHSM2 token {TOKEN_LABEL!r} (serial {serial}) initialised through PKCS#11 C_InitToken; "
                 f"PINs in 0600 files {d / 'pin'}, {d / 'pin.so'}")

        # 2. PKI and its OCSP responder (the responder URL goes into every certificate's AIA).
        pki = init_pki(d / "pki", instance=INSTANCE, ocsp_url="http://127.0.0.1:0/")
        ocsp_port = await _listen(self.reactor, OcspResponderResource(d / "pki", self.reactor))
        ocsp_url = f"http://127.0.0.1:{ocsp_port.getHost().port}/"
        self.say(f"development PKI in {d / 'pki'}: root CA, intermediate CA, OCSP responder certificate; "
                 f"OCSP responder listening on {ocsp_url}")

        # 3. Keys on the token.
        started = time.perf_counter()
        keys = []
        for member, _name, key_type in MEMBERS:
            keys.append(token.generate_key(key_type, usage="sign", member=member))
        tsa_key = token.generate_key("rsa", label="tsa")
        self.say(f"keys generated on the token in {time.perf_counter() - started:.2f} s (private keys "
                 "non-extractable, never leave it):")
        for k in [*keys, tsa_key]:
            self.detail(f"{k.key_id}  {k.key_type.upper()}-{k.bits}  usage {k.usage or '-'}  "
                        f"member {k.member or '-'}  label {k.label!r}")

        # 4. CSRs signed on the token, certificates issued and imported.
        certs = []
        for (member, name, _kt), k in zip(MEMBERS, keys, strict=True):
            csr_der = make_csr(token, k.key_id, "sign", member, name, None)
            cert = pki.issue(csr_der, "sign", ocsp_url=ocsp_url)
            token.import_certificate(cert)
            certs.append(cert)
        tsa_csr = make_csr(token, tsa_key.key_id, "auth", MEMBERS[1][0], "Demo TSA", "tsa.demo")
        tsa_cert = pki.issue(tsa_csr, "tsa", ocsp_url=ocsp_url)
        token.import_certificate(tsa_cert)
        self.say("CSRs signed on the token with the X-Road Basic profile subjects; certificates issued "
                 "and stored on the token:")
        from gateway.tokencli import display_name

        for c in [*certs, tsa_cert]:
            self.detail(f"{display_name(c.subject)}  (serial {c.serial_number:x}, "
                        f"until {c.not_valid_after_utc:%Y-%m-%d})")

        # 5. OCSP for the signing certificates.
        http = HTTPClient(Agent(self.reactor))  # type: ignore[no-untyped-call,arg-type]
        ocsp_client = OcspClient(http, self.reactor, timeout_seconds=10)
        ocsp_der: dict[int, bytes] = {}
        for cert in certs:
            status = await ocsp_client.fetch(cert, pki.intermediate)
            ocsp_der[cert.serial_number] = status.der
        self.say(f"OCSP: {len(certs)} responses fetched from {ocsp_url} and verified (responder authorised by "
                 f"the intermediate CA, signature, freshness): status {status.status}, "
                 f"thisUpdate {status.this_update:%H:%M:%S}")

        # 6. Batch signing.
        summary = []
        for (member, _name, key_type), k, cert in zip(MEMBERS, keys, certs, strict=True):
            sk = SigningKey(token=token, key_id=k.key_id, key_type=key_type,
                            mechanism=resolve_mechanism("auto", key_type), cert=cert,
                            extra_certs=(pki.intermediate,),
                            ocsp_responses=_constant((ocsp_der[cert.serial_number],)))
            for batch in (True, False):
                signer = MessageSigner(self.reactor, sk, batch_signing=batch)
                msgs = [f"<soap>message {i} from {member}</soap>".encode() for i in range(self.messages)]
                t0 = time.perf_counter()
                results = await defer.gatherResults(
                    [signer.sign([("/message.xml", signer.digest(m))]) for m in msgs])
                elapsed = time.perf_counter() - t0
                for m, r in zip(msgs, results, strict=True):
                    parsed = xades.parse_signature(r.signature_xml)
                    xades.verify_signature_value(parsed)
                    if r.hash_chain is None or r.hash_chain_result is None:
                        xades.verify_references(parsed, {"/message.xml": m}.get)
                    else:
                        xades.verify_references(parsed, {"/sig-hashchainresult.xml": r.hash_chain_result}.get)
                        hashchain.verify_hash_chain(r.hash_chain_result,
                                                    {"/sig-hashchain.xml": r.hash_chain, "/message.xml": m}.get,
                                                    {"/message.xml": None})
                summary.append((member, key_type, batch, signer.operations, elapsed))
                if batch and not (d / "sample").exists():  # the first member's batch is the sample
                    sample = next((r for r in results if r.hash_chain is not None), results[0])
                    (d / "sample").mkdir(exist_ok=True)
                    (d / "sample" / "signatures.xml").write_bytes(sample.signature_xml)
                    # What gets time-stamped: the batch's hash-chain result (or a lone signature).
                    stamped = sample.hash_chain_result or sample.signature_xml
                    stamped_name = "sig-hashchainresult.xml" if sample.hash_chain_result else "signatures.xml"
                    if sample.hash_chain is not None and sample.hash_chain_result is not None:
                        (d / "sample" / "sig-hashchain.xml").write_bytes(sample.hash_chain)
                        (d / "sample" / "sig-hashchainresult.xml").write_bytes(sample.hash_chain_result)
        self.say(f"signed {self.messages} concurrent messages per key; every XAdES signature and hash chain "
                 "verified:")
        for member, key_type, batch, ops, elapsed in summary:
            self.detail(f"{member}  {key_type.upper():3}  batch signing {'on ' if batch else 'off'}  "
                        f"{ops:4d} HSM operations  {self.messages / elapsed:8.0f} signed messages/s")
        self.detail(f"a sample batch signature is in {d / 'sample'}")

        # 7. Time-stamp from the TSA whose key is on the token.
        tsa_signer = TokenDigestSigner(self.reactor, token, tsa_key.key_id, "rsa", "rsa-pkcs1")
        tsa_port = await _listen(self.reactor, TsaResource(tsa_signer, tsa_cert, [pki.intermediate], self.reactor))
        tsa_url = f"http://127.0.0.1:{tsa_port.getHost().port}/"
        tsa_client = TsaClient(http, self.reactor, tsa_url, [tsa_cert], timeout_seconds=10)
        digest = hashlib.sha512(stamped).digest()
        token_ts = await tsa_client.timestamp(digest, "sha512")
        (d / "sample" / "timestamp.tst").write_bytes(token_ts.token_der)
        self.say(f"RFC 3161: {stamped_name} of the sample time-stamped by the development TSA on {tsa_url} "
                 f"(key on the token): genTime {token_ts.gen_time:%Y-%m-%d %H:%M:%S} UTC, serial "
                 f"{token_ts.serial:x}; imprint, nonce, signature and TSA certificate verified")
        chain_pem = d / "pki" / "chain-for-openssl.pem"
        chain_pem.write_bytes(b"".join(c.public_bytes(_pem()) for c in (pki.intermediate, pki.root)))
        tsa_pem = d / "sample" / "tsa.pem"
        tsa_pem.write_bytes(tsa_cert.public_bytes(_pem()))
        check = subprocess.run(
            ["openssl", "ts", "-verify", "-data", str(d / "sample" / stamped_name), "-in",
             str(d / "sample" / "timestamp.tst"), "-token_in", "-CAfile", str(chain_pem), "-untrusted",
             str(tsa_pem)], capture_output=True, text=True, check=False)
        verdict = (check.stdout.strip() or check.stderr.strip()).splitlines()[-1] if (check.stdout or check.stderr) \
            else "no output"
        self.detail(f"openssl ts -verify of the same token: {verdict}")

        await ocsp_port.stopListening()
        await tsa_port.stopListening()
        self.say(f"done: everything is kept in {d}")


async def _listen(reactor: Any, resource: Any) -> Any:
    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")  # type: ignore[no-untyped-call]
    return await endpoint.listen(Site(resource))  # type: ignore[no-untyped-call]


def _constant(value: tuple[bytes, ...]) -> Callable[[], tuple[bytes, ...]]:
    return lambda: value


def _pem() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM


def main(directory: Path | None, messages: int) -> int:
    import tempfile

    from twisted.internet import task

    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="vdxp-demo-"))
    elif directory.exists() and any(directory.iterdir()):
        from protocols.errors import UsageError

        raise UsageError(f"{directory} is not empty; give a new directory", code="usage.dir_not_empty")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)

    def out(line: str) -> None:
        print(line, flush=True)

    failure: list[BaseException] = []

    async def run(reactor: Any) -> None:
        try:
            await Demo(reactor, directory, messages, out).run()
        except Exception as exc:  # reported by the CLI as one coded line
            failure.append(exc)

    def go(reactor: Any) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(run(reactor))

    try:
        task.react(go)
    except SystemExit as exc:
        if exc.code:
            return int(exc.code)
    sys.stdout.flush()
    if failure:
        raise failure[0]
    return 0
