"""The hardened XML parser: nesting depth, DTDs, size."""

from __future__ import annotations

import pytest

from protocols.errors import XmlError
from protocols.xmlsafe import MAX_DEPTH, parse_xml


def _nested(depth: int) -> bytes:
    return b"<a>" * depth + b"</a>" * depth


@pytest.mark.parametrize("max_depth", [MAX_DEPTH, 10])
def test_depth_is_bounded_exactly(max_depth: int) -> None:
    assert parse_xml(_nested(max_depth), max_depth=max_depth).tag == "a"
    with pytest.raises(XmlError) as info:
        parse_xml(_nested(max_depth + 1), max_depth=max_depth)
    assert info.value.code == "xml.too_deep"


def test_deeply_nested_hostile_document_is_refused_quickly() -> None:
    with pytest.raises(XmlError) as info:
        parse_xml(_nested(100_000))
    assert info.value.code == "xml.too_deep"


def test_dtd_and_size_are_refused() -> None:
    with pytest.raises(XmlError) as info:
        parse_xml(b'<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>')
    assert info.value.code == "xml.dtd_forbidden"
    with pytest.raises(XmlError) as info:
        parse_xml(b"<a>" + b"x" * 100 + b"</a>", max_bytes=50)
    assert info.value.code == "xml.too_large"
    with pytest.raises(XmlError) as info:
        parse_xml(b"<a><b></a>")
    assert info.value.code == "xml.malformed"
