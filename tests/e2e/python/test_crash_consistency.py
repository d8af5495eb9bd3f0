"""Crash consistency: acknowledged messages survive SIGKILL, once and in order
(docs/API.md: "chat:ack goes out only once the message is durable"; "the
same tempId sent again by the same user ... answers the first chat:ack again
and stores nothing new").

20 sender threads, each its own user, send numbered messages one at a time
to one chat, each with an ack; on a timeout, an error or a disconnect they
reconnect (waiting for the server to come back) and send the SAME tempId
again. A killer thread SIGKILLs the server at seeded random moments and
restarts it on the same port and the same data. After a last restart, the
whole history (paged back with beforeId, and forward with afterId) must hold
every acked message exactly once with its acked id and timestamp, no text
twice, and each sender's messages in the order they were sent. Messages
sent but never acked may be there (once) or not.

On the embedded store (a temporary directory) and, in the E2E_CHAT_STORE=mongo
pass, on the MongoDB-wire server at $MONGODB_TEST_URL (a fresh database).
The seed comes from $CRASH_SEED (default below) and is printed on failure.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests
import socketio

from chatlib import HEX24, order_key, register
from conftest import READY_LINE, chatwire_bin, chatwire_env, merged_env

DEFAULT_SEED = 61_125
SEED = int(os.environ.get("CRASH_SEED") or DEFAULT_SEED)
SENDERS = 20
KILLS = 5
KILL_GAP = (0.3, 1.5)  # seconds between (re)start and the next kill
AFTER_LAST_KILL = 1.5  # seconds of sending after the last restart
CALL_TIMEOUT = 5.0
START_TIMEOUT = 20.0
TEXT = re.compile(r"s(\d+)-(\d+)")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Process:
    """chatwire on a fixed port and store, killed and restarted at will."""

    def __init__(self, database_url: str, stderr_path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        env = chatwire_env(
            DATABASE_URL=self.database_url,
            RATE_LIMIT_PER_SECOND="100000",
            RATE_LIMIT_BURST="100000",
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with open(self.stderr_path, "ab") as err:
                proc = subprocess.Popen(
                    [str(chatwire_bin()), "--host", "127.0.0.1", "--port", str(self.port)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                    env=merged_env(env), text=True,
                )
            line = proc.stdout.readline()
            if READY_LINE.fullmatch(line.strip()):
                threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
                self.proc = proc
                self.starts += 1
                return
            proc.kill()
            proc.wait(5)
            # the port may still be held by the killed process's sockets for a moment
            if time.monotonic() > deadline:
                pytest.fail(f"[CRASH_SEED={SEED}] chatwire did not restart on port {self.port}: {line!r}; "
                            f"see {self.stderr_path}")
            time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"[CRASH_SEED={SEED}] chatwire died by itself: {self.proc.returncode}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Sender(threading.Thread):
    """Sends s<n>-0, s<n>-1, ... one at a time, each until it is acked."""

    def __init__(self, n: int, user, server: Process, chat_id: str, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"sender-{n}")
        self.n = n
        self.user = user
        self.server = server
        self.chat_id = chat_id
        self.stop = stop
        self.acked: dict[int, dict] = {}  # i -> its chat:ack
        self.sent = 0  # how many numbers were sent at least once
        self.attempts = 0
        self.failure: str | None = None
        self.client: socketio.Client | None = None
        self.gone = threading.Event()

    def connect(self) -> bool:
        c = socketio.Client(reconnection=False)
        gone = threading.Event()
        c.on("disconnect", lambda *a: gone.set())
        try:
            c.connect(self.server.url, auth={"token": self.user.token}, transports=["websocket"], wait_timeout=3)
        except Exception:
            try:
                c.disconnect()
            except Exception:
                pass
            return False
        self.client, self.gone = c, gone
        return True

    def drop(self) -> None:
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
        self.client = None

    def send_once(self, i: int) -> dict | None:
        """One attempt: the ack, or None (timeout, disconnect, refusal to retry)."""
        text = f"s{self.n}-{i}"
        got: list = []
        done = threading.Event()

        def on_ack(*args):
            got.append(args[0] if args else None)
            done.set()

        self.attempts += 1
        try:
            self.client.emit("chat:send", {"text": text, "tempId": text, "chatId": self.chat_id}, callback=on_ack)
        except Exception:
            return None
        deadline = time.monotonic() + CALL_TIMEOUT
        while not done.is_set():
            if self.gone.is_set() or time.monotonic() > deadline:
                return None
            done.wait(0.02)
        ack = got[0]
        if isinstance(ack, dict) and "error" in ack:
            if ack["error"].get("code") == "store_unavailable":
                return None
            raise AssertionError(f"{text} refused: {ack}")
        return ack

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                self.sent = i + 1
                while True:
                    if self.client is None and not self.connect():
                        if self.stop.is_set():
                            return  # i was sent, maybe stored, never acked
                        time.sleep(0.05)
                        continue
                    ack = self.send_once(i)
                    if ack is not None:
                        break
                    self.drop()
                    if self.stop.is_set():
                        return
                text = f"s{self.n}-{i}"
                assert set(ack) == {"tempId", "id", "timestamp"} and ack["tempId"] == text, ack
                assert HEX24.fullmatch(ack["id"]), ack
                self.acked[i] = ack
                i += 1
        except Exception as e:  # reported by the test
            self.failure = f"sender {self.n}: {e!r}"
        finally:
            self.drop()


def full_history(url: str, token: str, chat_id: str) -> list[dict]:
    """Every message of the chat, paged back with beforeId; checked against
    the same paged forward with afterId."""
    headers = {"Authorization": f"Bearer {token}"}

    def page(**params):
        r = requests.get(f"{url}/messages", params={"chatId": chat_id, "limit": 100, **params},
                         headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    back: list[dict] = []
    p = page()
    while p:
        assert p == sorted(p, key=order_key), "a page is not oldest first"
        back = p + back
        p = page(beforeId=p[0]["id"])
    if not back:
        return back
    forward = [back[0]]
    while True:
        p = page(afterId=forward[-1]["id"])
        if not p:
            break
        forward += p
    assert [m["id"] for m in forward] == [m["id"] for m in back], "paging forward and back disagree"
    return back


def mongo_database_url() -> str:
    base = os.environ["MONGODB_TEST_URL"]
    head, _, query = base.partition("?")
    scheme, _, rest = head.partition("://")
    hosts = rest.split("/", 1)[0]
    url = f"{scheme}://{hosts}/crash_{uuid.uuid4().hex[:16]}"
    return f"{url}?{query}" if query else url


@pytest.fixture(params=["embedded", "mongo"])
def store_url(request, tmp_path):
    mongo_pass = os.environ.get("E2E_CHAT_STORE", "memory") == "mongo"
    if request.param == "embedded":
        if mongo_pass:
            pytest.skip("the embedded store is checked in the main pass (E2E_CHAT_STORE is mongo)")
        data = tmp_path / "store"
        data.mkdir()
        return str(data)
    if not os.environ.get("MONGODB_TEST_URL"):
        pytest.skip("MongoDB: set MONGODB_TEST_URL (and E2E_CHAT_STORE=mongo), as scripts/test.sh does")
    if not mongo_pass:
        pytest.skip("MongoDB is checked in the E2E_CHAT_STORE=mongo pass (set E2E_CHAT_STORE=mongo to run it here)")
    return mongo_database_url()


def test_acked_messages_survive_random_sigkills_once_and_in_order(store_url, tmp_path):
    rng = random.Random(SEED)
    print(f"CRASH_SEED={SEED} (replay: CRASH_SEED={SEED} pytest tests/e2e/python/test_crash_consistency.py)")
    server = Process(store_url, tmp_path / "chatwire.stderr")
    server.start()
    stop = threading.Event()
    senders: list[Sender] = []
    started = time.monotonic()
    try:
        chat_id = f"crash-{uuid.uuid4().hex[:12]}"
        users = [register(server) for _ in range(SENDERS)]
        senders = [Sender(n, u, server, chat_id, stop) for n, u in enumerate(users)]
        for s in senders:
            s.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(*KILL_GAP))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))  # down for a moment: senders retry into nothing
            server.start()
        time.sleep(AFTER_LAST_KILL)
        # The last kill lands while every sender has a message in flight:
        # those are sent, maybe stored, never acked; the senders stop there.
        stop.set()
        server.kill()
        for s in senders:
            s.join(CALL_TIMEOUT + 10)
            assert not s.is_alive(), f"[CRASH_SEED={SEED}] {s.name} is stuck"
        failures = [s.failure for s in senders if s.failure]
        assert not failures, f"[CRASH_SEED={SEED}] {failures}"
        chaos = time.monotonic() - started
        # the last restart, then the whole history
        server.start()
        stored = full_history(server.url, users[0].token, chat_id)
    finally:
        stop.set()
        server.stop()

    acked = {f"s{s.n}-{i}": ack for s in senders for i, ack in s.acked.items()}
    attempts = sum(s.attempts for s in senders)
    print(f"CRASH_SEED={SEED}: {server.kills} kills, {len(acked)} acked of {sum(s.sent for s in senders)} sent "
          f"({attempts} attempts), {len(stored)} stored, chaos {chaos:.1f}s")
    assert server.kills == KILLS + 1 and server.starts == server.kills + 1
    assert len(acked) >= SENDERS, f"[CRASH_SEED={SEED}] too few acks to prove anything: {len(acked)}"
    assert attempts > len(acked), f"[CRASH_SEED={SEED}] no send was ever retried: the kills proved nothing"

    texts = [m["text"] for m in stored]
    dupes = sorted({t for t in texts if texts.count(t) > 1})
    assert not dupes, f"[CRASH_SEED={SEED}] stored twice: {dupes[:10]}"
    ids = [m["id"] for m in stored]
    assert len(set(ids)) == len(ids), f"[CRASH_SEED={SEED}] an id twice"
    by_text = {m["text"]: m for m in stored}
    for m in stored:
        match = TEXT.fullmatch(m["text"])
        assert match and m["chatId"] == chat_id, f"[CRASH_SEED={SEED}] a message nobody sent: {m}"
        n, i = int(match.group(1)), int(match.group(2))
        assert m["authorId"] == users[n].id and m["author"] == users[n].username, m
        # sent, if not acked: only a number that was sent (at most the last one in flight)
        assert i < senders[n].sent, f"[CRASH_SEED={SEED}] {m['text']} was never sent"
    missing = [t for t in acked if t not in by_text]
    assert not missing, f"[CRASH_SEED={SEED}] acked but lost: {missing[:10]} ({len(missing)})"
    wrong = [(t, a, by_text[t]) for t, a in acked.items()
             if (by_text[t]["id"], by_text[t]["timestamp"]) != (a["id"], a["timestamp"])]
    assert not wrong, f"[CRASH_SEED={SEED}] stored with another id or time than acked: {wrong[:5]}"
    # each sender's messages in the order they were sent, in (timestamp, id) order
    for s in senders:
        mine = [int(TEXT.fullmatch(m["text"]).group(2)) for m in stored if m["authorId"] == users[s.n].id]
        assert mine == sorted(mine), f"[CRASH_SEED={SEED}] sender {s.n} out of order: {mine}"
        # every acked number is there, and nothing but the last may be missing before it
        assert set(s.acked) <= set(mine)
        assert set(mine) - set(s.acked) <= {s.sent - 1}, (s.n, sorted(set(mine) - set(s.acked)), s.sent)
