"""Shared fixtures: start the `conformance` example server on a free port.

The binary is taken from $CONFORMANCE_BIN (relative paths are resolved from
the repository root); scripts/test.sh sets it to the debug build.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import threading

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
READY_LINE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
STARTUP_TIMEOUT = 20.0


def conformance_bin() -> pathlib.Path:
    raw = os.environ.get("CONFORMANCE_BIN", "target/debug/examples/conformance")
    path = pathlib.Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


class Server:
    """One running `conformance` process (or `binary`), started with `--port 0`."""

    def __init__(self, *args: str, binary: pathlib.Path | None = None) -> None:
        binary = binary or conformance_bin()
        if not binary.is_file():
            pytest.fail(
                f"conformance binary not found at {binary} "
                "(build it with `cargo build --workspace --all-targets` or set CONFORMANCE_BIN)"
            )
        self.args = args
        self.proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        first_line: list[str] = []
        got_line = threading.Event()

        def pump() -> None:
            # Read the ready line, then keep draining stdout so that the
            # server can never block on a full pipe.
            assert self.proc.stdout is not None
            for i, line in enumerate(self.proc.stdout):
                if i == 0:
                    first_line.append(line)
                    got_line.set()
            got_line.set()

        threading.Thread(target=pump, daemon=True).start()
        if not got_line.wait(STARTUP_TIMEOUT) or not first_line:
            self.stop()
            pytest.fail(f"conformance {' '.join(args)} did not print its ready line")
        match = READY_LINE.fullmatch(first_line[0].strip())
        if match is None:
            self.stop()
            pytest.fail(f"unexpected first line from conformance: {first_line[0]!r}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class ServerPool:
    """Starts at most one server per distinct argument list, for the session."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, ...], Server] = {}

    def get(self, *args: str) -> Server:
        server = self._servers.get(args)
        if server is None or not server.alive():
            server = Server(*args)
            self._servers[args] = server
        return server

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()


@pytest.fixture(scope="session")
def servers():
    pool = ServerPool()
    yield pool
    pool.stop_all()


# The configurations the tests use.
# Default CLI values: what the official protocol suites expect.
DEFAULT_ARGS: tuple[str, ...] = ()
# Long heartbeat, so that a slow step of a test is never cut by a ping timeout.
SLOW_PING_ARGS = ("--ping-interval", "10000", "--ping-timeout", "5000")


@pytest.fixture
def server(servers) -> Server:
    """Server with the default (short) heartbeat: 300 ms / 200 ms."""
    return servers.get(*DEFAULT_ARGS)


@pytest.fixture
def calm_server(servers) -> Server:
    """Server with a long heartbeat, for raw-protocol steps that must not race a ping."""
    return servers.get(*SLOW_PING_ARGS)
