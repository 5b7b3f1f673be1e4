"""The ``globalconf`` component of ``vdxp-gateway run``: the configuration client and its health check."""

from __future__ import annotations

from twisted.application.service import Service

from gateway.daemon import Component, ComponentContext
from gateway.globalconf.client import ConfClient


def globalconf_component() -> Component:
    def build(ctx: ComponentContext) -> Service:
        if not ctx.config.globalconf.enabled:
            return Service()
        client = ConfClient(ctx.reactor, ctx.config.globalconf, ctx.metrics.registry,
                            own_instance=ctx.config.server.instance)
        ctx.add_health_check("global configuration", client.health)
        return client

    return Component(name="globalconf", build=build, sections=frozenset({"globalconf"}), reloadable=True)
