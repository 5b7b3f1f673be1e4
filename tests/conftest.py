"""Shared test fixtures.  Area-specific helpers live in ``tests/<area>_support.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VECTORS = (ROOT.parent / "shared" / "vectors") if (ROOT.parent / "shared" / "vectors").is_dir() else ROOT / "tests" / "vectors"


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The X-Road and edXML conformance vectors (``../shared/vectors``)."""
    assert VECTORS.is_dir(), f"conformance vectors not found at {VECTORS}"
    return VECTORS
