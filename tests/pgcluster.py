"""A throw-away PostgreSQL cluster for tests: initdb in a temporary directory, listening on a
Unix socket and 127.0.0.1 at a free port, stopped (and removed) afterwards.

initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
Tests run it with ``fsync=off`` (fast, not crash-safe); ``pg_cluster(fsync=True)`` keeps
PostgreSQL's durable defaults (benchmarks of durable writes).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (bootstrap.sh installs the postgresql package)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster(str):
    """The DSN ``postgresql://gw@127.0.0.1:PORT/postgres``, with ``stop()`` and ``start()``."""

    stop: Any
    start: Any


@contextmanager
def pg_cluster(*, fsync: bool = False) -> Iterator[Cluster]:
    """A running cluster (see :class:`Cluster`); ``fsync=True``: WAL flushed to disk at every
    commit (PostgreSQL's default), else ``fsync=off``."""
    bindir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="vdxp-pg-"))
    as_postgres = os.geteuid() == 0
    if as_postgres:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        cmd = [str(bindir / args[0]), *args[1:]]
        if as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    run("initdb", "-D", str(data), "-A", "trust", "-U", "gw", "--no-instructions", "--no-sync")

    def start() -> None:
        run("pg_ctl", "-D", str(data), "-l", str(root / "pg.log"), "-w", "-o",
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
            f"-c fsync={'on' if fsync else 'off'}", "start")

    def stop() -> None:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")

    start()
    cluster = Cluster(f"postgresql://gw@127.0.0.1:{port}/postgres")
    cluster.stop, cluster.start = stop, start
    try:
        yield cluster
    finally:
        try:
            stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        finally:
            shutil.rmtree(root, ignore_errors=True)
