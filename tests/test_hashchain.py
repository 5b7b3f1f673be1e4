"""Hash chains: X-Road conformance vectors, builder round trips, hostile input."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core
from lxml import etree

from protocols import hashchain
from protocols.errors import HashChainError
from protocols.hashchain import (
    SHA256_URI,
    SHA384_URI,
    SHA512_URI,
    DigestInput,
    build_batch,
    compute_digest,
    digest_list_der,
    digest_uri_for_hash,
    hash_name_for_uri,
    step_digest,
    verify_hash_chain,
)

HC_NS = "http://cyber.ee/hashchain"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"

# X-Road 7.7 code -> our code
OUR_CODES = {
    "MalformedHashChain": "hashchain.malformed",
    "InvalidHashChain": "hashchain.invalid",
    "InvalidHashChainRef": "hashchain.invalid_ref",
    "HashChainUnusedInputs": "hashchain.unused_inputs",
    "InvalidReference": "hashchain.invalid_reference",
}


def _expectations(vectors: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors / "xroad/hashchain/expectations.json").read_text())
    return data


def _case_ids() -> list[str]:
    path = Path(__file__).parent / "vectors/xroad/hashchain/expectations.json"
    return [c["id"] for c in json.loads(path.read_text())["cases"]]


def _expect_error(code: str, fn: Callable[[], object]) -> HashChainError:
    with pytest.raises(HashChainError) as info:
        fn()
    assert info.value.code == code, info.value
    assert info.value.xroad_code == {v: k for k, v in OUR_CODES.items()}[code]
    return info.value


# --------------------------------------------------------------------------- helpers


def test_digest_uri_mapping() -> None:
    assert hash_name_for_uri(SHA256_URI) == "sha256"
    assert hash_name_for_uri(SHA384_URI) == "sha384"
    assert hash_name_for_uri(SHA512_URI) == "sha512"
    for uri in (SHA256_URI, SHA384_URI, SHA512_URI):
        assert digest_uri_for_hash(hash_name_for_uri(uri)) == uri
    assert digest_uri_for_hash("SHA-512") == SHA512_URI
    with pytest.raises(ValueError):
        hash_name_for_uri("http://www.w3.org/2000/09/xmldsig#sha1")
    with pytest.raises(ValueError):
        digest_uri_for_hash("md5")
    assert compute_digest(SHA384_URI, b"abc") == hashlib.sha384(b"abc").digest()


class _SingleDigest(core.Sequence):
    _fields = [  # noqa: RUF012
        ("digest", core.OctetString),
        ("digestMethod", core.UTF8String),
        ("transforms", core.Sequence),
    ]


class _DigestList(core.SequenceOf):
    _child_spec = _SingleDigest


@pytest.mark.parametrize("sizes", [[], [1], [32, 64], [200], [70000], [64] * 5, [127, 128, 255, 256]])
def test_digest_list_der_matches_asn1crypto(sizes: list[int]) -> None:
    items = [
        DigestInput(SHA512_URI if i % 2 else SHA256_URI, bytes([i % 251]) * n) for i, n in enumerate(sizes)
    ]
    reference = _DigestList(
        [
            _SingleDigest({"digest": d, "digestMethod": m, "transforms": core.Sequence.load(b"\x30\x00")})
            for m, d in items
        ]
    ).dump(force=True)
    assert digest_list_der(items) == reference
    assert step_digest(SHA256_URI, items) == hashlib.sha256(reference).digest()


def test_step_digest_reproduces_xroad_vector(vectors: Path) -> None:
    sig = vectors / "xroad/signatures"
    msg = hashlib.sha512((sig / "message-1.xml").read_bytes()).digest()
    att = hashlib.sha512(b"blaah").digest()
    result = etree.fromstring((sig / "hash-chain-result.xml").read_bytes())
    expected = base64.b64decode(result.findtext(f"{{{DS_NS}}}DigestValue"))
    got = step_digest(SHA512_URI, [DigestInput(SHA512_URI, msg), DigestInput(SHA512_URI, att)])
    assert got == expected
    # the order of parts matters
    assert step_digest(SHA512_URI, [DigestInput(SHA512_URI, att), DigestInput(SHA512_URI, msg)]) != expected


# --------------------------------------------------------------------------- X-Road vectors


@pytest.mark.parametrize("case_id", _case_ids())
def test_xroad_hashchain_vectors(vectors: Path, case_id: str) -> None:
    folder = vectors / "xroad/hashchain"
    case = next(c for c in _expectations(vectors)["cases"] if c["id"] == case_id)
    files = {uri: (folder / name).read_bytes() for uri, name in case["resolver"].items()}
    resolved: list[str] = []

    def resolver(uri: str) -> bytes | None:
        resolved.append(uri)
        return files.get(uri)

    inputs: dict[str, DigestInput | None] = {}
    for uri, spec in case["inputs"].items():
        if spec is None:
            inputs[uri] = None
        elif "digest_of_file" in spec:
            data = (folder / spec["digest_of_file"]).read_bytes()
            inputs[uri] = DigestInput(spec["digest_method"], compute_digest(spec["digest_method"], data))
        else:
            inputs[uri] = DigestInput(spec["digest_method"], bytes.fromhex(spec["digest_value_hex"]))

    rule = case["should_resolve"]
    if rule == "always":

        def should_resolve(uri: str, digest: bytes) -> bool:
            return True
    else:

        def should_resolve(uri: str, digest: bytes) -> bool:
            return bool(rule.get(uri, rule["*"]))

    result_xml = (folder / case["hash_chain_result"]).read_bytes()
    expect = case["expect"]
    if expect["result"] == "ok":
        verify_hash_chain(result_xml, resolver, inputs, should_resolve)
        # inputs given with a digest of the chain's method are never fetched
        for uri, given in inputs.items():
            if given is not None:
                assert uri not in resolved
    else:
        err = _expect_error(
            OUR_CODES[expect["code_7_7"]],
            lambda: verify_hash_chain(result_xml, resolver, inputs, should_resolve),
        )
        assert err.xroad_code == expect["code_7_7"]


def test_transforms_vector_digest_is_over_c14n(vectors: Path) -> None:
    """The c14n digest quoted in the expectations is what the verifier accepts; the raw one is refused."""
    folder = vectors / "xroad/hashchain"
    message = (folder / "hc-verifier3-message.xml").read_bytes()
    assert (
        base64.b64encode(hashlib.sha256(message).digest()) == b"MIhAHVCoh2RPbDh9Op+uheg4LSy4xFnyiKeK9thgMTE="
    )
    files = {"/hashchain.xml": (folder / "hc-verifier3-hashchain.xml").read_bytes(), "/message.xml": message}
    result = (folder / "hc-verifier3-hashchainresult.xml").read_bytes()
    verify_hash_chain(result, files.get, {"/message.xml": None})
    # a message whose canonical form differs (text changed) fails
    files["/message.xml"] = message.replace(b"Hello", b"Hallo")
    _expect_error(
        "hashchain.invalid_ref", lambda: verify_hash_chain(result, files.get, {"/message.xml": None})
    )
    # a comment-only difference is removed by the canonicalization
    files["/message.xml"] = message.replace(b"Some comment", b"Another comment")
    verify_hash_chain(result, files.get, {"/message.xml": None})


def _signature_vector(vectors: Path) -> tuple[bytes, dict[str, bytes]]:
    sig = vectors / "xroad/signatures"
    files = {
        "/sig-hashchain.xml": (sig / "hash-chain-1.xml").read_bytes(),
        "/message.xml": (sig / "message-1.xml").read_bytes(),
        "/attachment1": b"blaah",
    }
    return (sig / "hash-chain-result.xml").read_bytes(), files


def test_signature_vector_hash_chain(vectors: Path) -> None:
    result, files = _signature_vector(vectors)
    verify_hash_chain(result, files.get, {})
    verify_hash_chain(result, files.get, {"/message.xml": None, "/attachment1": None})
    digests = {
        u: DigestInput(SHA512_URI, hashlib.sha512(files[u]).digest())
        for u in ("/message.xml", "/attachment1")
    }
    only_chain = {"/sig-hashchain.xml": files["/sig-hashchain.xml"]}
    verify_hash_chain(result, only_chain.get, digests)


def test_signature_vector_message_0_is_not_covered(vectors: Path) -> None:
    result, files = _signature_vector(vectors)
    files["/message.xml"] = (vectors / "xroad/signatures/message-0.xml").read_bytes()
    _expect_error(
        "hashchain.invalid_ref", lambda: verify_hash_chain(result, files.get, {"/message.xml": None})
    )
    digest = DigestInput(SHA512_URI, hashlib.sha512(files["/message.xml"]).digest())
    _expect_error("hashchain.invalid", lambda: verify_hash_chain(result, files.get, {"/message.xml": digest}))


def test_signature_vector_unresolvable_data(vectors: Path) -> None:
    result, files = _signature_vector(vectors)
    del files["/attachment1"]
    _expect_error("hashchain.invalid_reference", lambda: verify_hash_chain(result, files.get, {}))
    # declining to resolve trusts the written digest
    verify_hash_chain(result, files.get, {}, lambda uri, digest: uri != "/attachment1")
    del files["/sig-hashchain.xml"]
    _expect_error("hashchain.invalid_reference", lambda: verify_hash_chain(result, files.get, {}))


def test_input_with_other_digest_method_is_fetched(vectors: Path) -> None:
    result, files = _signature_vector(vectors)
    fetched: list[str] = []

    def resolver(uri: str) -> bytes | None:
        fetched.append(uri)
        return files.get(uri)

    sha256 = DigestInput(SHA256_URI, hashlib.sha256(files["/message.xml"]).digest())
    verify_hash_chain(result, resolver, {"/message.xml": sha256})
    assert "/message.xml" in fetched


def test_tampered_result_digest(vectors: Path) -> None:
    result, files = _signature_vector(vectors)
    root = etree.fromstring(result)
    dv = root.find(f"{{{DS_NS}}}DigestValue")
    raw = bytearray(base64.b64decode(dv.text))
    raw[0] ^= 1
    dv.text = base64.b64encode(bytes(raw)).decode()
    _expect_error("hashchain.invalid", lambda: verify_hash_chain(etree.tostring(root), files.get, {}))


# --------------------------------------------------------------------------- builder round trips


def _inputs(n: int, attachments: int | Callable[[int], int], seed: str = "") -> list[list[tuple[str, bytes]]]:
    out = []
    for i in range(n):
        count = attachments(i) if callable(attachments) else attachments
        parts = [("/message.xml", hashlib.sha512(f"{seed}m{i}".encode()).digest())]
        parts += [
            (f"/attachment{j}", hashlib.sha512(f"{seed}a{i}.{j}".encode()).digest())
            for j in range(1, count + 1)
        ]
        out.append(parts)
    return out


def _digests(parts: list[tuple[str, bytes]], uri: str = SHA512_URI) -> dict[str, DigestInput | None]:
    return {u: DigestInput(uri, d) for u, d in parts}


def _only(uri: str, data: bytes) -> Callable[[str], bytes | None]:
    return {uri: data}.get


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x80]) + data[1:]


def test_single_input_without_attachments_is_refused() -> None:
    with pytest.raises(ValueError):
        build_batch(_inputs(1, 0))


def test_single_input_with_attachments() -> None:
    inputs = _inputs(1, 3)
    batch = build_batch(inputs)
    assert len(batch.chains) == 1
    root = etree.fromstring(batch.chains[0])
    steps = root.findall(f"{{{HC_NS}}}HashStep")
    assert [s.get("id") for s in steps] == ["STEP0"]
    refs = steps[0].findall(f"{{{HC_NS}}}DataRef")
    assert [r.get("URI") for r in refs] == ["/message.xml", "/attachment1", "/attachment2", "/attachment3"]
    assert len(steps[0]) == 4
    items = [DigestInput(SHA512_URI, d) for _, d in inputs[0]]
    assert batch.top_digest == step_digest(SHA512_URI, items)
    verify_hash_chain(batch.result_xml, _only("/sig-hashchain.xml", batch.chains[0]), _digests(inputs[0]))


@pytest.mark.parametrize("attachments", [0, 2], ids=["plain", "attachments"])
@pytest.mark.parametrize("n", range(1, 65))
def test_builder_round_trip(n: int, attachments: int) -> None:
    if n == 1 and attachments == 0:
        with pytest.raises(ValueError):
            build_batch(_inputs(1, 0))
        return
    inputs = _inputs(n, attachments)
    batch = build_batch(inputs)
    assert len(batch.chains) == n
    assert batch.chain_uri == "/sig-hashchain.xml"
    result_root = etree.fromstring(batch.result_xml)
    assert result_root.get("URI") == "/sig-hashchain.xml#STEP0"
    assert base64.b64decode(result_root.findtext(f"{{{DS_NS}}}DigestValue")) == batch.top_digest
    schema = hashchain._schema()
    assert schema.validate(result_root)
    for i, chain in enumerate(batch.chains):
        assert schema.validate(etree.fromstring(chain))
        # digests given as inputs
        verify_hash_chain(batch.result_xml, _only("/sig-hashchain.xml", chain), _digests(inputs[i]))
        # a tampered message digest
        tampered = _digests(inputs[i])
        tampered["/message.xml"] = DigestInput(SHA512_URI, _flip(inputs[i][0][1]))
        _expect_error(
            "hashchain.invalid",
            lambda c=chain, t=tampered: verify_hash_chain(
                batch.result_xml, _only("/sig-hashchain.xml", c), t
            ),
        )
        # another input's chain
        if n > 1:
            other = batch.chains[(i + 1) % n]
            _expect_error(
                "hashchain.invalid",
                lambda o=other, i=i: verify_hash_chain(
                    batch.result_xml, _only("/sig-hashchain.xml", o), _digests(inputs[i])
                ),
            )


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 33])
def test_builder_round_trip_with_data(n: int) -> None:
    """Inputs resolved as data: altering any message or attachment is an invalid reference."""
    datas = [
        [("/message.xml", f"<m>{i}</m>".encode()), ("/attachment1", f"att {i}".encode())] for i in range(n)
    ]
    inputs = [[(u, hashlib.sha512(d).digest()) for u, d in parts] for parts in datas]
    batch = build_batch(inputs)
    for i, chain in enumerate(batch.chains):
        files = {"/sig-hashchain.xml": chain, **dict(datas[i])}
        verify_hash_chain(batch.result_xml, files.get, {"/message.xml": None, "/attachment1": None})
        for uri in ("/message.xml", "/attachment1"):
            bad = dict(files)
            bad[uri] = files[uri] + b" "
            _expect_error(
                "hashchain.invalid_ref",
                lambda b=bad: verify_hash_chain(batch.result_xml, b.get, {"/message.xml": None}),
            )
        # inputs the chain does not cover
        _expect_error(
            "hashchain.unused_inputs",
            lambda f=files: verify_hash_chain(
                batch.result_xml, f.get, {"/message.xml": None, "/attachment2": None}
            ),
        )


@pytest.mark.parametrize("n", [2, 5, 16, 17])
def test_tampering_any_chain_digest_fails(n: int) -> None:
    inputs = _inputs(n, lambda i: i % 3)
    batch = build_batch(inputs)

    def verify(chain: bytes, inputs: Mapping[str, DigestInput | None], trust: bool = False) -> None:
        verify_hash_chain(
            batch.result_xml, _only("/sig-hashchain.xml", chain), inputs, lambda u, d: not trust
        )

    for i, chain in enumerate(batch.chains):
        given = _digests(inputs[i])
        trusted: dict[str, DigestInput | None] = dict.fromkeys(given)
        count = len(list(etree.fromstring(chain).iter(f"{{{DS_NS}}}DigestValue")))
        assert count >= 1 + len(inputs[i])
        for position in range(count):
            copy = etree.fromstring(chain)
            dv = list(copy.iter(f"{{{DS_NS}}}DigestValue"))[position]
            dv.text = base64.b64encode(_flip(base64.b64decode(dv.text))).decode()
            tampered = etree.tostring(copy)
            # DataRef digests trusted as written: any tampered value breaks the result.
            _expect_error("hashchain.invalid", lambda t=tampered, r=trusted: verify(t, r, trust=True))
            if dv.getparent().tag == f"{{{HC_NS}}}DataRef":
                # a given input digest replaces the DataRef value, so the tampering has no effect
                verify(tampered, given)
            else:
                _expect_error("hashchain.invalid", lambda t=tampered, g=given: verify(t, g))


def test_builder_mixed_batch_and_digest_algorithms() -> None:
    for uri, name in ((SHA256_URI, "sha256"), (SHA384_URI, "sha384"), (SHA512_URI, "sha512")):
        inputs = [
            [("/message.xml", hashlib.new(name, b"m%d" % i).digest())]
            + [(f"/attachment{j}", hashlib.new(name, b"a%d%d" % (i, j)).digest()) for j in range(1, i % 4)]
            for i in range(11)
        ]
        batch = build_batch(inputs, digest_uri=uri, chain_uri="/chain.xml")
        assert len(batch.top_digest) == hashlib.new(name).digest_size
        assert b"/chain.xml#STEP0" in batch.result_xml
        for i, chain in enumerate(batch.chains):
            verify_hash_chain(batch.result_xml, _only("/chain.xml", chain), _digests(inputs[i], uri))


def test_builder_escapes_uris() -> None:
    uri = '/a&b<"c>'
    inputs = [[("/message.xml", hashlib.sha512(b"x").digest()), (uri, hashlib.sha512(b"y").digest())]]
    batch = build_batch(inputs)
    ref = etree.fromstring(batch.chains[0]).findall(f".//{{{HC_NS}}}DataRef")[1]
    assert ref.get("URI") == uri
    verify_hash_chain(batch.result_xml, _only("/sig-hashchain.xml", batch.chains[0]), _digests(inputs[0]))


def test_builder_argument_errors() -> None:
    good = _inputs(2, 0)
    with pytest.raises(ValueError):
        build_batch([])
    with pytest.raises(ValueError):
        build_batch([good[0], []])
    with pytest.raises(ValueError):
        build_batch([good[0], [("/message.xml", b"short")]])
    with pytest.raises(ValueError):
        build_batch(good, digest_uri="http://www.w3.org/2000/09/xmldsig#sha1")
    with pytest.raises(ValueError):
        build_batch(good, digest_uri=SHA256_URI)  # SHA-512 digests labelled SHA-256
    with pytest.raises(ValueError):
        build_batch(good, chain_uri="/x.xml#STEP0")


def test_builder_is_fast() -> None:
    """100 chains are built in a few milliseconds (the signer's hot path)."""
    inputs = _inputs(100, 0)
    build_batch(inputs)
    best = min(_timed(lambda: build_batch(inputs)) for _ in range(5))
    assert best < 0.02, f"building 100 chains took {best * 1000:.1f} ms"


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- hostile and malformed


def _chain(*steps: str, default: str | None = SHA256_URI) -> bytes:
    head = f'<ns2:DefaultDigestMethod Algorithm="{default}"/>' if default else ""
    return (
        f'<ns2:HashChain xmlns:ns2="{HC_NS}" xmlns="{DS_NS}">{head}{"".join(steps)}</ns2:HashChain>'
    ).encode()


def _result(uri: str = "/hashchain.xml#STEP0", digest: bytes = b"\0" * 32, method: str = SHA256_URI) -> bytes:
    return (
        f'<ns2:HashChainResult xmlns:ns2="{HC_NS}" xmlns="{DS_NS}" URI="{uri}">'
        f'<DigestMethod Algorithm="{method}"/><DigestValue>{base64.b64encode(digest).decode()}</DigestValue>'
        "</ns2:HashChainResult>"
    ).encode()


def _hv(digest: bytes = b"\1" * 32) -> str:
    return f"<ns2:HashValue><DigestValue>{base64.b64encode(digest).decode()}</DigestValue></ns2:HashValue>"


def _step(step_id: str, *children: str) -> str:
    return f'<ns2:HashStep id="{step_id}">{"".join(children)}</ns2:HashStep>'


def _sref(uri: str) -> str:
    return f'<ns2:StepRef URI="{uri}"/>'


def _run(
    result: bytes, docs: Mapping[str, bytes], inputs: Mapping[str, DigestInput | None] | None = None
) -> None:
    verify_hash_chain(result, docs.get, inputs or {})


def test_hostile_result_with_dtd_refused() -> None:
    billion = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        + _result().replace(b"</ns2:HashChainResult>", b"&b;</ns2:HashChainResult>")
    )
    _expect_error("hashchain.malformed", lambda: _run(billion, {}))


def test_hostile_chain_with_external_entity_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("c2VjcmV0")
    chain = f'<!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]>'.encode() + _chain(
        _step("STEP0", "<ns2:HashValue><DigestValue>&e;</DigestValue></ns2:HashValue>")
    )
    _expect_error("hashchain.malformed", lambda: _run(_result(), {"/hashchain.xml": chain}))


def test_hostile_data_for_c14n_refused() -> None:
    data = b'<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>'
    dataref = (
        f'<ns2:DataRef URI="/message.xml"><Transforms><Transform Algorithm="{hashchain.C14N_10_URI}"/>'
        f"</Transforms><DigestValue>{base64.b64encode(hashlib.sha256(data).digest()).decode()}"
        "</DigestValue></ns2:DataRef>"
    )
    docs = {"/hashchain.xml": _chain(_step("STEP0", dataref)), "/message.xml": data}
    _expect_error("hashchain.invalid_ref", lambda: _run(_result(), docs))


def test_not_xml_and_wrong_roots() -> None:
    _expect_error("hashchain.malformed", lambda: _run(b"not xml", {}))
    _expect_error("hashchain.malformed", lambda: _run(b"", {}))
    chain = _chain(_step("STEP0", _hv()))
    # a chain document where a result is expected, and the other way round
    _expect_error("hashchain.malformed", lambda: _run(chain, {"/hashchain.xml": chain}))
    _expect_error("hashchain.malformed", lambda: _run(_result(), {"/hashchain.xml": _result()}))
    # an element of another namespace as root
    _expect_error("hashchain.malformed", lambda: _run(b"<HashChainResult/>", {}))


def test_correct_synthetic_chain_verifies() -> None:
    """Sanity check for the hand-written documents used by the negative tests below."""
    leaf = b"\1" * 32
    step1 = digest_list_der([DigestInput(SHA256_URI, leaf)])
    step0 = digest_list_der([DigestInput(SHA256_URI, hashlib.sha256(step1).digest())])
    chain = _chain(_step("STEP0", _sref("#STEP1")), _step("STEP1", _hv(leaf)))
    _run(_result(digest=hashlib.sha256(step0).digest()), {"/hashchain.xml": chain})
    _expect_error(
        "hashchain.invalid",
        lambda: _run(_result(digest=hashlib.sha256(step1).digest()), {"/hashchain.xml": chain}),
    )


@pytest.mark.parametrize(
    "result_uri, ref",
    [
        ("/hashchain.xml", "#STEP1"),  # result URI without fragment
        ("/hashchain.xml#", "#STEP1"),  # empty fragment
        ("/hashchain.xml#NOPE", "#STEP1"),  # unknown step
        ("#STEP0", "#STEP1"),  # result naming no document
        ("/hashchain.xml#STEP0", "#STEP9"),  # StepRef to an unknown step
        ("/hashchain.xml#STEP0", "STEP1"),  # StepRef without '#'
    ],
)
def test_bad_step_uris(result_uri: str, ref: str) -> None:
    chain = _chain(_step("STEP0", _sref(ref)), _step("STEP1", _hv()))
    _expect_error("hashchain.malformed", lambda: _run(_result(uri=result_uri), {"/hashchain.xml": chain}))


def test_reference_cycles_refused() -> None:
    self_ref = _chain(_step("STEP0", _sref("#STEP0")))
    err = _expect_error("hashchain.malformed", lambda: _run(_result(), {"/hashchain.xml": self_ref}))
    assert "cycle" in err.message
    loop = _chain(_step("STEP0", _sref("#STEP1")), _step("STEP1", _hv(), _sref("#STEP0")))
    err = _expect_error("hashchain.malformed", lambda: _run(_result(), {"/hashchain.xml": loop}))
    assert "cycle" in err.message
    a = _chain(_step("STEP0", _sref("/b.xml#STEP0")))
    b = _chain(_step("STEP0", _sref("/hashchain.xml#STEP0")))
    err = _expect_error("hashchain.malformed", lambda: _run(_result(), {"/hashchain.xml": a, "/b.xml": b}))
    assert "cycle" in err.message


def test_duplicate_step_ids_refused() -> None:
    chain = _chain(_step("STEP0", _hv()), _step("STEP0", _hv()))
    _expect_error("hashchain.malformed", lambda: _run(_result(), {"/hashchain.xml": chain}))


def test_absurdly_deep_chain_refused() -> None:
    depth = hashchain.MAX_STEP_DEPTH + 5
    steps = [_step(f"S{i}", _sref(f"#S{i + 1}")) for i in range(depth)] + [_step(f"S{depth}", _hv())]
    _expect_error(
        "hashchain.malformed",
        lambda: _run(_result(uri="/hashchain.xml#S0"), {"/hashchain.xml": _chain(*steps)}),
    )


def test_too_many_chain_documents_refused() -> None:
    count = hashchain.MAX_CHAIN_DOCUMENTS + 2
    docs = {f"/c{i}.xml": _chain(_step("S", _sref(f"/c{i + 1}.xml#S"))) for i in range(count)}
    docs[f"/c{count}.xml"] = _chain(_step("S", _hv()))
    _expect_error("hashchain.malformed", lambda: _run(_result(uri="/c0.xml#S"), docs))


def test_shared_substeps_are_computed_once() -> None:
    """A DAG where each step references the next twice (2**60 paths) verifies quickly."""
    levels = 60
    steps = [_step(f"S{i}", _sref(f"#S{i + 1}"), _sref(f"#S{i + 1}")) for i in range(levels)]
    steps.append(_step(f"S{levels}", _hv()))
    value = digest_list_der([DigestInput(SHA256_URI, b"\1" * 32)])
    for _ in range(levels):
        d = hashlib.sha256(value).digest()
        value = digest_list_der([DigestInput(SHA256_URI, d), DigestInput(SHA256_URI, d)])
    start = time.perf_counter()
    _run(
        _result(uri="/hashchain.xml#S0", digest=hashlib.sha256(value).digest()),
        {"/hashchain.xml": _chain(*steps)},
    )
    assert time.perf_counter() - start < 1.0


def test_too_many_steps_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashchain, "MAX_STEPS", 3)
    steps = [
        _step("S0", _sref("#S1"), _sref("#S2"), _sref("#S3")),
        _step("S1", _hv()),
        _step("S2", _hv()),
        _step("S3", _hv()),
    ]
    _expect_error(
        "hashchain.malformed",
        lambda: _run(_result(uri="/hashchain.xml#S0"), {"/hashchain.xml": _chain(*steps)}),
    )


def test_unsupported_algorithms_refused() -> None:
    sha1 = "http://www.w3.org/2000/09/xmldsig#sha1"
    chain = _chain(_step("STEP0", _hv()))
    _expect_error("hashchain.malformed", lambda: _run(_result(method=sha1), {"/hashchain.xml": chain}))
    _expect_error(
        "hashchain.malformed",
        lambda: _run(_result(), {"/hashchain.xml": _chain(_step("STEP0", _hv()), default=sha1)}),
    )
    # no digest method anywhere
    _expect_error(
        "hashchain.malformed",
        lambda: _run(_result(), {"/hashchain.xml": _chain(_step("STEP0", _hv()), default=None)}),
    )
    transform = (
        '<ns2:DataRef URI="/m"><Transforms><Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
        "</Transforms><DigestValue>AA==</DigestValue></ns2:DataRef>"
    )
    _expect_error(
        "hashchain.malformed",
        lambda: _run(_result(), {"/hashchain.xml": _chain(_step("STEP0", transform)), "/m": b"<m/>"}),
    )


def test_per_element_digest_method_overrides_default() -> None:
    data = b"payload"
    dataref = (
        f'<ns2:DataRef URI="/m"><DigestMethod Algorithm="{SHA384_URI}"/>'
        f"<DigestValue>{base64.b64encode(hashlib.sha384(data).digest()).decode()}</DigestValue></ns2:DataRef>"
    )
    chain = _chain(_step("STEP0", dataref))
    top = hashlib.sha256(digest_list_der([DigestInput(SHA384_URI, hashlib.sha384(data).digest())])).digest()
    _run(_result(digest=top), {"/hashchain.xml": chain, "/m": data}, {"/m": None})
    # the SHA-256 digest of the data would not match the SHA-384 DataRef
    wrong = hashlib.sha256(digest_list_der([DigestInput(SHA256_URI, hashlib.sha256(data).digest())])).digest()
    _expect_error(
        "hashchain.invalid", lambda: _run(_result(digest=wrong), {"/hashchain.xml": chain, "/m": data})
    )


def test_bad_base64_refused() -> None:
    chain = _chain(_step("STEP0", "<ns2:HashValue><DigestValue>@@@</DigestValue></ns2:HashValue>"))
    _expect_error("hashchain.malformed", lambda: _run(_result(), {"/hashchain.xml": chain}))


def test_schema_loader_never_fetches() -> None:
    resolver = hashchain._SchemaResolver()
    with pytest.raises(HashChainError):
        resolver.resolve("http://www.w3.org/TR/xmldsig-core/other.xsd", None, None)
    assert hashchain._schema() is hashchain._schema()
