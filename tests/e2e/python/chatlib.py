"""Helpers for the chatwire end-to-end tests: users, tokens, REST, and a
python-socketio client that records every chat event."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import threading
import time
import uuid

import jwt
import pytest
import requests
import socketio
import websocket

from conftest import JWT_SECRET

TIMEOUT = 5.0
# how long to wait before concluding that an event is NOT coming
QUIET = 0.4
PASSWORD = "secret-pw"
HEX24 = re.compile(r"[0-9a-f]{24}")
MESSAGE_KEYS = {"id", "chatId", "author", "authorId", "text", "timestamp", "status", "type"}
CHAT_EVENTS = (
    "chat:new-message",
    "chat:ack",
    "chat:typing",
    "chat:delivered",
    "chat:read",
    "error",
)
TRANSPORTS = ["websocket", "polling"]


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system), in seconds, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unique(prefix: str = "u") -> str:
    """A fresh valid username / chat id (3..32 chars)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- tokens


def mint(user_id: str, username: str, *, exp_in: int = 3600, alg: str = "HS256",
         secret: str = JWT_SECRET, **extra) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "username": username, "iat": now, "exp": now + exp_in, **extra}
    return jwt.encode(claims, secret, algorithm=alg)


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def none_token(user_id: str, username: str) -> str:
    """An unsigned token, `alg: none`, built by hand."""
    now = int(time.time())
    header = _b64({"alg": "none", "typ": "JWT"})
    payload = _b64({"sub": user_id, "username": username, "iat": now, "exp": now + 3600})
    return f"{header}.{payload}."


def tampered(token: str, username: str = "mallory") -> str:
    """The same header and signature over a changed payload."""
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["username"] = username
    return f"{header}.{_b64(claims)}.{sig}"


# ---------------------------------------------------------------- REST


class User:
    def __init__(self, server, username: str, token: str, user: dict) -> None:
        self.server = server
        self.username = username
        self.token = token
        self.id = user["id"]
        self.user = user

    def messages(self, **params) -> list[dict]:
        r = get_messages(self.server, self.token, **params)
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()


def register(server, username: str | None = None, password: str = PASSWORD) -> User:
    username = username or unique()
    r = requests.post(f"{server.url}/register", json={"username": username, "password": password},
                      timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    body = r.json()
    return User(server, username, body["access_token"], body["user"])


def get_messages(server, token: str | None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{server.url}/messages", params=params, headers=headers, timeout=TIMEOUT)


def assert_detail(r: requests.Response, status: int) -> str:
    """The answer has `status` and a `{"detail": <string>}` body; returns the detail."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"detail"}, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


def assert_message(m: dict) -> None:
    assert set(m) == MESSAGE_KEYS, m
    assert HEX24.fullmatch(m["id"]), m
    assert HEX24.fullmatch(m["authorId"]), m
    assert isinstance(m["timestamp"], int), m
    assert m["status"] in ("sent", "delivered", "read"), m
    for k in ("chatId", "author", "text", "type"):
        assert isinstance(m[k], str), m


def order_key(m: dict) -> tuple:
    return (m["timestamp"], m["id"])


# ---------------------------------------------------------------- Socket.IO


class ChatClient:
    """A socketio.Client that records the chat events (one queue per event)."""

    def __init__(self, server, transport: str = "websocket") -> None:
        self.server = server
        self.transport = transport
        self.sio = socketio.Client(reconnection=False)
        self.queues: dict[str, queue.Queue] = {e: queue.Queue() for e in CHAT_EVENTS}
        self.connect_errors: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        for event in CHAT_EVENTS:
            self.sio.on(event, self._recorder(event))
        self.sio.on("connect_error", lambda *a: self.connect_errors.put(a))
        self.sio.on("disconnect", lambda *a: self.disconnected.set())

    def _recorder(self, event: str):
        def record(*args):
            self.queues[event].put(args[0] if len(args) == 1 else args)

        return record

    def connect(self, token: str | None = None, *, auth=None, headers=None, query: str = "") -> "ChatClient":
        if auth is None and token is not None:
            auth = {"token": token}
        self.sio.connect(
            self.server.url + query,
            auth=auth,
            headers=headers or {},
            transports=[self.transport],
            wait_timeout=TIMEOUT,
        )
        assert self.sio.connected
        return self

    def refused(self, **kwargs) -> object:
        """Connects expecting a CONNECT_ERROR; returns its data."""
        with pytest.raises(socketio.exceptions.ConnectionError):
            self.connect(**kwargs)
        try:
            args = self.connect_errors.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail("no connect_error")
        assert not self.sio.connected
        return args[0] if len(args) == 1 else args

    def wait(self, event: str, timeout: float = TIMEOUT):
        try:
            return self.queues[event].get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no {event!r} within {timeout}s on {self.transport}")

    def wait_where(self, event: str, pred, timeout: float = TIMEOUT):
        """The first `event` whose payload satisfies `pred` (others are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no matching {event!r} within {timeout}s")
            try:
                data = self.queues[event].get(timeout=left)
            except queue.Empty:
                pytest.fail(f"no matching {event!r} within {timeout}s")
            if pred(data):
                return data

    def none(self, event: str, within: float = QUIET) -> None:
        """Asserts that no `event` arrives within `within` seconds."""
        try:
            data = self.queues[event].get(timeout=within)
        except queue.Empty:
            return
        pytest.fail(f"unexpected {event!r}: {data!r}")

    def drain(self, event: str) -> list:
        out = []
        while True:
            try:
                out.append(self.queues[event].get_nowait())
            except queue.Empty:
                return out

    def call(self, event: str, data=None, timeout: float = TIMEOUT):
        return self.sio.call(event, data, timeout=timeout)

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()


class OrderedListener:
    """A Socket.IO client over a raw WebSocket (websocket-client), reading
    frames in arrival order on one thread: python-socketio's client may run
    event handlers on threads of their own, which can reorder what a test
    records."""

    def __init__(self, server, token: str, room: str) -> None:
        self.ws = websocket.create_connection(
            f"{server.ws_url}/socket.io/?EIO=4&transport=websocket", timeout=TIMEOUT)
        assert self.ws.recv().startswith("0{")
        self.ws.send("40" + json.dumps({"token": token}))
        assert self.ws.recv().startswith("40{")
        self.ws.send("421" + json.dumps(["chat:join", {"chatId": room}]))
        self.room = room
        self.ids: list[str] = []
        self.joined = False

    def read_until(self, n: int) -> list[str]:
        """The ids of the room's new messages, in arrival order, once `n` came."""
        deadline = time.monotonic() + 15
        while len(self.ids) < n:
            assert time.monotonic() < deadline, f"{len(self.ids)} of {n} messages"
            frame = self.ws.recv()
            if frame == "2":
                self.ws.send("3")
            elif frame.startswith("431"):
                self.joined = True
            elif frame.startswith("42"):
                name, data = json.loads(frame[2:])[:2]
                if name == "chat:new-message" and data["chatId"] == self.room:
                    self.ids.append(data["id"])
        return self.ids

    def wait_joined(self) -> None:
        while not self.joined:
            frame = self.ws.recv()
            if frame.startswith("431"):
                self.joined = True

    def close(self) -> None:
        self.ws.close()
