"""Shared test fixtures.  Area-specific helpers live in ``tests/<area>_support.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# A copy of ../shared/vectors (X-Road's own conformance data), so a bare clone tests itself.
VECTORS = ROOT / "tests" / "vectors"


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The X-Road conformance vectors (copied from ``../shared/vectors``)."""
    assert VECTORS.is_dir(), f"conformance vectors not found at {VECTORS}"
    return VECTORS
