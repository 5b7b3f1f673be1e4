"""`vdxp-gateway run -c FILE`: the foreground daemon (systemd ``Type=notify``).

This is the CLI edge: the only place that touches the global reactor and installs
signal handlers.  SIGTERM/SIGINT stop cleanly (exit 0); SIGHUP reloads the
configuration (:meth:`gateway.daemon.GatewayApp.reload`).

Exit codes: 0 after a clean stop, 2 when the configuration is invalid (every problem
printed as ``error: config.invalid: <key path>: <message>``), 1 when start-up fails
(one line ``error: <code>: <message>``, e.g. ``daemon.listen_failed``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from gateway.commands.check_config import DEFAULT_CONFIG
from gateway.config import ConfigError, load_config
from gateway.daemon import GatewayApp, standard_components
from gateway.logs import LogOutput, choose_format
from protocols.errors import VdxpError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run the gateway in the foreground (systemd Type=notify)",
        description="Run the gateway daemon in the foreground. SIGHUP reloads, SIGTERM stops.",
    )
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"configuration file (default {DEFAULT_CONFIG})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.lines():
            sys.stderr.write(f"error: {exc.code}: {line}\n")
        return 2

    output = LogOutput(sys.stdout, choose_format(config.logging.format), config.logging.level)
    output.begin()

    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    app = GatewayApp(reactor, config, standard_components(), log_output=output)
    exit_code = 0

    def start_failed(failure: Any) -> None:
        nonlocal exit_code
        exit_code = 1
        error = failure.value
        if isinstance(error, VdxpError):
            sys.stderr.write(f"error: {error.code}: {error.message}\n")
        else:
            sys.stderr.write(f"error: daemon.start_failed: {failure.getErrorMessage()}\n")
        reactor.stop()

    def start() -> None:
        from twisted.internet.defer import Deferred

        Deferred.fromCoroutine(app.start()).addErrback(start_failed)

    def stop() -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(app.stop())

    def on_sighup(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(app.request_reload)

    signal.signal(signal.SIGHUP, on_sighup)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return exit_code
