"""The signer on a real SoftHSM2 token: single, multipart and batch signatures, failures."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer

from hsm.config import PinSource, TokenSpec
from hsm.p11thread import HsmTimeout
from hsm.signer import MessageSigner, SigningKey, TokenDigestSigner, resolve_mechanism
from hsm.token import HsmError, Token
from protocols import hashchain, xades
from protocols.errors import VdxpError
from tests.conftest import SoftHsm
from tests.pki_support import TestCa

MEMBER = "VN-TEST/GOV/000.00.00.H41"


@pytest.fixture(scope="module")
def token(softhsm: SoftHsm) -> Token:
    return Token(TokenSpec(id="t", label=softhsm.label, pin=PinSource(file=softhsm.pin_file)))


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


def _key(token: Token, ca: TestCa, key_type: str, mechanism: str = "auto") -> SigningKey:
    info = token.generate_key(key_type, usage="sign", member=MEMBER)
    cert = ca.issue(info.public_key(), "UBND H41", serial_number="000.00.00.H41", business_category="GOV")
    return SigningKey(token=token, key_id=info.key_id, key_type=key_type,
                      mechanism=resolve_mechanism(mechanism, key_type), cert=cert, extra_certs=(ca.cert,))


@pytest.fixture(scope="module")
def rsa_key(token: Token, ca: TestCa) -> SigningKey:
    return _key(token, ca, "rsa")


def _check_signed(result, message: bytes, attachments: list[bytes], key: SigningKey) -> None:
    parsed = xades.parse_signature(result.signature_xml)
    xades.verify_signature_value(parsed)
    assert parsed.signing_cert == key.cert
    if result.hash_chain is None:
        xades.verify_references(parsed, {"/message.xml": message}.get)
        return
    xades.verify_references(parsed, {"/sig-hashchainresult.xml": result.hash_chain_result}.get)
    docs = {"/sig-hashchain.xml": result.hash_chain, "/message.xml": message}
    docs.update({f"/attachment{i}": a for i, a in enumerate(attachments, 1)})
    inputs = {uri: None for uri in docs if uri != "/sig-hashchain.xml"}
    hashchain.verify_hash_chain(result.hash_chain_result, docs.get, inputs)


def _parts(signer: MessageSigner, message: bytes, attachments: list[bytes] = ()) -> list[tuple[str, bytes]]:
    parts = [("/message.xml", signer.digest(message))]
    parts += [(f"/attachment{i}", signer.digest(a)) for i, a in enumerate(attachments, 1)]
    return parts


def test_token_lists_generated_key_with_usage_and_member(token: Token, rsa_key: SigningKey) -> None:
    keys = {k.key_id: k for k in token.list_keys()}
    info = keys[rsa_key.key_id]
    assert (info.usage, info.member, info.key_type, info.bits) == ("SIGN", MEMBER, "rsa", 2048)


@pytest_twisted.ensureDeferred
async def test_single_message_signature_references_message(rsa_key: SigningKey) -> None:
    from twisted.internet import reactor

    signer = MessageSigner(reactor, rsa_key)
    msg = b"<soap>one</soap>"
    result = await signer.sign(_parts(signer, msg))
    assert result.hash_chain is None and result.batch_size == 1
    _check_signed(result, msg, [], rsa_key)
    with pytest.raises(VdxpError) as err:
        xades.verify_references(xades.parse_signature(result.signature_xml), {"/message.xml": b"<soap>two</soap>"}.get)
    assert err.value.code == "signature.digest_invalid"


@pytest_twisted.ensureDeferred
async def test_message_with_attachments_gets_hash_chain(rsa_key: SigningKey) -> None:
    from twisted.internet import reactor

    signer = MessageSigner(reactor, rsa_key)
    msg, atts = b"<soap>with attachments</soap>", [b"PDF bytes", b"second"]
    result = await signer.sign(_parts(signer, msg, atts))
    assert result.hash_chain is not None
    _check_signed(result, msg, atts, rsa_key)


@pytest.mark.parametrize(("key_type", "mechanism"), [("rsa", "rsa-pkcs1"), ("rsa", "rsa-pss"), ("ec", "ecdsa")])
@pytest_twisted.ensureDeferred
async def test_concurrent_requests_share_one_signature(token: Token, ca: TestCa, key_type: str,
                                                       mechanism: str) -> None:
    from twisted.internet import reactor

    key = _key(token, ca, key_type, mechanism)
    signer = MessageSigner(reactor, key, batch_signing=True)
    messages = [f"<soap>message {i}</soap>".encode() for i in range(50)]
    results = await defer.gatherResults([signer.sign(_parts(signer, m)) for m in messages])
    # Requests made in one reactor turn share one private-key operation.
    assert signer.operations == 1
    assert [r.batch_size for r in results] == [50] * 50
    for m, r in zip(messages, results, strict=True):
        _check_signed(r, m, [], key)
    # A chain proves only its own message.
    batched = [i for i, r in enumerate(results) if r.hash_chain is not None]
    a, b = batched[0], batched[1]
    with pytest.raises(VdxpError):
        _check_signed(results[a], messages[b], [], key)


@pytest_twisted.ensureDeferred
async def test_batch_signing_off_signs_each_message(rsa_key: SigningKey) -> None:
    from twisted.internet import reactor

    signer = MessageSigner(reactor, rsa_key, batch_signing=False)
    messages = [f"<m>{i}</m>".encode() for i in range(10)]
    results = await defer.gatherResults([signer.sign(_parts(signer, m)) for m in messages])
    assert signer.operations == 10
    assert all(r.batch_size == 1 and r.hash_chain is None for r in results)
    for m, r in zip(messages, results, strict=True):
        _check_signed(r, m, [], rsa_key)


@pytest_twisted.ensureDeferred
async def test_hsm_call_times_out_without_hanging(rsa_key: SigningKey) -> None:
    from twisted.internet import reactor

    signer = MessageSigner(reactor, rsa_key)
    rsa_key.token.thread.submit(time.sleep, 1.0)  # the module thread is busy
    object.__setattr__(rsa_key.token.spec, "timeout_seconds", 0.2)
    try:
        started = time.monotonic()
        with pytest.raises(HsmTimeout):
            await signer.sign(_parts(signer, b"<m/>"))
        assert time.monotonic() - started < 0.9
    finally:
        object.__setattr__(rsa_key.token.spec, "timeout_seconds", 10.0)
    # Once the thread is free again the signer works.
    await defer.Deferred.fromCoroutine(_sleep(reactor, 1.0))
    result = await signer.sign(_parts(signer, b"<m/>"))
    _check_signed(result, b"<m/>", [], rsa_key)


async def _sleep(reactor, seconds: float) -> None:
    from twisted.internet import task

    await task.deferLater(reactor, seconds, lambda: None)


def test_reconnects_after_session_loss(token: Token, rsa_key: SigningKey) -> None:
    token.call(lambda: token._session.close())  # the session dies behind our back
    before = token.reconnects
    digest = hashlib.sha512(b"x").digest()
    sig = token.sign(rsa_key.key_id, "rsa-pkcs1", digest, "sha512")
    assert len(sig) == 256
    assert token.reconnects == before + 1


@pytest_twisted.ensureDeferred
async def test_token_digest_signer_returns_der_ecdsa(token: Token, ca: TestCa) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from twisted.internet import reactor

    key = _key(token, ca, "ec")
    signer = TokenDigestSigner(reactor, token, key.key_id, "ec", "ecdsa")
    digest = hashlib.sha256(b"tsa").digest()
    der = await signer.sign_digest(digest, "sha256")
    key.cert.public_key().verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_wrong_pin_missing_token_and_key_are_coded(softhsm: SoftHsm, tmp_path: Path, rsa_key: SigningKey) -> None:
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad-pin"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"wrong-pin")
    os.close(fd)
    # Login state is per process (PKCS#11), so the wrong PIN is tried in a fresh one.
    script = ("import sys; from pathlib import Path; from hsm.config import PinSource, TokenSpec; "
              "from hsm.token import Token, HsmError\n"
              "try:\n    Token(TokenSpec(id='w', label='test', pin=PinSource(file=Path(sys.argv[1])))).list_keys()\n"
              "except HsmError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", script, str(bad)], env=softhsm.env(), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.startswith("hsm.pin_incorrect:"), out.stdout + out.stderr
    assert "wrong-pin" not in out.stdout
    with pytest.raises(HsmError) as err:
        Token(TokenSpec(id="m", label="no-such-token", pin=PinSource(file=softhsm.pin_file))).list_keys()
    assert err.value.code == "hsm.token_not_found"
    tok = Token(TokenSpec(id="t2", label=softhsm.label, pin=PinSource(file=softhsm.pin_file)))
    with pytest.raises(HsmError) as err:
        tok.sign("00" * 16, "rsa-pkcs1", hashlib.sha512(b"").digest(), "sha512")
    assert err.value.code == "hsm.key_not_found"


def test_pin_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("1234")
    pin.chmod(0o644)
    with pytest.raises(VdxpError) as err:
        PinSource(file=pin).read()
    assert err.value.code == "hsm.pin_unavailable"
    assert "readable by others" in err.value.message and "1234" not in str(err.value)
