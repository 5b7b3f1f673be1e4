"""Keys named by the configuration, opened on their tokens.

One :class:`hsm.token.Token` per configured token per process (they share their
module's PKCS#11 thread).  Resolves ``members[].sign_key`` and the TSA key into
the objects the signer and the development TSA use.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.config import GatewayConfig, load_config
from hsm.config import KeyRef
from hsm.signer import SigningKey, TokenDigestSigner, resolve_mechanism
from hsm.token import HsmError, KeyInfo, Token

_tokens: dict[tuple[str, str | None, str | None, str | None], Token] = {}


def token_for(config: GatewayConfig, token_id: str) -> Token:
    spec = config.token(token_id)
    key = (spec.module_path(), spec.label, spec.serial, spec.id)
    token = _tokens.get(key)
    if token is None or token.spec != spec:
        token = _tokens[key] = Token(spec)
    return token


def find_key(config: GatewayConfig, ref: KeyRef) -> tuple[Token, KeyInfo]:
    token = token_for(config, ref.token)
    return token, token.find_key(key_id=ref.key_id, label=ref.label)


def signing_key(config: GatewayConfig, member_id: str) -> SigningKey:
    """The signing key of ``member_id`` with its certificate (from the token)."""
    member = config.member(member_id)
    token, info = find_key(config, member.sign_key)
    if not info.certificates:
        raise HsmError(f"the signing key of {member_id} ({info.key_id}) has no certificate on token "
                       f"{token.spec.id}; import one with `vdxp-gateway cert import`", code="hsm.cert_missing")
    cert = max(info.certificates, key=lambda c: c.not_valid_after_utc)
    return SigningKey(token=token, key_id=info.key_id, key_type=info.key_type,
                      mechanism=resolve_mechanism(token.spec.sign_mechanism, info.key_type), cert=cert)


def open_digest_signer(config_path: str | os.PathLike[str], key_label: str, reactor: Any) -> TokenDigestSigner:
    """A digest signer for the key labelled (or with CKA_ID) ``key_label`` on any configured token."""
    config = load_config(config_path)
    for spec in config.tokens:
        token = token_for(config, spec.id)
        for info in token.list_keys():
            if key_label in (info.label, info.key_id):
                return TokenDigestSigner(reactor, token, info.key_id, info.key_type,
                                         resolve_mechanism(spec.sign_mechanism, info.key_type))
    raise HsmError(f"no key labelled {key_label!r} on the configured tokens", code="hsm.key_not_found")
