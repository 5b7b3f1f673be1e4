"""``vdxp-gateway conf``: the configuration anchor and the state of the global configuration."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from protocols.errors import UsageError, VdxpError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("conf", help="global configuration: import the anchor, show the status",
                       description="The federation's global configuration: import its anchor, download it once, "
                                   "show what is installed.")
    csub = p.add_subparsers(dest="conf_command", metavar="ACTION", required=True)
    imp = csub.add_parser("import-anchor", help="verify and install a configuration anchor",
                          description="Check a configuration anchor (XML, schema, certificates) and copy it to "
                                      "globalconf.anchor of the gateway configuration.")
    imp.add_argument("-c", "--config", type=Path, required=True, help="gateway configuration file")
    imp.add_argument("file", type=Path, help="the anchor (from the central server's operator)")
    imp.set_defaults(func=_import)
    st = csub.add_parser("status", help="instance, version, expiry, source and counts of the installed configuration")
    st.add_argument("-c", "--config", type=Path, required=True, help="gateway configuration file")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)
    dl = csub.add_parser("download", help="download, verify and install once, now (the daemon does this itself)")
    dl.add_argument("-c", "--config", type=Path, required=True, help="gateway configuration file")
    dl.set_defaults(func=_download)


def _import(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from protocols.gconf.anchor import parse_anchor

    cfg = load_config(args.config)
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}", code="usage.file_unreadable") from None
    anchor = parse_anchor(data)
    if anchor.instance != cfg.server.instance:
        raise VdxpError(f"the anchor is for instance {anchor.instance}, this gateway belongs to "
                        f"{cfg.server.instance}", code="gconf.anchor_instance")
    target = cfg.globalconf.anchor
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    generated = anchor.generated_at.isoformat() if anchor.generated_at else "at an unknown time"
    print(f"anchor for instance {anchor.instance} installed in {target} (generated {generated}):")
    for source in anchor.sources:
        print(f"  {source.download_url}  ({len(source.verification_certs)} verification certificate(s))")
    return 0


def _status(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.globalconf.client import status_path
    from gateway.globalconf.disk import read_conf_dir

    cfg = load_config(args.config)
    directory = cfg.globalconf.directory
    status: dict[str, object] = {}
    try:
        status = json.loads(status_path(directory).read_text())
    except (OSError, ValueError):
        pass
    if not (directory / "instance-identifier").exists():
        raise VdxpError(f"no global configuration installed in {directory} (last error: "
                        f"{status.get('last_error') or 'none'})", code="gconf.not_installed")
    conf = read_conf_dir(directory)
    own = conf.shared.get(conf.own_instance)
    now = datetime.now(UTC)
    expired = conf.expires is not None and conf.expires <= now
    report = {
        "instance": conf.own_instance,
        "version": status.get("version"),
        "expires": conf.expires.isoformat() if conf.expires else None,
        "valid": not expired,
        "source": status.get("source"),
        "last_success": status.get("last_success"),
        "last_error": status.get("last_error"),
        "members": len(own.members) if own else 0,
        "subsystems": sum(len(m.subsystems) for m in own.members) if own else 0,
        "security_servers": len(own.servers) if own else 0,
        "approved_cas": len(own.cas) if own else 0,
        "approved_tsas": len(own.tsas) if own else 0,
        "global_groups": len(own.global_groups) if own else 0,
        "instances": sorted(conf.shared),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0 if not expired else 1


def _download(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry
    from twisted.internet import defer, task

    from gateway.config import load_config
    from gateway.globalconf.client import ConfClient

    cfg = load_config(args.config)
    result: list[bool] = []
    client_box: list[ConfClient] = []

    async def run(reactor: object) -> None:
        from gateway.globalconf.client import make_http_client

        client = ConfClient(reactor, cfg.globalconf, CollectorRegistry(), own_instance=cfg.server.instance,
                            http=make_http_client(reactor, cfg.globalconf.ca_bundle))
        client_box.append(client)
        result.append(await client.poll())

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as exc:
        if exc.code:
            return int(exc.code)
    if not result or not result[0]:
        error = client_box[0].status.last_error if client_box else "unknown"
        raise VdxpError(f"download failed: {error}", code="gconf.download_failed")
    print(f"installed: version {client_box[0].status.version}, expires {client_box[0].status.expires}, "
          f"from {client_box[0].status.source}")
    return 0
