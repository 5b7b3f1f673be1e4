"""Global configuration on the gateway side: the on-disk layout X-Road uses
(:mod:`gateway.globalconf.disk`) and the configuration client that keeps it current."""
