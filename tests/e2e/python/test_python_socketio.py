"""End-to-end tests with the official python-socketio client (sync `socketio.Client`).

Every scenario runs over HTTP long-polling only, WebSocket only, and the
default (long-polling upgraded to WebSocket).
"""

from __future__ import annotations

import queue
import time

import pytest
import requests
import socketio

TIMEOUT = 5.0
MODES = {
    "polling": ["polling"],
    "websocket": ["websocket"],
    "upgrade": None,  # the client's default: polling first, then the upgrade
}
BIN1 = bytes([1, 2, 3])
BIN2 = bytes(range(256))


@pytest.fixture(params=list(MODES))
def mode(request) -> str:
    return request.param


class Client:
    """A socketio.Client that records the events the server sends."""

    RECORDED = ("auth", "message-back", "call-result")

    def __init__(self, server, mode: str, namespace: str = "/") -> None:
        self.server = server
        self.mode = mode
        self.namespace = namespace
        self.sio = socketio.Client(reconnection=False)
        self.events: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()
        for event in self.RECORDED:
            self.sio.on(event, self._recorder(event), namespace=namespace)
        self.sio.on("connect_error", lambda *args: self.errors.put(args), namespace=namespace)

    def _recorder(self, event: str):
        def record(*args):
            self.events.put((event, args))

        return record

    def connect(self, auth=None) -> "Client":
        self.sio.connect(
            self.server.url,
            auth=auth,
            transports=MODES[self.mode],
            namespaces=[self.namespace],
            wait_timeout=TIMEOUT,
        )
        assert self.sio.connected
        if self.mode == "upgrade":
            # python-engineio upgrades during connect() when the server offers it
            assert self.sio.transport() == "websocket", "the upgrade to WebSocket did not happen"
        else:
            assert self.sio.transport() == self.mode
        return self

    def next_event(self, name: str, timeout: float = TIMEOUT) -> tuple:
        """Arguments of the next recorded event; any other event first is an error."""
        try:
            event, args = self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {name!r} event within {timeout}s")
        assert event == name, f"expected {name!r}, got {event!r} {args!r}"
        return args

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


@pytest.fixture
def make_client(server):
    clients: list[Client] = []

    def make(mode: str, namespace: str = "/") -> Client:
        client = Client(server, mode, namespace)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_connect_with_auth(make_client, mode):
    auth = {"token": "abc", "n": 1, "nested": {"ok": True}}
    client = make_client(mode).connect(auth=auth)
    assert client.next_event("auth") == (auth,)
    assert isinstance(client.sio.get_sid(), str)


def test_connect_without_auth(make_client, mode):
    client = make_client(mode).connect()
    assert client.next_event("auth") == ({},)


def test_emit_and_receive(make_client, mode):
    client = make_client(mode).connect()
    client.next_event("auth")
    args = (1, "2", {"3": [True, None]}, 4.5, ["x", {"y": "z"}])
    client.sio.emit("message", args)
    assert client.next_event("message-back") == args
    client.sio.emit("message", "héllo 😀")
    assert client.next_event("message-back") == ("héllo 😀",)
    # order is kept (10 at most: python-engineio refuses a polling payload of
    # more than 16 packets, and the server may batch the echoes)
    for i in range(10):
        client.sio.emit("message", i)
    assert [client.next_event("message-back")[0] for _ in range(10)] == list(range(10))


def test_ack_client_to_server(make_client, mode):
    client = make_client(mode).connect()
    client.next_event("auth")
    assert client.sio.call("message-with-ack", "single", timeout=TIMEOUT) == "single"
    result = client.sio.call("message-with-ack", (1, "2", {"3": [False]}), timeout=TIMEOUT)
    assert result == (1, "2", {"3": [False]})
    # several acks in flight, each answered to its own callback
    got: queue.Queue = queue.Queue()
    for i in range(5):
        client.sio.emit("message-with-ack", (i, f"n{i}"), callback=lambda *a: got.put(a))
    answers = sorted(got.get(timeout=TIMEOUT) for _ in range(5))
    assert answers == [(i, f"n{i}") for i in range(5)]


def test_ack_server_to_client(make_client, mode):
    client = make_client(mode)
    received: queue.Queue = queue.Queue()

    def on_call_back(*args):
        received.put(args)
        return ("acked", {"k": [1, 2]}, 3)

    client.sio.on("call-back", on_call_back)
    client.connect()
    client.next_event("auth")
    client.sio.emit("call-me", ("a", 2, {"b": None}))
    assert received.get(timeout=TIMEOUT) == ("a", 2, {"b": None})
    assert client.next_event("call-result") == ("acked", {"k": [1, 2]}, 3)


def test_binary_both_ways(make_client, mode):
    client = make_client(mode)
    client.sio.on("call-back", lambda *args: (b"\xff\x00ack", {"nested": BIN1}))
    client.connect()
    client.next_event("auth")

    # in an event, both ways
    client.sio.emit("message", (BIN1, "text", {"bin": BIN2, "list": [BIN1, 1]}))
    back = client.next_event("message-back")
    assert back == (BIN1, "text", {"bin": BIN2, "list": [BIN1, 1]})
    assert isinstance(back[0], bytes)

    # in a client->server ack
    assert client.sio.call("message-with-ack", (BIN2, 7), timeout=TIMEOUT) == (BIN2, 7)

    # in a server->client ack
    client.sio.emit("call-me", (BIN1,))
    assert client.next_event("call-result") == (b"\xff\x00ack", {"nested": BIN1})


def test_custom_namespace(make_client, mode):
    client = make_client(mode, namespace="/custom")
    client.connect(auth={"token": "custom"})
    assert client.next_event("auth") == ({"token": "custom"},)
    client.sio.emit("message", ("on custom", BIN1), namespace="/custom")
    assert client.next_event("message-back") == ("on custom", BIN1)
    result = client.sio.call("message-with-ack", ("ack", 1), namespace="/custom", timeout=TIMEOUT)
    assert result == ("ack", 1)


def test_unknown_namespace(make_client, mode):
    client = make_client(mode, namespace="/random")
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect()
    assert client.errors.get(timeout=TIMEOUT) == ({"message": "Invalid namespace"},)
    assert not client.sio.connected


def _session_gone(server, eio_sid: str, timeout: float = 3.0) -> bool:
    """True once the server answers a poll on that Engine.IO session with 400."""
    url = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={eio_sid}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(url, timeout=TIMEOUT).status_code == 400:
            return True
        time.sleep(0.05)
    return False


def test_disconnect_and_reconnect(server, make_client, mode):
    client = make_client(mode).connect(auth={"round": 1})
    assert client.next_event("auth") == ({"round": 1},)
    eio_sid = client.sio.eio.sid
    assert eio_sid
    client.sio.disconnect()
    assert not client.sio.connected
    # the server saw the disconnection: the Engine.IO session is closed
    assert _session_gone(server, eio_sid), "the server kept the session after the client disconnected"

    client.connect(auth={"round": 2})
    assert client.next_event("auth") == ({"round": 2},)
    assert client.sio.eio.sid != eio_sid
    client.sio.emit("message", "again")
    assert client.next_event("message-back") == ("again",)
    assert client.sio.call("message-with-ack", "again", timeout=TIMEOUT) == "again"


def test_two_clients_are_independent(make_client, mode):
    a = make_client(mode).connect(auth={"who": "a"})
    b = make_client(mode).connect(auth={"who": "b"})
    assert a.next_event("auth") == ({"who": "a"},)
    assert b.next_event("auth") == ({"who": "b"},)
    a.sio.emit("message", "from a")
    b.sio.emit("message", "from b")
    assert a.next_event("message-back") == ("from a",)
    assert b.next_event("message-back") == ("from b",)
    # message-back goes to the sender only
    with pytest.raises(queue.Empty):
        a.events.get(timeout=0.3)


def test_survives_heartbeats(make_client, mode):
    """With pingInterval 300 ms / pingTimeout 200 ms, a connection outlives many heartbeats."""
    client = make_client(mode).connect()
    client.next_event("auth")
    time.sleep(1.5)
    assert client.sio.connected
    client.sio.emit("message", "after heartbeats")
    assert client.next_event("message-back") == ("after heartbeats",)
