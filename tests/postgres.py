"""A real PostgreSQL server for the tests: `initdb` into a temporary folder, a free port
on 127.0.0.1, stopped at the end. Debian's `postgresql` package provides it (`make test`
installs it when missing). As root, the server runs as user `postgres`, which PostgreSQL
requires."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _binaries() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError(
            "PostgreSQL is not installed: `make test` installs Debian's postgresql package"
        )
    return versions[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One PostgreSQL server in its own folder, stopped and started again at will (the
    outage tests); `url` stays the same across restarts."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.folder = Path(tempfile.mkdtemp(prefix="audience-pg-"))
        if self.as_user:
            shutil.chown(self.folder, "postgres")
        self.data = self.folder / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._ctl(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def _ctl(self, program: str, *args: str, check: bool = True) -> None:
        command = [*self.as_user, str(self.bin / program), *args]
        subprocess.run(command, check=check, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        self._ctl("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def server() -> Iterator[Server]:
    """A running server, stopped and removed at the end."""
    running = Server()
    try:
        running.start()
        yield running
    finally:
        running.remove()
