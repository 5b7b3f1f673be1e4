"""The hardened XML parser every other module uses.

Refuses DTDs (so no entity expansion, no billion laughs, no external entities), never
touches the network, bounds nesting depth and document size.  Returns lxml elements.
"""

from __future__ import annotations

from lxml import etree

from protocols.errors import XmlError

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 256
# libxml2 refuses documents nested deeper than this without XML_PARSE_HUGE (huge_tree=False):
# up to it, the parser's own check is enough and the tree need not be walked again in Python.
_LIBXML2_MAX_DEPTH = 256

def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, dtd_validation=False, load_dtd=False,
                           huge_tree=False, remove_comments=False, remove_pis=False)


def parse_xml(data: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES, max_depth: int = MAX_DEPTH) -> etree._Element:
    """Parse ``data`` into an element tree, refusing hostile input.

    Raises :class:`XmlError` with code ``xml.too_large``, ``xml.dtd_forbidden``,
    ``xml.too_deep`` or ``xml.malformed``.
    """
    if len(data) > max_bytes:
        raise XmlError(f"XML document of {len(data)} bytes exceeds the limit of {max_bytes}",
                       code="xml.too_large")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        if "Excessive depth" in str(exc):
            raise XmlError(f"XML nesting deeper than {max_depth} levels", code="xml.too_deep") from exc
        raise XmlError(f"malformed XML: {exc}", code="xml.malformed") from exc
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
        raise XmlError("XML with a DOCTYPE/DTD is not accepted", code="xml.dtd_forbidden")
    if max_depth < _LIBXML2_MAX_DEPTH:
        _check_depth(root, max_depth)
    return root


def _check_depth(root: etree._Element, max_depth: int) -> None:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > max_depth:
            raise XmlError(f"XML nesting deeper than {max_depth} levels", code="xml.too_deep")
        stack.extend((child, depth + 1) for child in el)
