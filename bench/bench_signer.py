"""Signed messages per second through the signer, on a real SoftHSM2 token.

A "signed message" is one for which the caller got back what it embeds: the XAdES
signature document (over the message, or over a hash-chain result) plus its own hash
chain.  For RSA-2048 and EC P-256, batch signing off and on, at 1, 10 and 100
concurrent requesters, each requester signing a new message as soon as the last one
returned.  The first row per key type is the raw token: one thread calling
C_Sign on a precomputed digest in a loop, nothing else.

    .venv/bin/python bench/bench_signer.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def setup_token(directory: Path) -> Any:
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    from hsm.config import PinSource, TokenSpec, resolve_module
    from hsm.inittoken import init_token
    from hsm.p11thread import ModuleThread
    from hsm.token import Token

    module = resolve_module(None)
    pin = directory / "pin"
    fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"bench-pin-1234")
    os.close(fd)
    ModuleThread.for_module(module).call(init_token, module, "bench", "bench-so-5678", "bench-pin-1234")
    return Token(TokenSpec(id="bench", label="bench", pin=PinSource(file=pin), module=module))


def signing_key(token: Any, key_type: str) -> Any:
    from hsm.signer import SigningKey, resolve_mechanism
    from tests.pki_support import TestCa

    ca = TestCa()
    info = token.generate_key(key_type, usage="sign", member="VN-TEST/GOV/000.00.00.H41")
    cert = ca.issue(info.public_key(), "Bench", serial_number="000.00.00.H41", business_category="GOV")
    return SigningKey(token=token, key_id=info.key_id, key_type=key_type,
                      mechanism=resolve_mechanism("auto", key_type), cert=cert, extra_certs=(ca.cert,))


def raw_rate(token: Any, key: Any, seconds: float) -> float:
    digest = hashlib.sha512(b"raw").digest()

    def loop() -> int:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            token.t_sign(key.key_id, key.mechanism, digest, "sha512")
            n += 1
        return n

    return float(token.call(loop)) / seconds


async def signer_rate(reactor: Any, key: Any, batch: bool, concurrency: int, seconds: float) -> tuple[float, float]:
    from twisted.internet import defer

    from hsm.signer import MessageSigner

    signer = MessageSigner(reactor, key, batch_signing=batch)
    done = 0
    end = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal done
        n = 0
        while time.perf_counter() < end:
            msg = f"<soap>client {i} message {n}</soap>".encode()
            await signer.sign([("/message.xml", signer.digest(msg))])
            n += 1
            done += 1

    started = time.perf_counter()
    await defer.gatherResults([defer.Deferred.fromCoroutine(client(i)) for i in range(concurrency)])
    elapsed = time.perf_counter() - started
    return done / elapsed, done / max(signer.operations, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    args = parser.parse_args()

    from twisted.internet import defer, task

    rows: list[tuple[str, str, str, str, str]] = []

    async def run(reactor: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="vdxp-bench-") as tmp:
            token = setup_token(Path(tmp))
            for key_type, label in (("rsa", "RSA-2048"), ("ec", "EC P-256")):
                key = signing_key(token, key_type)
                rows.append((label, "raw C_Sign, 1 thread", "-", f"{raw_rate(token, key, args.seconds):,.0f}", "1.0"))
                for batch in (False, True):
                    for concurrency in (1, 10, 100):
                        rate, per_op = await signer_rate(reactor, key, batch, concurrency, args.seconds)
                        rows.append((label, f"batch signing {'on' if batch else 'off'}", str(concurrency),
                                     f"{rate:,.0f}", f"{per_op:.1f}"))
        print_table(rows, args.seconds)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))  # type: ignore[arg-type]


def print_table(rows: list[tuple[str, str, str, str, str]], seconds: float) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"SoftHSM2 via python-pkcs11, one PKCS#11 thread; {seconds:g} s per row; digest SHA-512")
    header = ("key", "mode", "concurrent", "signed messages/s", "messages per HSM operation")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.rjust(w) if i >= 2 else c.ljust(w)
                                for i, (c, w) in enumerate(zip(r, widths, strict=True))) + " |")


if __name__ == "__main__":
    main()
