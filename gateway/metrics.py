# -*- test-case-name: tests.test_daemon -*-
"""Prometheus metrics of the daemon, on a registry of its own.

:class:`GatewayMetrics` owns a :class:`prometheus_client.CollectorRegistry` (never the
process-global default, so tests and several apps in one process do not collide) and
the daemon's own series.  Components register theirs on ``metrics.registry``.

:class:`MetricsResource` serves the registry in the Prometheus text format or
OpenMetrics (by ``Accept``).  Unlike ``prometheus_client.twisted.MetricsResource`` it
needs no global reactor: it renders synchronously, which takes a few milliseconds for
the registries we have (PLATFORM-NOTES §10).
"""

from __future__ import annotations

import platform
import weakref
from collections.abc import Callable
from typing import TypeVar

import twisted
from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["GatewayMetrics", "MetricsResource", "build_version"]


_T = TypeVar("_T")


def per_registry(factory: Callable[[CollectorRegistry], _T]) -> Callable[[CollectorRegistry], _T]:
    """``factory(registry)`` made once per registry: a component rebuilt on reload gets the series
    it registered before (registering them twice would fail)."""
    made: weakref.WeakKeyDictionary[CollectorRegistry, _T] = weakref.WeakKeyDictionary()

    def get(registry: CollectorRegistry) -> _T:
        found = made.get(registry)
        if found is None:
            found = made[registry] = factory(registry)
        return found

    return get


def build_version() -> str:
    try:
        from importlib.metadata import version

        return version("vdxp-gateway")
    except Exception:  # not installed: running from a source tree
        return "0+unknown"


class GatewayMetrics:
    """The daemon's series: build info and configuration (re)loads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.build_info = Info("vdxp_build", "Version of the gateway and its runtime.", registry=self.registry)
        self.build_info.info(
            {
                "version": build_version(),
                "python": platform.python_version(),
                "twisted": twisted.__version__,
            }
        )
        self.config_reloads = Counter(
            "vdxp_config_reloads",
            "Configuration reloads (SIGHUP) by result: ok, or failed (the running configuration was kept).",
            ["result"],
            registry=self.registry,
        )
        for result in ("ok", "failed"):
            self.config_reloads.labels(result=result)
        self.config_loaded = Gauge(
            "vdxp_config_loaded_timestamp_seconds",
            "Unix time at which the running configuration was loaded.",
            registry=self.registry,
        )
        self.restart_pending = Gauge(
            "vdxp_config_restart_pending",
            "1 when a reloaded configuration changed sections that only take effect after a restart.",
            registry=self.registry,
        )


class MetricsResource(Resource):
    """``GET`` → the registry's exposition (text format or OpenMetrics by ``Accept``)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))  # type: ignore[no-untyped-call]
        return encoder(self._registry)

    render_HEAD = render_GET
