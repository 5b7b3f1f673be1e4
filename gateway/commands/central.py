"""``vdxp-gateway central serve``: the development central server (see :mod:`gateway.central`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from protocols.errors import UsageError, VdxpError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("central", help="development central server: signed global configuration over HTTP",
                       description="Build the federation's global configuration from a YAML description, sign it "
                                   "with a key on a PKCS#11 token and serve it as an X-Road central server does "
                                   "(/internalconf, /externalconf, /V6/...), regenerating it periodically.")
    csub = p.add_subparsers(dest="central_command", metavar="ACTION", required=True)
    serve = csub.add_parser("serve", help="generate, sign and serve until stopped (SIGTERM)")
    serve.add_argument("-c", "--config", type=Path, required=True, help="federation description (YAML)")
    serve.add_argument("--listen", help="Twisted endpoint (default: listen: of the description)")
    serve.set_defaults(func=_serve)
    gen = csub.add_parser("generate", help="generate and sign one configuration and the anchor, then exit")
    gen.add_argument("-c", "--config", type=Path, required=True, help="federation description (YAML)")
    gen.set_defaults(func=_generate)


def _react(main: Any) -> int:
    from twisted.internet import defer, task

    failure: list[BaseException] = []

    async def run(reactor: Any) -> None:
        try:
            await main(reactor)
        except Exception as exc:
            failure.append(exc)

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as exc:
        if exc.code:
            return int(exc.code)
    if failure:
        raise failure[0]
    return 0


def _generate(args: argparse.Namespace) -> int:
    from gateway.central import Central

    async def main(reactor: Any) -> None:
        central = Central(reactor, args.config)
        if not central.fed.raw.public_url:
            raise UsageError("public_url must be set for `central generate`", code="config.invalid")
        name = await central.generate()
        anchor = central.write_anchor(central._signer[1])
        print(f"generated {name}; anchor {anchor}")

    return _react(main)


def _serve(args: argparse.Namespace) -> int:
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.web.server import Site

    from gateway.central import Central, CentralResource

    async def main(reactor: Any) -> None:
        from twisted.internet.defer import Deferred

        observer: Any = textFileLogObserver(sys.stderr)
        globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
        central = Central(reactor, args.config)
        listen = args.listen or central.fed.raw.listen
        try:
            endpoint = serverFromString(reactor, listen)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"bad listen endpoint {listen!r}: {exc}") from None
        site = Site(CentralResource(central.fed.output))  # type: ignore[no-untyped-call]
        site.noisy = False
        try:
            port = await endpoint.listen(site)
        except Exception as exc:
            raise VdxpError(f"cannot listen on {listen}: {exc}", code="central.listen_failed") from None
        host = port.getHost()
        central.bound_url = f"http://{host.host}:{host.port}"
        await central.generate()
        anchor = central.write_anchor(central._signer[1])
        sys.stdout.write(f"central listening on http://{host.host}:{host.port}/ ; anchor {anchor}\n")
        sys.stdout.flush()

        def regenerate() -> Deferred[Any]:
            d = Deferred.fromCoroutine(central.generate())
            d.addErrback(lambda f: central.log.failure("Generation failed", f))
            return d

        loop = LoopingCall(regenerate)
        loop.clock = reactor
        loop.start(central.fed.raw.interval, now=False)
        await Deferred()  # until SIGTERM/SIGINT stops the reactor

    return _react(main)
