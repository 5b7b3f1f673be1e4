"""Errors of the global configuration code (``gconf.<reason>``).

Every :class:`GlobalConfError` carries our stable code, the X-Road 7.7 fault code
(``xroad_code``, CamelCase) and the X-Road 7.8 code (``xroad_code_7_8``, lower snake
case) where X-Road reports the same condition.  The table :data:`REASONS` is the single
place that ties the three together.
"""

from __future__ import annotations

from collections.abc import Mapping

from protocols.errors import VdxpError

__all__ = ["REASONS", "GlobalConfError", "gconf_error"]

#: code -> (X-Road 7.7 code, X-Road 7.8 code)
REASONS: Mapping[str, tuple[str | None, str | None]] = {
    # structure of the signed directory
    "gconf.too_large": ("MalformedGlobalConf", "global_conf_parsing_downloaded_conf_directory_failure"),
    "gconf.malformed": ("MalformedGlobalConf", "global_conf_parsing_downloaded_conf_directory_failure"),
    "gconf.missing_signed_data": ("MalformedGlobalConf", "global_conf_missing_signed_data"),
    # X-Road reads the signed data, never meets a signature part and so never parses the header
    # part: it ends up "without an expiration date".
    "gconf.missing_signature": ("MalformedGlobalConf", "global_conf_missing_signed_data_expiration_date"),
    "gconf.header_missing": ("MalformedGlobalConf", "global_conf_header_field_missing"),
    "gconf.header_parameter_missing": ("MalformedGlobalConf", "global_conf_header_field_missing_parameter"),
    "gconf.header_wrong_value": ("MalformedGlobalConf", "global_conf_header_field_wrong_value"),
    "gconf.version_missing": ("MalformedGlobalConf", "global_conf_header_field_missing"),
    "gconf.version_mismatch": ("MalformedGlobalConf", "global_conf_header_field_wrong_value"),
    "gconf.unsupported_algorithm": ("MalformedGlobalConf", None),
    # signature
    "gconf.signature_decode": ("InvalidSignatureValue", "global_conf_signature_decode_failure"),
    "gconf.missing_verification_cert": ("CertNotFound", "global_conf_missing_verification_cert"),
    "gconf.signature_invalid": ("InvalidSignatureValue", "global_conf_signature_verification_failure"),
    # freshness and content
    "gconf.expired": ("OutdatedGlobalConf", "global_conf_outdated"),
    "gconf.hash_mismatch": ("IOError", "global_conf_part_downloaded_file_integrity_failure"),
    # anchors
    "gconf.anchor_invalid": ("MalformedAnchor", "malformed_anchor"),
    # building (our own programming/configuration errors; no X-Road counterpart)
    "gconf.build_invalid": (None, None),
}


class GlobalConfError(VdxpError):
    """A configuration directory or anchor is unusable.  ``code`` is ``gconf.<reason>``."""

    code = "gconf.invalid"
    xroad_code: str | None = "MalformedGlobalConf"
    xroad_code_7_8: str | None = "malformed_global_conf"

    def __init__(self, message: str, *, code: str | None = None, xroad_code: str | None = None,
                 xroad_code_7_8: str | None = None) -> None:
        super().__init__(message, code=code, xroad_code=xroad_code)
        if xroad_code_7_8 is not None:
            self.xroad_code_7_8 = xroad_code_7_8


def gconf_error(code: str, message: str) -> GlobalConfError:
    """A :class:`GlobalConfError` with ``code`` (a key of :data:`REASONS`) and its X-Road codes."""
    x77, x78 = REASONS[code]
    err = GlobalConfError(message, code=code)
    err.xroad_code = x77
    err.xroad_code_7_8 = x78
    return err
