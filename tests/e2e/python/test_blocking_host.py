"""The blocking host example (`protocol/examples/blocking.rs`): the core driven
by `std::net` threads and sync tungstenite, no async runtime, over WebSocket only.

The binary is taken from $BLOCKING_BIN (relative paths are resolved from the
repository root); scripts/test.sh sets it to the debug build.
"""

from __future__ import annotations

import os
import pathlib
import queue
import time

import pytest
import socketio

from conftest import REPO_ROOT, Server

TIMEOUT = 5.0


def blocking_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("BLOCKING_BIN", "target/debug/examples/blocking"))
    return path if path.is_absolute() else REPO_ROOT / path


@pytest.fixture(scope="module")
def blocking_server():
    # A short heartbeat, so that the test sees the timer thread's pings.
    server = Server("--ping-interval", "300", "--ping-timeout", "200", binary=blocking_bin())
    yield server
    server.stop()


def test_event_and_ack_over_websocket(blocking_server):
    sio = socketio.Client(reconnection=False)
    events: queue.Queue = queue.Queue()
    sio.on("message-back", lambda *args: events.put(args))
    sio.connect(blocking_server.url, transports=["websocket"], wait_timeout=TIMEOUT)
    try:
        sio.emit("message", (1, "two", {"three": 3}))
        assert events.get(timeout=TIMEOUT) == (1, "two", {"three": 3})
        assert sio.call("message-with-ack", "hi", timeout=TIMEOUT) == "hi"
        # Several heartbeats: the client drops a connection that is not pinged in time.
        time.sleep(1.5)
        assert sio.connected
        assert sio.call("message-with-ack", ("still", 2), timeout=TIMEOUT) == ("still", 2)
    finally:
        sio.disconnect()
    assert blocking_server.alive()
