"""One dedicated thread per loaded PKCS#11 module.

python-pkcs11 calls ``C_Initialize(NULL)``; SoftHSM2 then disables its own locking and
crashes when two threads call it, even on different sessions (PLATFORM-NOTES §2).  So
every PKCS#11 call of this process, for every token of a module, runs on that
module's single thread.  More signing capacity means more signer processes, not more
threads.

The Twisted edge is :func:`deferred_call`: it submits a callable to the thread and
returns a Deferred that fires on the reactor thread, with a timeout.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar, TypeVar

from twisted.internet.defer import Deferred

from protocols.errors import VdxpError

T = TypeVar("T")

_STOP = object()


class HsmTimeout(VdxpError):
    code = "hsm.timeout"
    xroad_code = "Server.ClientProxy.CannotCreateSignature"


class ModuleThread:
    """The thread that owns one PKCS#11 library.  Use :meth:`for_module` to get it."""

    _registry: ClassVar[dict[str, ModuleThread]] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"pkcs11:{path}", daemon=True)
        self._lib: Any = None
        # Bumped when the library is finalised and initialised again: every session
        # and object handle of the old generation is dead.
        self.generation = 0
        self._last_reinit = -1e9
        self._thread.start()

    @classmethod
    def for_module(cls, path: str) -> ModuleThread:
        """The process-wide thread of the PKCS#11 library at ``path`` (created on first use)."""
        with cls._registry_lock:
            thread = cls._registry.get(path)
            if thread is None:
                thread = cls._registry[path] = cls(path)
            return thread

    def lib(self) -> Any:
        """The ``pkcs11.lib`` of this module.  Call only from this module's thread."""
        self._assert_on_thread()
        if self._lib is None:
            import pkcs11

            self._lib = pkcs11.lib(self.path)
        return self._lib

    def reinitialize(self, min_interval: float = 2.0) -> bool:
        """``C_Finalize`` + ``C_Initialize``: the way back after a token vanished and returned.

        SoftHSM2 (and some HSM libraries) only rescan their slots at initialisation.
        Every token of this module reopens its session afterwards (see ``generation``).
        Rate-limited to once per ``min_interval`` seconds; returns whether it ran.
        """
        self._assert_on_thread()
        now = time.monotonic()
        if now - self._last_reinit < min_interval:
            return False
        self._last_reinit = now
        if self._lib is not None:
            self._lib.reinitialize()
        self.generation += 1
        return True

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _assert_on_thread(self) -> None:
        if not self.on_thread():
            raise RuntimeError("PKCS#11 call outside the module thread")

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)`` on the module thread."""
        fut: Future[T] = Future()
        self._queue.put((fn, args, fut))
        return fut

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0) -> T:
        """Run ``fn(*args)`` on the module thread and wait (for the CLI and other sync callers)."""
        if self.on_thread():
            return fn(*args)
        fut = self.submit(fn, *args)
        try:
            return fut.result(timeout=timeout)
        except TimeoutError:
            fut.cancel()
            raise HsmTimeout(f"PKCS#11 call did not finish within {timeout:g} s") from None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # delivered to the caller, never kills the thread
                fut.set_exception(exc)
            else:
                fut.set_result(result)


def deferred_call(reactor: Any, thread: ModuleThread, fn: Callable[..., T], *args: Any,
                  timeout: float = 10.0) -> Deferred[T]:
    """Run ``fn(*args)`` on ``thread`` and fire the Deferred on the reactor thread.

    The Deferred fails with :class:`HsmTimeout` after ``timeout`` seconds.  A call that
    has not started yet is withdrawn; one that is running cannot be interrupted
    (PKCS#11 has no cancellation) and its late result is dropped.
    """
    fut = thread.submit(fn, *args)
    def cancel(_d: Deferred[T]) -> None:
        fut.cancel()

    d: Deferred[T] = Deferred(cancel)

    def done(f: Future[T]) -> None:
        if f.cancelled():
            return

        def fire() -> None:
            if d.called:
                return
            exc = f.exception()
            if exc is not None:
                d.errback(exc)
            else:
                d.callback(f.result())

        reactor.callFromThread(fire)

    fut.add_done_callback(done)

    def on_timeout(result: Any, _timeout: float) -> Any:
        from twisted.internet.defer import CancelledError
        from twisted.python.failure import Failure

        if isinstance(result, Failure) and result.check(CancelledError):  # type: ignore[no-untyped-call]
            raise HsmTimeout(f"PKCS#11 call did not finish within {timeout:g} s")
        return result

    d.addTimeout(timeout, reactor, onTimeoutCancel=on_timeout)
    return d
