# -*- test-case-name: tests.test_daemon -*-
"""systemd notifications without libsystemd (``sd_notify(3)`` protocol).

:class:`SystemdNotifier` sends datagrams such as ``READY=1`` to ``$NOTIFY_SOCKET``
(a path, or ``@name`` for the abstract namespace) and does nothing when the variable
is unset.  :class:`WatchdogService` pings ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` on
the injected clock, when systemd asked for it (``WATCHDOG_PID`` unset or ours).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

__all__ = ["SystemdNotifier", "WatchdogService", "watchdog_interval"]


class SystemdNotifier:
    """Sends ``sd_notify`` state lines; a no-op without ``NOTIFY_SOCKET``.

    Failures to send are logged and never raised: the daemon must not stop because
    the service manager went away.
    """

    log = Logger()

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sent: list[bytes] = []

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` (e.g. ``"READY=1"``, ``"STATUS=serving"``) as one datagram."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(payload)
        except OSError as exc:
            self.log.warn("sd_notify to {address} failed: {error}", address=self.address.lstrip("\0"), error=exc)
            return False
        self.sent.append(payload)
        return True

    def ready(self, status: str = "serving") -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    def reloading(self, monotonic_usec: int) -> bool:
        # systemd ≥ 253 wants MONOTONIC_USEC with RELOADING=1 for Type=notify-reload.
        return self.notify("RELOADING=1", "STATUS=reloading configuration", f"MONOTONIC_USEC={monotonic_usec}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if not asked."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID", "")
    if watchdog_pid and watchdog_pid != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2_000_000


class WatchdogService(Service):
    """Pings the systemd watchdog while the reactor turns (and ``alive()`` says so)."""

    name = "watchdog"
    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        notifier: SystemdNotifier,
        interval: float,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self._notifier = notifier
        self._interval = interval
        self._alive = alive
        self._loop = LoopingCall(self._ping)
        self._loop.clock = clock

    def _ping(self) -> None:
        if self._alive():
            self._notifier.watchdog()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.log.info("systemd watchdog: pinging every {interval} s", interval=self._interval)
        self._loop.start(self._interval, now=True)

    def stopService(self) -> None:
        if self._loop.running:
            self._loop.stop()
        super().stopService()  # type: ignore[no-untyped-call]
