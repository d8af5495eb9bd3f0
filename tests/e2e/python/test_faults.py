"""The cluster under faults, checked by invariants over everything recorded.

Three chatwire instances (connection state recovery on, and again off) on one Redis and
one MongoDB-wire store. Four users send into `general` with acks, each
message with its own `tempId`; a send that fails (its instance died, Redis
was away) is sent again with the same `tempId` through an instance drawn at
random. Three watchers (raw Socket.IO over WebSocket, in arrival order)
read the chat; when their connection breaks they come back through any
instance with their `pid` and `offset`, and when they are not recovered
they catch up with `GET /messages?afterId=` as the README tells a client
to. Meanwhile, in an order drawn from the seed: an instance SIGKILLed and
a new one started, an instance stopped with SIGTERM and a new one started,
Redis paused for 3 s and for 8 s (SIGSTOP), Redis restarted empty.

Then, once everything is quiet, checked:
- every acknowledged message is stored, once, with the id its ack gave;
  no message is stored twice;
- each watcher ends up with every message of the chat, once; nothing
  came twice live on one connection (or one session, across recoveries),
  and what came live that was new to the watcher came in history's order
  (a client drops by id what it has: an event its catch-up gave it
  already, or one a send's retry published again because its first
  publish could not be shown to have happened); a recovery that answered
  `recovered: true` left no hole (nothing is caught up after it);
- the instances hold nothing back (no place waiting, empty outboxes) and
  their memory stays bounded.

`FAULT_SEED` (default 1) draws the run; `FAULT_SECONDS` (default 3) is the
normal traffic between two faults. The test command runs one seed; a
campaign runs more (docs/TESTING.md says which and how).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import pytest
import requests
import websocket

from chatlib import TIMEOUT, ChatClient, register
from conftest import start_chatwire
from test_cluster import Redis, shared_store_url, wait_ready
from test_metrics import Scrape

SEED = int(os.environ.get("FAULT_SEED", "1"))
BETWEEN = float(os.environ.get("FAULT_SECONDS", "3"))
FAULTS = ["kill", "term", "pause3", "pause8", "redis-empty"]
# The most resident memory an instance (a debug build) may reach here.
MEMORY_BOUND = 400 << 20


class Fleet:
    """The instances: index i is always the newest process in slot i."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.lock = threading.Lock()
        self.servers = [start_chatwire(env) for _ in range(3)]
        for s in self.servers:
            wait_ready(s, 200, 30)

    def live(self) -> list:
        with self.lock:
            return [s for s in self.servers if s.alive()]

    def pick(self, rng: random.Random):
        live = self.live()
        return rng.choice(live) if live else None

    def replace(self, i: int, how: str) -> None:
        old = self.servers[i]
        if how == "kill":
            old.kill()
        else:
            old.stop()
        new = start_chatwire(self.env)
        wait_ready(new, 200, 30)
        with self.lock:
            self.servers[i] = new

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def history(server, token: str) -> list[dict]:
    """Every message of `general`, in history's order (pages of 100)."""
    out: list[dict] = []
    params: dict = {"chatId": "general", "limit": 100, "after": 0}
    while True:
        r = requests.get(f"{server.url}/messages", params=params,
                         headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
        assert r.status_code == 200, (r.status_code, r.text)
        page = r.json()
        out += page
        if len(page) < 100:
            return out
        params = {"chatId": "general", "limit": 100, "afterId": page[-1]["id"]}


class Sender(threading.Thread):
    """Sends `k-0`, `k-1`, ... with acks; a failed send goes again, same
    `tempId`, through an instance drawn at random. It stops only between
    two acknowledged messages, so that every message it stored is
    published (an ack means the event went out)."""

    def __init__(self, k: int, token: str, fleet: Fleet, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.k, self.token, self.fleet, self.stop_ = k, token, fleet, stop
        self.rng = random.Random(SEED * 1000 + k)
        self.acked: dict[str, dict] = {}
        self.refusals: dict[str, int] = {}
        self.errors: list = []

    def run(self) -> None:
        client = None
        i = 0
        try:
            while not self.stop_.is_set():
                temp = f"{self.k}-{i}"
                while True:
                    if client is None:
                        server = self.fleet.pick(self.rng)
                        try:
                            client = ChatClient(server, "websocket").connect(self.token)
                        except Exception:  # noqa: BLE001 - dying or not ready: another
                            client = None
                            time.sleep(0.2)
                            continue
                    try:
                        ack = client.call("chat:send", {"text": temp, "tempId": temp}, timeout=4)
                    except Exception:  # noqa: BLE001 - its instance died, or no answer
                        client.close()
                        client = None
                        continue
                    if "id" in ack:
                        assert ack["tempId"] == temp, ack
                        self.acked[temp] = ack
                        break
                    code = ack["error"]["code"]
                    assert code in ("store_unavailable", "shutting_down", "rate_limited"), ack
                    self.refusals[code] = self.refusals.get(code, 0) + 1
                    if code == "shutting_down":
                        client.close()
                        client = None
                    time.sleep(0.2)
                i += 1
                time.sleep(self.rng.uniform(0.02, 0.12))
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))
        finally:
            if client is not None:
                client.close()


class Watcher(threading.Thread):
    """Reads `general` on a raw Socket.IO connection; comes back through any
    instance with its pid and offset when the connection breaks."""

    def __init__(self, name: str, token: str, fleet: Fleet, first, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.name, self.token, self.fleet, self.stop_ = name, token, fleet, stop
        self.first = first
        self.rng = random.Random(f"{SEED}-{name}")
        self.seen: list[str] = []
        self.seen_set: set[str] = set()
        # What each session (one sid, across recoveries) got live, in order;
        # and of that, what was new to this watcher when it came.
        self.sessions: list[list[str]] = []
        self.firsts: list[list[str]] = []
        self.sid = self.pid = self.offset = None
        self.recovered = self.fresh = 0
        # Where in its session each recovery happened, and through what.
        self.recovered_at: list = []
        self.violations: list[str] = []
        self.ready = threading.Event()

    def run(self) -> None:
        server = self.first
        while not self.stop_.is_set():
            if server is None or not server.alive():
                server = self.fleet.pick(self.rng)
                if server is None:
                    time.sleep(0.2)
                    continue
            try:
                self.session(server)
            except Exception:  # noqa: BLE001 - the connection broke: come back
                pass
            server = None
            time.sleep(0.1)

    def session(self, server) -> None:
        ws = websocket.create_connection(f"{server.ws_url}/socket.io/?EIO=4&transport=websocket",
                                         timeout=2)
        try:
            opened = ws.recv()
            assert opened.startswith("0{"), opened
            auth = {"token": self.token}
            if self.pid is not None:
                auth |= {"pid": self.pid, "offset": self.offset} if self.offset else {"pid": self.pid}
            ws.send("40" + json.dumps(auth))
            while not self.stop_.is_set():
                try:
                    frame = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if frame == "":
                    raise ConnectionError("closed")
                if frame == "2":
                    ws.send("3")
                elif frame.startswith("40{"):
                    self.connected(server, json.loads(frame[2:]))
                elif frame.startswith("44"):
                    raise ConnectionError(frame)
                elif frame.startswith("42"):
                    self.event(json.loads(frame[2:]))
        finally:
            ws.close()

    def connected(self, server, reply: dict) -> None:
        if self.sid is not None and reply["sid"] == self.sid:
            self.recovered += 1
            self.recovered_at.append((len(self.sessions[-1]), server.url))
        else:
            if self.sid is not None:
                # Not recovered: catch up from history, as a client does.
                self.fresh += 1
                self.catch_up(server)
            self.sessions.append([])
            self.firsts.append([])
            self.sid, self.pid = reply["sid"], reply.get("pid")
        self.ready.set()

    def catch_up(self, server) -> None:
        params: dict = {"chatId": "general", "limit": 100}
        params |= {"afterId": self.seen[-1]} if self.seen else {"after": 0}
        while True:
            r = requests.get(f"{server.url}/messages", params=params,
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=TIMEOUT)
            assert r.status_code == 200, (r.status_code, r.text)
            page = r.json()
            for m in page:
                if m["id"] not in self.seen_set:
                    self.seen.append(m["id"])
                    self.seen_set.add(m["id"])
            if len(page) < 100:
                return
            params = {"chatId": "general", "limit": 100, "afterId": page[-1]["id"]}

    def event(self, data: list) -> None:
        if data[0] != "chat:new-message" or data[1].get("chatId") != "general":
            return
        mid = data[1]["id"]
        if isinstance(data[-1], str):
            self.offset = data[-1]
        session = self.sessions[-1]
        if mid in session:
            self.violations.append(f"{mid} twice in one session")
        session.append(mid)
        if mid not in self.seen_set:
            self.firsts[-1].append(mid)
            self.seen.append(mid)
            self.seen_set.add(mid)


def pause_redis(redis: Redis, seconds: float) -> None:
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        redis.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("recovery", [True, False], ids=["recovery", "no-recovery"])
def test_a_seeded_fault_run_keeps_every_invariant(tmp_path, recovery):
    """With recovery on, every instance reads every event of the chat (on
    `chatwire:bus`); with it off, each reads the chat's own stream, and
    only while one of its sockets is in the chat: the same invariants hold
    (without recovery a watcher is never recovered, and catches up)."""
    rng = random.Random(SEED)
    redis = Redis()
    env = {
        "REDIS_URL": redis.url,
        "DATABASE_URL": shared_store_url(),
        # The limit is not what is tried here.
        "RATE_LIMIT_BURST": "1000",
        "RATE_LIMIT_PER_SECOND": "1000",
    }
    if recovery:
        env["RECOVERY_WINDOW_MS"] = "60000"
    fleet = Fleet(env)
    stop_watching, stop_sending = threading.Event(), threading.Event()
    watchers: list[Watcher] = []
    senders: list[Sender] = []
    try:
        users = [register(fleet.servers[0]) for _ in range(7)]
        watchers = [Watcher(f"w{i}", users[i].token, fleet, fleet.servers[i], stop_watching)
                    for i in range(3)]
        for w in watchers:
            w.start()
            assert w.ready.wait(10), w.name
        senders = [Sender(k, users[3 + k].token, fleet, stop_sending) for k in range(4)]
        for s in senders:
            s.start()
        faults = FAULTS[:]
        rng.shuffle(faults)
        done = []
        for fault in faults:
            time.sleep(BETWEEN)
            print(f"fault {fault} at {int(time.time() * 1000)}")
            if fault in ("kill", "term"):
                fleet.replace(rng.randrange(3), fault)
            elif fault == "pause3":
                pause_redis(redis, 3)
            elif fault == "pause8":
                pause_redis(redis, 8)
            else:
                redis.stop()
                time.sleep(0.5)
                redis.start()
            for s in fleet.live():
                wait_ready(s, 200, 30)
            done.append(fault)
        time.sleep(BETWEEN)
        stop_sending.set()
        for s in senders:
            s.join(60)
            assert not s.is_alive(), f"sender {s.k} did not finish its last message"
        # Quiet: every event on its way lands (a place held for a dead
        # instance's send lets go once the bus has not heard it for 10 s).
        reader = users[0].token
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            stored = history(fleet.live()[0], reader)
            if all(len(w.seen) >= len(stored) for w in watchers):
                break
            time.sleep(0.5)
        time.sleep(1)
        stop_watching.set()
        for w in watchers:
            w.join(10)

        stored = history(fleet.live()[0], reader)
        ids = [m["id"] for m in stored]
        texts = [m["text"] for m in stored]
        record = {"seed": SEED, "faults": done, "stored": len(ids),
                  "acked": sum(len(s.acked) for s in senders),
                  "refusals": [s.refusals for s in senders],
                  "watchers": [{"live_sessions": len(w.sessions), "recovered": w.recovered,
                                "caught_up": w.fresh} for w in watchers]}
        record["instances"] = [
            {k: Scrape(s).get(f"chatwire_bus_{k}_total") for k in ("places_passed", "unplaced", "gaps", "duplicates")}
            for s in fleet.live()]
        (tmp_path / "record.json").write_text(json.dumps(record))
        print(json.dumps(record))

        # Stored once each, and every ack names what is stored.
        assert len(set(ids)) == len(ids)
        assert len(set(texts)) == len(texts), "a message stored twice"
        by_text = {m["text"]: m for m in stored}
        for s in senders:
            assert not s.errors, s.errors
            for temp, ack in s.acked.items():
                assert temp in by_text, f"acked {temp} is not stored"
                assert by_text[temp]["id"] == ack["id"], (temp, ack)
        assert record["acked"] > 50, record
        # Nothing stored that no one was acked for (senders finish theirs).
        acked_texts = {t for s in senders for t in s.acked}
        assert set(texts) == acked_texts

        position = {mid: i for i, mid in enumerate(ids)}
        for w in watchers:
            assert not w.violations, (w.name, w.violations[:5])
            assert len(w.seen) == len(set(w.seen))
            missing = [mid for mid in ids if mid not in w.seen_set]
            assert not missing, (w.name, len(missing), record)
            assert w.seen_set <= set(ids), w.name
            for session in w.firsts:
                at = [position[mid] for mid in session]
                wrong = next((i for i in range(1, len(at)) if at[i] < at[i - 1]), None)
                if wrong is not None:
                    print("OUT OF ORDER at", wrong, "recoveries", w.recovered_at, w.name, json.dumps(
                        [(session[i], stored[at[i]]["text"], stored[at[i]]["timestamp"], at[i])
                         for i in range(max(0, wrong - 3), min(len(at), wrong + 3))]))
                assert wrong is None, (w.name, "live order is not history's order",
                                       [stored[at[i]] for i in range(max(0, wrong - 2), min(len(at), wrong + 2))]
                                       if wrong is not None else None)

        for s in fleet.live():
            scrape = Scrape(s)
            assert scrape.get("chatwire_bus_held_places") == 0, s.url
            assert scrape.get("chatwire_bus_outbox") == 0, s.url
            assert scrape.get("process_resident_memory_bytes") < MEMORY_BOUND, s.url
    finally:
        stop_sending.set()
        stop_watching.set()
        fleet.stop()
        redis.stop()
