# test-case-name: tests.test_hashchain
"""X-Road hash chains (``http://cyber.ee/hashchain``): verification and batch building.

A batch signature signs one *hash chain result* document.  It names a step of a hash
chain (``/sig-hashchain.xml#STEP0``) and carries the digest of that step.  Every message
of the batch gets its own hash chain document, which lists the steps from the top of a
Merkle tree down to the message (and its attachments).

The value of a step is the DER encoding of ``SEQUENCE OF SingleDigest`` with one entry
per child element, in document order::

    SingleDigest ::= SEQUENCE {
        digest        OCTET STRING,
        digestMethod  UTF8String,    -- algorithm URI
        transforms    SEQUENCE {} }  -- always empty

``HashValue`` contributes its ``ds:DigestValue``; ``StepRef`` the digest of the referenced
step's DER value; ``DataRef`` the digest of the referenced data (after ``ds:Transforms``),
which must equal its ``ds:DigestValue``.  The chain verifies when the digest of the step
named by the result equals the result's ``ds:DigestValue``.

This module is pure: documents and data arrive as bytes through arguments and callbacks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import NamedTuple

from lxml import etree  # type: ignore[import-untyped,unused-ignore]

from protocols.errors import HashChainError, XmlError
from protocols.xmlsafe import parse_xml

__all__ = [
    "C14N_10_URI",
    "DIGEST_URIS",
    "HASHCHAIN_NS",
    "MAX_CHAIN_DOCUMENTS",
    "MAX_CHAIN_DOCUMENT_BYTES",
    "MAX_STEPS",
    "MAX_STEP_DEPTH",
    "SHA256_URI",
    "SHA384_URI",
    "SHA512_URI",
    "BatchChains",
    "DigestInput",
    "build_batch",
    "compute_digest",
    "digest_list_der",
    "digest_uri_for_hash",
    "hash_name_for_uri",
    "step_digest",
    "verify_hash_chain",
]

HASHCHAIN_NS = "http://cyber.ee/hashchain"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"

SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA384_URI = "http://www.w3.org/2001/04/xmldsig-more#sha384"
SHA512_URI = "http://www.w3.org/2001/04/xmlenc#sha512"

#: Canonical XML 1.0 without comments, the only DataRef transform supported.
C14N_10_URI = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"

#: digest algorithm URI -> hashlib name
DIGEST_URIS: Mapping[str, str] = {
    SHA256_URI: "sha256",
    SHA384_URI: "sha384",
    SHA512_URI: "sha512",
}
_HASH_TO_URI = {name: uri for uri, name in DIGEST_URIS.items()}
_DIGEST_SIZES = {uri: hashlib.new(name).digest_size for uri, name in DIGEST_URIS.items()}

#: Hostile-input bounds for the verifier.
MAX_CHAIN_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_CHAIN_DOCUMENTS = 16
MAX_STEPS = 4096
MAX_STEP_DEPTH = 128

_MALFORMED = ("hashchain.malformed", "MalformedHashChain")
_INVALID = ("hashchain.invalid", "InvalidHashChain")
_INVALID_REF = ("hashchain.invalid_ref", "InvalidHashChainRef")
_UNUSED = ("hashchain.unused_inputs", "HashChainUnusedInputs")
_INVALID_REFERENCE = ("hashchain.invalid_reference", "InvalidReference")


def _error(kind: tuple[str, str], message: str) -> HashChainError:
    return HashChainError(message, code=kind[0], xroad_code=kind[1])


class DigestInput(NamedTuple):
    """A digest together with the URI of the algorithm that made it."""

    digest_method: str
    digest: bytes


# --------------------------------------------------------------------------- digests


def hash_name_for_uri(uri: str) -> str:
    """The hashlib name (``"sha512"``) for a digest algorithm URI; ``ValueError`` if unsupported."""
    try:
        return DIGEST_URIS[uri]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {uri!r}") from None


def digest_uri_for_hash(name: str) -> str:
    """The digest algorithm URI for a hash name (``"sha512"``, ``"SHA-512"``).

    Raises ``ValueError`` if unsupported.
    """
    try:
        return _HASH_TO_URI[name.lower().replace("-", "")]
    except KeyError:
        raise ValueError(f"unsupported hash algorithm {name!r}") from None


def compute_digest(digest_uri: str, data: bytes) -> bytes:
    """Digest ``data`` with the algorithm named by ``digest_uri``."""
    return hashlib.new(hash_name_for_uri(digest_uri), data).digest()


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


@cache
def _method_suffix(digest_method: str) -> bytes:
    """DER of ``digestMethod UTF8String`` followed by the empty ``transforms`` SEQUENCE."""
    raw = digest_method.encode("utf-8")
    return b"\x0c" + _der_length(len(raw)) + raw + b"\x30\x00"


def _single_digest(digest_method: str, digest: bytes) -> bytes:
    body = b"\x04" + _der_length(len(digest)) + digest + _method_suffix(digest_method)
    return b"\x30" + _der_length(len(body)) + body


def digest_list_der(items: Sequence[DigestInput]) -> bytes:
    """DER ``SEQUENCE OF SingleDigest`` for ``items`` (the value of a hash step)."""
    body = b"".join([_single_digest(m, d) for m, d in items])
    return b"\x30" + _der_length(len(body)) + body


def step_digest(digest_uri: str, items: Sequence[DigestInput]) -> bytes:
    """Digest (with ``digest_uri``) of the DER value of a step made of ``items``."""
    return compute_digest(digest_uri, digest_list_der(items))


# --------------------------------------------------------------------------- schema


class _SchemaResolver(etree.Resolver):  # type: ignore[misc,unused-ignore]
    """Serves the packaged schemas; refuses every other URL (never the network)."""

    def resolve(  # type: ignore[override,unused-ignore]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> object:
        name = (system_url or "").rsplit("/", 1)[-1]
        if name in ("hashchain.xsd", "xmldsig-core-schema.xsd"):
            data = (resources.files("protocols") / "xsd" / name).read_bytes()
            return self.resolve_string(data, context, base_url=system_url)
        raise HashChainError(f"schema loader refused to fetch {system_url!r}", code="hashchain.schema_load")


@cache
def _schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_SchemaResolver())
    data = (resources.files("protocols") / "xsd" / "hashchain.xsd").read_bytes()
    doc = etree.fromstring(data, parser, base_url="vdxp-xsd:///hashchain.xsd")
    return etree.XMLSchema(doc)


_HC = "{" + HASHCHAIN_NS + "}"
_DS = "{" + DS_NS + "}"
_TAG_CHAIN = _HC + "HashChain"
_TAG_RESULT = _HC + "HashChainResult"
_TAG_STEP = _HC + "HashStep"
_TAG_DEFAULT = _HC + "DefaultDigestMethod"
_TAG_HASH_VALUE = _HC + "HashValue"
_TAG_STEP_REF = _HC + "StepRef"
_TAG_DATA_REF = _HC + "DataRef"
_TAG_DIGEST_METHOD = _DS + "DigestMethod"
_TAG_DIGEST_VALUE = _DS + "DigestValue"
_TAG_TRANSFORMS = _DS + "Transforms"


def _parse_validated(data: bytes, root_tag: str, what: str) -> etree._Element:
    try:
        root = parse_xml(data, max_bytes=MAX_CHAIN_DOCUMENT_BYTES)
    except XmlError as exc:
        raise _error(_MALFORMED, f"{what} is not acceptable XML: {exc.message}") from exc
    try:
        _schema().assertValid(root)
    except etree.DocumentInvalid as exc:
        raise _error(_MALFORMED, f"{what} does not conform to hashchain.xsd: {exc}") from exc
    if root.tag != root_tag:
        raise _error(_MALFORMED, f"{what} has root element {root.tag}, expected {root_tag}")
    return root


def _decode_b64(text: str | None, where: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _error(_MALFORMED, f"bad base64 DigestValue in {where}") from exc


def _algorithm(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    value: str | None = el.get("Algorithm")
    return value


# --------------------------------------------------------------------------- verification


class _Chain:
    __slots__ = ("default_method", "steps", "uri")

    def __init__(self, uri: str, root: etree._Element) -> None:
        self.uri = uri
        self.default_method = _algorithm(root.find(_TAG_DEFAULT))
        self.steps: dict[str, etree._Element] = {}
        for step in root.iterchildren(_TAG_STEP):
            step_id = step.get("id")
            if step_id is not None:
                self.steps[step_id] = step


class _Verifier:
    def __init__(
        self,
        resolver: Callable[[str], bytes | None],
        inputs: Mapping[str, DigestInput | None],
        should_resolve: Callable[[str, bytes], bool],
    ) -> None:
        self.resolver = resolver
        self.inputs = inputs
        self.should_resolve = should_resolve
        self.chains: dict[str, _Chain] = {}
        self.step_values: dict[tuple[str, str], bytes] = {}
        self.in_progress: set[tuple[str, str]] = set()
        self.used_inputs: set[str] = set()

    # -- documents

    def chain(self, uri: str) -> _Chain:
        found = self.chains.get(uri)
        if found is not None:
            return found
        if len(self.chains) >= MAX_CHAIN_DOCUMENTS:
            raise _error(_MALFORMED, f"hash chain spans more than {MAX_CHAIN_DOCUMENTS} documents")
        data = self.resolver(uri)
        if data is None:
            raise _error(_INVALID_REFERENCE, f"cannot resolve hash chain URI {uri}")
        chain = _Chain(uri, _parse_validated(data, _TAG_CHAIN, f"hash chain {uri}"))
        self.chains[uri] = chain
        return chain

    # -- steps

    def step_value(self, uri: str, current: _Chain | None, depth: int) -> bytes:
        """The DER value of the step named by ``uri`` (``#ID`` or ``/doc#ID``)."""
        base, sep, fragment = uri.partition("#")
        if not sep or not fragment:
            raise _error(_MALFORMED, f"invalid hash step URI {uri!r} (no fragment)")
        if base:
            chain = self.chain(base)
        elif current is not None:
            chain = current
        else:
            raise _error(_MALFORMED, f"hash chain result URI {uri!r} names no hash chain document")
        key = (chain.uri, fragment)
        cached = self.step_values.get(key)
        if cached is not None:
            return cached
        step = chain.steps.get(fragment)
        if step is None:
            raise _error(_MALFORMED, f"invalid hash step URI {uri!r} (no such step in {chain.uri})")
        if key in self.in_progress:
            raise _error(_MALFORMED, f"hash step {chain.uri}#{fragment} refers to itself (reference cycle)")
        if depth > MAX_STEP_DEPTH:
            raise _error(_MALFORMED, f"hash steps nested deeper than {MAX_STEP_DEPTH}")
        if len(self.step_values) + len(self.in_progress) >= MAX_STEPS:
            raise _error(_MALFORMED, f"hash chain has more than {MAX_STEPS} steps")
        self.in_progress.add(key)
        items = [self.value(child, chain, depth) for child in step.iterchildren(etree.Element)]
        self.in_progress.discard(key)
        value = digest_list_der(items)
        self.step_values[key] = value
        return value

    def method(self, el: etree._Element, chain: _Chain) -> str:
        uri = _algorithm(el.find(_TAG_DIGEST_METHOD)) or chain.default_method
        if uri is None:
            raise _error(_MALFORMED, f"{etree.QName(el).localname} in {chain.uri} has no digest method "
                                     "and the chain has no DefaultDigestMethod")
        if uri not in DIGEST_URIS:
            raise _error(_MALFORMED, f"unsupported digest algorithm {uri!r} in {chain.uri}")
        return uri

    def value(self, el: etree._Element, chain: _Chain, depth: int) -> DigestInput:
        tag = el.tag
        method = self.method(el, chain)
        if tag == _TAG_HASH_VALUE:
            return DigestInput(method, _decode_b64(el.findtext(_TAG_DIGEST_VALUE), chain.uri))
        if tag == _TAG_STEP_REF:
            ref = el.get("URI") or ""
            return DigestInput(method, compute_digest(method, self.step_value(ref, chain, depth + 1)))
        if tag == _TAG_DATA_REF:
            return self.data_ref(el, chain, method)
        raise _error(_MALFORMED, f"unexpected element {tag} in hash step")  # pragma: no cover (schema)

    def data_ref(self, el: etree._Element, chain: _Chain, method: str) -> DigestInput:
        uri = el.get("URI") or ""
        if uri in self.inputs:
            self.used_inputs.add(uri)
            given = self.inputs[uri]
            if given is not None and given.digest_method == method:
                return given
        written = _decode_b64(el.findtext(_TAG_DIGEST_VALUE), f"DataRef {uri} of {chain.uri}")
        if not self.should_resolve(uri, written):
            return DigestInput(method, written)
        transforms = el.find(_TAG_TRANSFORMS)
        algorithms = [] if transforms is None else [t.get("Algorithm") for t in transforms]
        for algorithm in algorithms:
            if algorithm != C14N_10_URI:
                raise _error(_MALFORMED, f"unsupported transform {algorithm!r} on DataRef {uri}")
        data = self.resolver(uri)
        if data is None:
            raise _error(_INVALID_REFERENCE, f"cannot resolve URI {uri}")
        if algorithms:
            data = _c14n(data, uri)
        digest = compute_digest(method, data)
        if digest != written:
            raise _error(_INVALID_REF, f"invalid digest value in hash chain reference to {uri}")
        return DigestInput(method, digest)


def _c14n(data: bytes, uri: str) -> bytes:
    try:
        root = parse_xml(data)
    except XmlError as exc:
        raise _error(_INVALID_REF, f"data of {uri} cannot be canonicalized: {exc.message}") from exc
    out: bytes = etree.tostring(root.getroottree(), method="c14n", exclusive=False, with_comments=False)
    return out


def verify_hash_chain(
    result_xml: bytes,
    resolver: Callable[[str], bytes | None],
    inputs: Mapping[str, DigestInput | None],
    should_resolve: Callable[[str, bytes], bool] = lambda uri, digest: True,
) -> None:
    """Verify that the hash chain result covers every one of ``inputs``; raise on failure.

    ``resolver(uri)`` returns the bytes of a hash chain document or of referenced data,
    or ``None`` when it cannot (``hashchain.invalid_reference``).  ``inputs`` maps the URI
    of every part that must be covered to its digest, or to ``None`` to have the data
    fetched through ``resolver`` and digested.  A given digest is used as-is when its
    algorithm equals the DataRef's (the DataRef's own DigestValue is then not compared).
    ``should_resolve(uri, dataref_digest)`` returning ``False`` makes the verifier trust a
    DataRef's DigestValue without fetching the data.

    Raises :class:`HashChainError` with code ``hashchain.malformed`` (schema failure, bad
    step URI, cycle, limits), ``hashchain.invalid`` (result mismatch),
    ``hashchain.invalid_ref`` (data digest differs from a DataRef),
    ``hashchain.unused_inputs`` or ``hashchain.invalid_reference``.
    """
    root = _parse_validated(result_xml, _TAG_RESULT, "hash chain result")
    method = _algorithm(root.find(_TAG_DIGEST_METHOD))
    if method is None:
        raise _error(_MALFORMED, "hash chain result has no DigestMethod")
    if method not in DIGEST_URIS:
        raise _error(_MALFORMED, f"unsupported digest algorithm {method!r} in hash chain result")
    expected = _decode_b64(root.findtext(_TAG_DIGEST_VALUE), "hash chain result")
    verifier = _Verifier(resolver, inputs, should_resolve)
    value = verifier.step_value(root.get("URI") or "", None, 0)
    if compute_digest(method, value) != expected:
        raise _error(_INVALID, "hash chain result does not match the hash chain calculation")
    unused = sorted(set(inputs) - verifier.used_inputs)
    if unused:
        raise _error(_UNUSED, f"inputs not referenced by the hash chain: {', '.join(unused)}")


# --------------------------------------------------------------------------- building

_XML_DECL = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_OPEN_CHAIN = f'<ns2:HashChain xmlns="{DS_NS}" xmlns:ns2="{HASHCHAIN_NS}">'
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                               "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"})


def _attr(value: str) -> str:
    return value.translate(_ATTR_ESCAPES)


@dataclass(frozen=True)
class BatchChains:
    """The output of :func:`build_batch`.

    ``result_xml`` is the shared ``HashChainResult`` (what the signature references as
    ``/sig-hashchainresult.xml``); ``top_digest`` its DigestValue; ``chains[i]`` the
    ``HashChain`` document of input ``i`` (to be served as ``chain_uri``).
    """

    result_xml: bytes
    top_digest: bytes
    digest_uri: str
    chain_uri: str
    chains: tuple[bytes, ...]


class _Node:
    """A Merkle tree node: a leaf (one input) or the pair of its children."""

    __slots__ = ("children", "digest", "leaf", "parent")

    def __init__(self, digest: bytes, leaf: int = -1, children: tuple[_Node, _Node] | None = None) -> None:
        self.digest = digest
        self.leaf = leaf
        self.children = children
        self.parent: _Node | None = None


def build_batch(
    inputs: Sequence[Sequence[tuple[str, bytes]]],
    *,
    digest_uri: str = SHA512_URI,
    chain_uri: str = "/sig-hashchain.xml",
) -> BatchChains:
    """Build the hash chains of a signing batch.

    ``inputs[i]`` lists the parts of message ``i`` as ``(uri, digest)``: first the message
    (``/message.xml``), then its attachments (``/attachment1``, ...), every digest made
    with ``digest_uri``.  A message with attachments becomes one leaf whose step lists
    its parts as DataRefs.  A single message without attachments raises ``ValueError``
    (X-Road signs such a message directly, without a hash chain).
    """
    size = _DIGEST_SIZES.get(digest_uri)
    if size is None:
        raise ValueError(f"unsupported digest algorithm {digest_uri!r}")
    if not inputs:
        raise ValueError("a batch needs at least one input")
    if "#" in chain_uri or not chain_uri:
        raise ValueError(f"chain URI {chain_uri!r} must be non-empty and have no fragment")
    for parts in inputs:
        if not parts:
            raise ValueError("every input needs at least its message part")
        for uri, digest in parts:
            if len(digest) != size:
                raise ValueError(f"digest of {uri!r} has {len(digest)} bytes, expected {size}")
    if len(inputs) == 1 and len(inputs[0]) == 1:
        raise ValueError("a single message without attachments is signed directly, not with a hash chain")

    suffix = _method_suffix(digest_uri)
    hash_name = DIGEST_URIS[digest_uri]
    new = hashlib.new

    def pair_digest(a: bytes, b: bytes) -> bytes:
        # digest_list_der([a, b]) inlined: this loop is the signer's hot path.
        sa = b"\x04" + _der_length(len(a)) + a + suffix
        sb = b"\x04" + _der_length(len(b)) + b + suffix
        body = b"\x30" + _der_length(len(sa)) + sa + b"\x30" + _der_length(len(sb)) + sb
        return new(hash_name, b"\x30" + _der_length(len(body)) + body).digest()

    leaves: list[_Node] = []
    for index, parts in enumerate(inputs):
        if len(parts) == 1:
            leaves.append(_Node(parts[0][1], index))
        else:
            items = [DigestInput(digest_uri, d) for _, d in parts]
            leaves.append(_Node(new(hash_name, digest_list_der(items)).digest(), index))

    level = leaves
    while len(level) > 1:
        upper: list[_Node] = []
        for i in range(0, len(level) - 1, 2):
            left, right = level[i], level[i + 1]
            node = _Node(pair_digest(left.digest, right.digest), children=(left, right))
            left.parent = right.parent = node
            upper.append(node)
        if len(level) % 2:
            upper.append(level[-1])  # odd one out moves up unchanged
        level = upper
    root = level[0]

    # The digest of DER(STEP0): STEP0 lists either the root's two children or, for a single
    # input with attachments, that input's parts; both are exactly root.digest.
    top = root.digest
    b64 = base64.b64encode
    b64_cache: dict[int, str] = {}

    def b64_of(node: _Node) -> str:
        key = id(node)
        text = b64_cache.get(key)
        if text is None:
            text = b64(node.digest).decode("ascii")
            b64_cache[key] = text
        return text

    default = f'<ns2:DefaultDigestMethod Algorithm="{_attr(digest_uri)}"/>'
    head = _OPEN_CHAIN + default
    chains: list[bytes] = []
    for leaf, parts in zip(leaves, inputs, strict=True):
        path: list[_Node] = []
        walk: _Node | None = leaf
        while walk is not None:
            path.append(walk)
            walk = walk.parent
        path.reverse()  # root first
        out = [head]
        step = 0
        for parent, child in itertools.pairwise(path):
            assert parent.children is not None
            out.append(f'<ns2:HashStep id="STEP{step}">')
            for sibling in parent.children:
                if sibling is not child:
                    out.append(f"<ns2:HashValue><DigestValue>{b64_of(sibling)}</DigestValue></ns2:HashValue>")
                elif child is leaf and len(parts) == 1:
                    uri = _attr(parts[0][0])
                    out.append(f'<ns2:DataRef URI="{uri}"><DigestValue>{b64_of(child)}</DigestValue>'
                               "</ns2:DataRef>")
                else:
                    out.append(f'<ns2:StepRef URI="#STEP{step + 1}"/>')
            out.append("</ns2:HashStep>")
            step += 1
        if len(parts) > 1:
            out.append(f'<ns2:HashStep id="STEP{step}">')
            for uri, digest in parts:
                out.append(f'<ns2:DataRef URI="{_attr(uri)}"><DigestValue>{b64(digest).decode("ascii")}'
                           "</DigestValue></ns2:DataRef>")
            out.append("</ns2:HashStep>")
        out.append("</ns2:HashChain>")
        chains.append(_XML_DECL + "".join(out).encode("utf-8"))

    result = (
        f'<ns2:HashChainResult xmlns="{DS_NS}" xmlns:ns2="{HASHCHAIN_NS}" URI="{_attr(chain_uri)}#STEP0">'
        f'<DigestMethod Algorithm="{_attr(digest_uri)}"/>'
        f"<DigestValue>{b64(top).decode('ascii')}</DigestValue></ns2:HashChainResult>"
    )
    return BatchChains(
        result_xml=_XML_DECL + result.encode("utf-8"),
        top_digest=top,
        digest_uri=digest_uri,
        chain_uri=chain_uri,
        chains=tuple(chains),
    )
