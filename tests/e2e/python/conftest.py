"""Shared fixtures: start the `conformance` example server or the `chatwire`
server on a free port.

The binaries are taken from $CONFORMANCE_BIN and $CHATWIRE_BIN (relative
paths are resolved from the repository root); scripts/test.sh sets them to
the debug build.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import threading
import uuid

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
READY_LINE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
STARTUP_TIMEOUT = 20.0


def _bin(var: str, default: str) -> pathlib.Path:
    path = pathlib.Path(os.environ.get(var, default))
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def conformance_bin() -> pathlib.Path:
    return _bin("CONFORMANCE_BIN", "target/debug/examples/conformance")


def chatwire_bin() -> pathlib.Path:
    return _bin("CHATWIRE_BIN", "target/debug/chatwire")


def merged_env(env: dict[str, str | None] | None) -> dict[str, str]:
    """os.environ plus `env`; a None value removes the variable."""
    merged = {**os.environ, **(env or {})}
    return {k: v for k, v in merged.items() if v is not None}


class Server:
    """One running server process, started with `--port 0`.

    `binary` defaults to the `conformance` example; `env` is added to the
    environment; with `stderr_path`, stderr goes to that file (else it is
    inherited, so that it shows in pytest's output); `preexec_fn` runs in
    the child before the server starts.
    """

    def __init__(
        self,
        *args: str,
        binary: pathlib.Path | None = None,
        env: dict[str, str] | None = None,
        stderr_path: pathlib.Path | None = None,
        preexec_fn=None,
    ) -> None:
        binary = binary or conformance_bin()
        name = binary.name
        if not binary.is_file():
            pytest.fail(
                f"{name} binary not found at {binary} "
                "(build it with `cargo build --workspace --all-targets` or set "
                "CONFORMANCE_BIN / CHATWIRE_BIN)"
            )
        self.args = args
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "ab") if stderr_path else None
        self.proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=merged_env(env),
            text=True,
            preexec_fn=preexec_fn,
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
            pytest.fail(f"{name} {' '.join(args)} did not print its ready line")
        match = READY_LINE.fullmatch(first_line[0].strip())
        if match is None:
            self.stop()
            pytest.fail(f"unexpected first line from {name}: {first_line[0]!r}")
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
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


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


# ---------------------------------------------------------------- chatwire

# The secret the chatwire fixtures run with: tests mint their own tokens with it.
JWT_SECRET = "e2e-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def chat_store_url() -> str:
    """The store a test chatwire uses: in memory, or with E2E_CHAT_STORE=mongo
    a fresh database on the MongoDB-wire server at $MONGODB_TEST_URL."""
    if os.environ.get("E2E_CHAT_STORE", "memory") != "mongo":
        return "memory:"
    base = os.environ.get("MONGODB_TEST_URL")
    if not base:
        pytest.fail("E2E_CHAT_STORE=mongo needs MONGODB_TEST_URL")
    head, _, query = base.partition("?")
    scheme, _, rest = head.partition("://")
    hosts = rest.split("/", 1)[0]
    url = f"{scheme}://{hosts}/e2e_{uuid.uuid4().hex[:16]}"
    return f"{url}?{query}" if query else url


# The suites register hundreds of users from one address: the login
# throttles are lifted for them (test_throttle.py runs with the defaults).
UNTHROTTLED = {
    "AUTH_RATE_PER_MINUTE": "1000000",
    "AUTH_BURST": "1000000",
    "LOGIN_FAILURES_PER_HOUR": "1000000",
    "LOGIN_FAILURE_BURST": "1000000",
}


def chatwire_env(**overrides: str | None) -> dict[str, str | None]:
    """The environment of a test chatwire: its store (`chat_store_url`), fast
    bcrypt, no login throttles, logs at `CHATWIRE_LOG` (default `warn`)."""
    env = {
        "DATABASE_URL": chat_store_url(),
        "JWT_SECRET": JWT_SECRET,
        "JWT_ALGORITHM": "HS256",
        "BCRYPT_COST": "4",
        # CHATWIRE_LOG: a RUST_LOG filter for every chatwire a test starts
        # (as the JS suites take it), e.g. warn,chatwire_driver::bus=debug.
        "RUST_LOG": os.environ.get("CHATWIRE_LOG", "warn"),
        **UNTHROTTLED,
    }
    env.update(overrides)
    return env


def start_chatwire(env: dict[str, str] | None = None, **kwargs) -> Server:
    """A chatwire process with `chatwire_env()` plus `env`. With
    `CHATWIRE_LOG_DIR` set, its log goes to a file of its own there (one
    started by a fixture logs to a capture that no failure shows)."""
    log_dir = os.environ.get("CHATWIRE_LOG_DIR")
    if log_dir and kwargs.get("stderr_path") is None:
        pathlib.Path(log_dir).mkdir(parents=True, exist_ok=True)
        kwargs["stderr_path"] = pathlib.Path(log_dir) / f"chatwire-{uuid.uuid4().hex[:8]}.log"
    return Server(binary=chatwire_bin(), env=chatwire_env(**(env or {})), **kwargs)


def run_chatwire_to_exit(env: dict[str, str | None], timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Runs chatwire with a configuration it must refuse; returns the finished process."""
    binary = chatwire_bin()
    if not binary.is_file():
        pytest.fail(f"chatwire binary not found at {binary} (set CHATWIRE_BIN)")
    try:
        return subprocess.run(
            [str(binary), "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=merged_env(env),
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chatwire kept running with {env}: stdout {exc.stdout!r}")


@pytest.fixture(scope="module")
def chat_server():
    """One chatwire (in-memory store) per test module."""
    server = start_chatwire()
    yield server
    server.stop()
