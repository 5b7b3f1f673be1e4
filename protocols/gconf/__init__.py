"""X-Road global configuration: anchors and signed configuration directories (PR-GCONF).

* :mod:`protocols.gconf.anchor` — ``configurationAnchor`` documents, certificate hashes.
* :mod:`protocols.gconf.directory` — signed directories: parse, verify, build.
* :mod:`protocols.gconf.errors` — :class:`GlobalConfError` (``gconf.<reason>``).

Pure code: documents arrive as bytes, the clock as an argument.
"""

from __future__ import annotations

from protocols.gconf.errors import GlobalConfError

__all__ = ["GlobalConfError"]
