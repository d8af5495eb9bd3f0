"""SIGTERM drains (README "Configuration", SHUTDOWN_TIMEOUT_MS; docs/API.md
on `shutting_down`): twenty senders keep sending while the server is told to
stop. Every message a sender sent is then acked and stored, or refused and
not stored, or (sent after its connection closed) neither answered nor
stored, and acked exactly once when retried by its tempId on the restarted
server; never committed without an answer. WebSocket clients are closed
with 1001 "going away", polling clients with Engine.IO's close packet, and
the process exits 0 within the deadline."""

from __future__ import annotations

import json
import signal
import struct
import threading
import time

import requests
import socketio
import websocket

from chatlib import TIMEOUT, User, register, unique
from conftest import start_chatwire

SENDERS = 20
DEADLINE_MS = 5000
# Each sender has at least this many acks before the SIGTERM.
WARM = 3


class Sender:
    """A python-socketio client of its own user, sending numbered messages
    with tempIds to a chat of its own, the next one as soon as the last is
    answered."""

    def __init__(self, server, i: int, user: User, transport: str) -> None:
        self.i = i
        self.user = user
        self.transport = transport
        self.chat = unique("drain")
        self.sio = socketio.Client(reconnection=False)
        self.lock = threading.Lock()
        self.sent: list[str] = []
        # tempId -> ("ack", id) or ("error", code), from the ack callback
        self.outcome: dict[str, tuple[str, str]] = {}
        # tempId -> code, from `error` events
        self.errors: dict[str, str] = {}
        self.close_codes: list[int | None] = []
        self.reason: str | None = None
        # The server's close reached it: the close frame over WebSocket, the
        # disconnect event (the close packet) over polling.
        self.closed = threading.Event()
        self.stopped = False
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("error", lambda e: self._on_error(e))
        self.sio.connect(server.url, auth={"token": user.token}, transports=[transport],
                         wait_timeout=TIMEOUT)
        if transport == "websocket":
            self._watch_close_frames()

    def _watch_close_frames(self) -> None:
        # python-engineio reports any WebSocket close as a transport error;
        # the close frame's code is read where websocket-client reads frames.
        ws = self.sio.eio.ws
        read = ws.recv_frame

        def recv_frame():
            frame = read()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None
                self.close_codes.append(code)
                self.closed.set()
            return frame

        ws.recv_frame = recv_frame

    def _on_disconnect(self, reason=None) -> None:
        self.reason = reason
        if self.transport == "polling":
            self.closed.set()

    def _on_error(self, e: dict) -> None:
        with self.lock:
            if e.get("tempId"):
                self.errors[e["tempId"]] = e.get("code")

    def acked(self) -> int:
        with self.lock:
            return sum(1 for o in self.outcome.values() if o[0] == "ack")

    def stop(self) -> None:
        with self.lock:
            self.stopped = True

    def send_next(self) -> None:
        with self.lock:
            if self.stopped:
                return
            temp = f"s{self.i}-{len(self.sent)}"
            self.sent.append(temp)
        try:
            self.sio.emit("chat:send", {"text": temp, "tempId": temp, "chatId": self.chat},
                          callback=lambda *a: self._answered(temp, a))
        except socketio.exceptions.SocketIOError:
            # Disconnected already: it never left this client.
            with self.lock:
                self.sent.remove(temp)

    def _answered(self, temp: str, args: tuple) -> None:
        answer = args[0] if args else {}
        with self.lock:
            if "error" in answer:
                self.outcome[temp] = ("error", answer["error"]["code"])
            else:
                assert answer["tempId"] == temp, answer
                self.outcome[temp] = ("ack", answer["id"])
        self.send_next()

    def close(self) -> None:
        self.stop()
        if self.sio.connected:
            self.sio.disconnect()


def idle_websocket(server, token: str) -> tuple[threading.Thread, list]:
    """A raw Engine.IO WebSocket client, joined and idle; the thread reads
    until the server's close frame and records its code."""
    ws = websocket.create_connection(f"{server.ws_url}/socket.io/?EIO=4&transport=websocket",
                                     timeout=TIMEOUT)
    assert ws.recv().startswith("0{")
    ws.send("40" + json.dumps({"token": token}))
    assert ws.recv().startswith("40{")
    got: list = []

    def read() -> None:
        ws.settimeout(DEADLINE_MS / 1000 + 10)
        try:
            while True:
                op, frame = ws.recv_data_frame(True)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    got.append(struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None)
                    return
                if op == websocket.ABNF.OPCODE_TEXT and frame.data == b"2":
                    ws.send("3")
        except Exception as e:  # the connection ended without a close frame
            got.append(repr(e))
        finally:
            ws.close()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, got


def idle_polling(server, token: str) -> tuple[threading.Thread, list]:
    """A raw Engine.IO polling client, joined and idle, polling on its
    keep-alive connection; records (status, packets) of every poll until the
    close packet or an error."""
    http = requests.Session()
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    r = http.get(base, timeout=TIMEOUT)
    sid = json.loads(r.text[1:])["sid"]
    url = f"{base}&sid={sid}"
    assert http.post(url, data="40" + json.dumps({"token": token}), timeout=TIMEOUT).text == "ok"
    assert http.get(url, timeout=TIMEOUT).text.startswith("40{")
    polls: list = []

    def poll() -> None:
        try:
            while True:
                r = http.get(url, timeout=DEADLINE_MS / 1000 + 10)
                packets = r.text.split("\x1e")
                polls.append((r.status_code, packets))
                if r.status_code != 200 or packets[-1] == "1":
                    return
                for p in packets:
                    if p == "2":
                        http.post(url, data="3", timeout=TIMEOUT)
        except Exception as e:
            polls.append((None, [repr(e)]))

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    return t, polls


def stored_in(server, user: User, chat: str) -> dict[str, list[str]]:
    """Every message of `chat`, oldest first: text -> ids."""
    reader = User(server, user.username, user.token, user.user)
    out: dict[str, list[str]] = {}
    params = {"chatId": chat, "limit": 100, "after": 0}
    while True:
        page = reader.messages(**params)
        for m in page:
            out.setdefault(m["text"], []).append(m["id"])
        if len(page) < 100:
            return out
        params = {"chatId": chat, "limit": 100, "afterId": page[-1]["id"]}


def test_sigterm_drains_every_send_under_way_and_closes_cleanly(tmp_path):
    data = tmp_path / "store"
    data.mkdir()
    env = {
        "DATABASE_URL": str(data),
        "RATE_LIMIT_PER_SECOND": "1000000",
        "RATE_LIMIT_BURST": "1000000",
        "SHUTDOWN_TIMEOUT_MS": str(DEADLINE_MS),
    }
    server = start_chatwire(env, stderr_path=tmp_path / "stderr.log")
    senders: list[Sender] = []
    problems: list[str] = []
    took = float("nan")
    try:
        users = [register(server) for _ in range(SENDERS + 2)]
        senders = [Sender(server, i, users[i], "websocket" if i % 2 == 0 else "polling")
                   for i in range(SENDERS)]
        ws_reader, ws_close = idle_websocket(server, users[SENDERS].token)
        poll_reader, polls = idle_polling(server, users[SENDERS + 1].token)
        for s in senders:
            s.send_next()
        warm_until = time.monotonic() + 30
        while min(s.acked() for s in senders) < WARM:
            assert time.monotonic() < warm_until, [s.acked() for s in senders]
            time.sleep(0.01)

        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(DEADLINE_MS / 1000 + 5)
        took = time.monotonic() - started
        if code != 0:
            problems.append(f"exit status {code}")
        if took > DEADLINE_MS / 1000 + 1:
            problems.append(f"exited after {took:.1f} s, the deadline is {DEADLINE_MS} ms")
        # (Over WebSocket, python-engineio 4.15 reports the disconnect only
        # after its write loop ends, which can take 30 s when a send was
        # queued with its stop marker: the close frame is what tells.)
        for s in senders:
            if not s.closed.wait(5):
                problems.append(f"sender {s.i} ({s.transport}) saw no close")
            s.stop()
        ws_reader.join(5)
        poll_reader.join(5)
    finally:
        for s in senders:
            s.close()
        server.kill()

    # How each client was closed.
    for s in senders:
        if s.transport == "websocket" and s.close_codes != [1001]:
            problems.append(f"sender {s.i} (websocket): close frames {s.close_codes}, not [1001]")
        if s.transport == "polling" and s.reason != "server disconnect":
            problems.append(f"sender {s.i} (polling): disconnect reason {s.reason!r}, not the close packet")
    if ws_close != [1001]:
        problems.append(f"idle WebSocket: {ws_close}, not a close frame with 1001")
    if not polls or polls[-1][0] != 200 or polls[-1][1][-1] != "1":
        problems.append(f"idle polling client: last polls {polls[-2:]}, not the close packet")

    # Every message, against the store after a restart on the same data.
    server = start_chatwire(env)
    try:
        counts = {"acked": 0, "refused": 0, "unanswered": 0}
        unanswered: list[tuple[Sender, str]] = []
        for s in senders:
            stored = stored_in(server, s.user, s.chat)
            sent = set(s.sent)
            extra = set(stored) - sent
            if extra:
                problems.append(f"sender {s.i}: stored but never sent {sorted(extra)}")
            for temp in s.sent:
                here = stored.get(temp, [])
                kind, value = s.outcome.get(temp, (None, None))
                if kind == "ack":
                    counts["acked"] += 1
                    if here != [value]:
                        problems.append(f"{temp}: acked as {value}, stored as {here}")
                elif kind == "error":
                    counts["refused"] += 1
                    if value != "shutting_down" or s.errors.get(temp) != value:
                        problems.append(f"{temp}: refused with {value}, error event {s.errors.get(temp)}")
                    if here:
                        problems.append(f"{temp}: refused, yet stored as {here}")
                else:
                    counts["unanswered"] += 1
                    unanswered.append((s, temp))
                    if here:
                        problems.append(f"{temp}: committed as {here}, but neither acked nor refused")
        print(f"\nSIGTERM drain: exit after {took:.2f} s, {counts}")
        # What was neither answered nor stored is acked exactly once on retry.
        for s, temp in unanswered:
            c = socketio.Client(reconnection=False)
            c.connect(server.url, auth={"token": s.user.token}, transports=["websocket"], wait_timeout=TIMEOUT)
            try:
                ack = c.call("chat:send", {"text": temp, "tempId": temp, "chatId": s.chat}, timeout=TIMEOUT)
            finally:
                c.disconnect()
            here = stored_in(server, s.user, s.chat).get(temp, [])
            if "id" not in ack or here != [ack["id"]]:
                problems.append(f"{temp}: retried, answered {ack}, stored as {here}")
    finally:
        server.stop()
    assert not problems, "\n".join(problems)
