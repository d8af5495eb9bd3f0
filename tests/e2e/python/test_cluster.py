"""Three chatwire instances as one chat: REDIS_URL, one MongoDB-wire store
(SecantusDB, $MONGODB_TEST_URL) and Debian's redis-server, started here: one
server, and again a three-primary Redis Cluster (every test runs on both).
Clients (python-socketio, over WebSocket and over polling) are spread over
the instances, each client talking to one of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid

import pytest
import requests

from chatlib import TIMEOUT, ChatClient, OrderedListener, register
from conftest import run_chatwire_to_exit, start_chatwire


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A redis-server of its own, without persistence, on a fixed port (so
    that it can be stopped and started again where the instances look)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server not found (scripts/test.sh installs Debian's redis-server)")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.seeds = [self.url]
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def cluster_port() -> int:
    """A free port for a cluster node whose cluster bus port (10000 above
    it) is a port too, and free."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisCluster:
    """A Redis Cluster of three primaries (no replicas), each a redis-server
    of its own without persistence, made with `redis-cli --cluster create`.
    `url` names one node: chatwire finds the others. `stop` and `start` kill
    and bring back the primary that holds the bus's key (it rejoins with
    its slots, empty), as `Redis` does with its one server."""

    KEY = "chatwire:bus"

    def __init__(self, workdir) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            pytest.fail("redis-server/redis-cli not found (scripts/test.sh installs Debian's redis-server)")
        self.binary = binary
        self.dir = workdir
        self.ports = [cluster_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}
        for port in self.ports:
            self._start_node(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        self._wait_ok()
        self.url = f"redis://127.0.0.1:{self.ports[0]}"
        self.seeds = [f"redis://127.0.0.1:{p}" for p in self.ports]
        self.holder = self._holder()

    def _cli(self, port: int, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                              timeout=10).stdout

    def _start_node(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
             "--cluster-node-timeout", "2000", "--dir", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _ping(port):
            if time.monotonic() > deadline:
                pytest.fail("redis-server (cluster node) did not start")
            time.sleep(0.05)

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in self._cli(p, "CLUSTER", "INFO") for p in self.ports):
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not become ok")
            time.sleep(0.1)

    def _holder(self) -> int:
        slot = self._cli(self.ports[0], "CLUSTER", "KEYSLOT", self.KEY).strip()
        for line in self._cli(self.ports[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for r in fields[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= int(slot) <= int(hi or lo):
                    return port
        pytest.fail(f"no node holds slot {slot}")

    def stop(self) -> None:
        proc = self.procs[self.holder]
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def start(self) -> None:
        self._start_node(self.holder)
        self._wait_ok()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def shared_store_url() -> str:
    base = os.environ.get("MONGODB_TEST_URL")
    if not base:
        pytest.fail("the cluster tests need MONGODB_TEST_URL (scripts/test.sh starts SecantusDB)")
    head, _, query = base.partition("?")
    scheme, _, rest = head.partition("://")
    url = f"{scheme}://{rest.split('/', 1)[0]}/cluster_{uuid.uuid4().hex[:12]}"
    return f"{url}?{query}" if query else url


@pytest.fixture(scope="module", params=["standalone", "redis-cluster"])
def redis(request, tmp_path_factory):
    """Every test of this file runs on one Redis server and again on a
    three-primary Redis Cluster."""
    if request.param == "standalone":
        r = Redis()
        yield r
        r.stop()
    else:
        c = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
        yield c
        c.close()


@pytest.fixture(scope="module")
def instances(redis):
    env = {"REDIS_URL": redis.url, "DATABASE_URL": shared_store_url()}
    servers = [start_chatwire(env) for _ in range(3)]
    for s in servers:
        wait_ready(s, 200)
    yield servers
    for s in servers:
        s.stop()


def ready(server) -> int:
    return requests.get(f"{server.url}/ready", timeout=TIMEOUT).status_code


def wait_ready(server, status: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while ready(server) != status:
        if time.monotonic() > deadline:
            pytest.fail(f"/ready of {server.url} did not become {status}")
        time.sleep(0.1)


def test_a_cluster_refuses_a_store_its_instances_cannot_share(tmp_path):
    for store in ["memory:", str(tmp_path / "data")]:
        done = run_chatwire_to_exit({"REDIS_URL": "redis://127.0.0.1:1", "DATABASE_URL": store})
        assert done.returncode == 2, (store, done.stderr)
        assert "REDIS_URL" in done.stderr and "mongodb://" in done.stderr, done.stderr
    # Nothing was created where the embedded store would have been.
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_every_event_reaches_the_sockets_it_would_on_one_instance(instances, transport):
    a, b, c = instances
    ana, bob, cid = register(a), register(b), register(c)
    ca = ChatClient(a, transport).connect(ana.token)
    cb = ChatClient(b, transport).connect(bob.token)
    cc = ChatClient(c, transport).connect(cid.token)
    try:
        ack = ca.call("chat:send", {"text": "across", "tempId": "t1"})
        for other in (cb, cc):
            m = other.wait_where("chat:new-message", lambda m: m["id"] == ack["id"])
            assert m["author"] == ana.username and m["chatId"] == "general"
        # Handed to sockets on other instances: delivered, in the store too.
        assert ca.wait_where("chat:delivered", lambda d: d["messageId"] == ack["id"])
        ca.none("chat:new-message")

        # A read on B, typing on C: everyone else hears, wherever they are.
        read = cb.call("chat:read", {"messageIds": [ack["id"]]})
        assert read["messageIds"] == [ack["id"]]
        for other in (ca, cc):
            r = other.wait_where("chat:read", lambda r: r["userId"] == bob.id)
            assert r["messageIds"] == [ack["id"]]
        cc.call("chat:typing", {"isTyping": True})
        for other in (ca, cb):
            t = other.wait_where("chat:typing", lambda t: t["userId"] == cid.id)
            assert t["isTyping"] is True
        # The store they share has it read (asked of the third instance).
        stored = next(m for m in cid.messages() if m["id"] == ack["id"])
        assert stored["status"] == "read"

        # Rooms: A and B join a chat; a message to it from C reaches them only.
        room = f"room-{uuid.uuid4().hex[:8]}"
        ca.call("chat:join", {"chatId": room})
        cb.call("chat:join", {"chatId": room})
        cc.drain("chat:new-message")
        sent = cc.call("chat:send", {"text": "to the room", "chatId": room})
        for member in (ca, cb):
            assert member.wait_where("chat:new-message", lambda m: m["id"] == sent["id"])
        cc.none("chat:new-message")
        # B leaves: the next one reaches A only.
        cb.call("chat:leave", {"chatId": room})
        again = cc.call("chat:send", {"text": "after the leave", "chatId": room})
        assert ca.wait_where("chat:new-message", lambda m: m["id"] == again["id"])
        cb.none("chat:new-message")
    finally:
        for client in (ca, cb, cc):
            client.close()


def test_one_chats_messages_arrive_in_history_order_on_every_instance(instances):
    """Six users, two on each instance, sending at once into one chat: a
    socket on every instance receives the messages live in the order GET
    /messages lists them (the order is decided by each send's place on the
    bus, taken with its token), so `afterId` of any message a client saw
    returns exactly what came after it live."""
    room = f"order-{uuid.uuid4().hex[:8]}"
    users = [register(s) for s in instances]
    listeners = [OrderedListener(s, u.token, room) for s, u in zip(instances, users)]
    senders = []
    for k in range(6):
        server = instances[k % 3]
        senders.append(ChatClient(server, "websocket").connect(register(server).token))
    try:
        for listener in listeners:
            listener.wait_joined()
        for client in senders:
            client.call("chat:join", {"chatId": room})

        def send_all(client: ChatClient, k: int) -> None:
            for i in range(25):
                client.sio.emit("chat:send", {"text": f"{k}-{i}", "chatId": room, "tempId": f"{k}-{i}"})

        threads = [threading.Thread(target=send_all, args=(s, k)) for k, s in enumerate(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = [listener.read_until(150) for listener in listeners]
        reader = users[0]
        history = [m["id"] for m in reader.messages(chatId=room, limit=100, after=0)]
        history += [m["id"] for m in reader.messages(chatId=room, limit=100, afterId=history[-1])]
        assert len(set(history)) == 150
        for live in seen:
            assert live == history
        for i in range(0, 150, 7):
            caught = [m["id"] for m in reader.messages(chatId=room, limit=100, afterId=history[i])]
            assert caught == history[i + 1:i + 101], i
    finally:
        for listener in listeners:
            listener.close()
        for client in senders:
            client.close()


def test_the_bus_is_counted_and_an_entry_it_cannot_read_is_passed_over(instances, redis):
    """`/metrics` counts what each instance reads from and publishes on the
    bus, by kind; an entry of another version (or not chatwire's at all)
    on the stream every instance reads is counted as undecodable on every
    instance, and the chat goes on. A chat's traffic reaches only the
    instances with members in it."""
    from test_metrics import Scrape

    a, b, _ = instances
    ana, bob = register(a), register(b)
    ca = ChatClient(a, "websocket").connect(ana.token)
    cb = ChatClient(b, "websocket").connect(bob.token)
    try:
        before = [Scrape(s) for s in instances]
        port = str(urllib.parse.urlparse(redis.url).port)
        for data in ['2{"t":"b","from":"a newer release"}', "not an entry"]:
            done = subprocess.run(["redis-cli", "-c", "-p", port, "XADD", "chatwire:bus", "*", "d", data],
                                  capture_output=True, text=True, timeout=10)
            assert done.returncode == 0 and "-" in done.stdout, (done.stdout, done.stderr)
        ack = ca.call("chat:send", {"text": "counted"})
        assert cb.wait_where("chat:new-message", lambda m: m["id"] == ack["id"])
        after = [Scrape(s) for s in instances]
        for i, (was, now) in enumerate(zip(before, after)):
            def grew(name: str, **labels: str) -> float:
                return now.get(name, **labels) - was.get(name, **labels)  # noqa: B023

            assert grew("chatwire_bus_undecodable_total") == 2, i
            assert grew("chatwire_bus_entries_total", way="in", kind="other") == 2, i
            # The send's place and its event came back to the instances with
            # a member in the chat, and to no other.
            for kind in ("place", "broadcast"):
                if i < 2:
                    assert grew("chatwire_bus_entries_total", way="in", kind=kind) >= 1, (i, kind)
                    assert grew("chatwire_bus_bytes_total", way="in", kind=kind) > 0, (i, kind)
                else:
                    assert grew("chatwire_bus_entries_total", way="in", kind=kind) == 0, (i, kind)
            # Each reads the streams of the rooms its sockets are in: the
            # chat and its user's own room; the third none.
            assert now.get("chatwire_bus_subscriptions") == (2 if i < 2 else 0), i
        # The sender's instance published the event (its place went with the
        # token's take, in Redis) and timed the round trip.
        assert after[0].get("chatwire_bus_entries_total", way="out", kind="broadcast") > \
            before[0].get("chatwire_bus_entries_total", way="out", kind="broadcast")
        assert after[0].get("chatwire_bus_publish_duration_seconds_count") > 0
        assert after[0].get("chatwire_bus_held_places") == 0
    finally:
        ca.close()
        cb.close()


def test_each_instance_keeps_its_subscriber_connection(instances, redis):
    """The connection on which an instance hears its chats' channels (on the
    server where the bus's scripts publish: in a Redis Cluster, the primary
    holding the bus's slot) outlives the pings that check it, every 5 s: it
    is not dropped and opened again (which would subscribe to and read
    every chat of the instance again)."""
    ports = [str(p) for p in getattr(redis, "ports", [urllib.parse.urlparse(redis.url).port])]

    def subscribers() -> set[str]:
        found = set()
        for port in ports:
            done = subprocess.run(["redis-cli", "-p", port, "CLIENT", "LIST", "TYPE", "pubsub"],
                                  capture_output=True, text=True, timeout=10)
            assert done.returncode == 0, done.stderr
            found |= {(port, line.split()[0]) for line in done.stdout.splitlines()
                      if line.startswith("id=")}
        # All on one server: the one whose scripts publish.
        assert len({port for port, _ in found}) <= 1, found
        return found

    # A socket on each, so that each listens to its rooms' channels.
    clients = [ChatClient(s, "websocket").connect(register(s).token) for s in instances]
    try:
        before = subscribers()
        assert len(before) == len(instances), before
        time.sleep(6)
        assert subscribers() == before
    finally:
        for c in clients:
            c.close()


def test_redis_url_may_list_seed_nodes(redis):
    """REDIS_URL as a comma-separated list of nodes (a cluster's seeds; one
    server's one URL) makes one chat as well."""
    env = {"REDIS_URL": ",".join(redis.seeds), "DATABASE_URL": shared_store_url()}
    a, b = start_chatwire(env), start_chatwire(env)
    try:
        for s in (a, b):
            wait_ready(s, 200)
        ana, bob = register(a), register(b)
        ca = ChatClient(a, "websocket").connect(ana.token)
        cb = ChatClient(b, "websocket").connect(bob.token)
        try:
            sent = ca.call("chat:send", {"text": "to the seeds"})
            assert cb.wait_where("chat:new-message", lambda m: m["id"] == sent["id"])["text"] == "to the seeds"
            back = cb.call("chat:send", {"text": "and back"})
            assert ca.wait_where("chat:new-message", lambda m: m["id"] == back["id"])
        finally:
            ca.close()
            cb.close()
    finally:
        a.stop()
        b.stop()


def test_the_rate_limit_holds_across_instances(instances):
    user = register(instances[0])
    clients = [ChatClient(s, "websocket").connect(user.token) for s in instances]
    try:
        start = time.monotonic()

        def fire(client: ChatClient) -> None:
            for i in range(40):
                client.sio.emit("chat:send", {"text": f"burst {i}"})

        threads = [threading.Thread(target=fire, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fired = time.monotonic() - start
        acked = limited = 0
        deadline = time.monotonic() + 15
        while acked + limited < 120 and time.monotonic() < deadline:
            for client in clients:
                acked += len(client.drain("chat:ack"))
                for e in client.drain("error"):
                    assert e["code"] == "rate_limited", e
                    limited += 1
            time.sleep(0.02)
        elapsed = time.monotonic() - start
        assert acked + limited == 120, (acked, limited)
        # One bucket for the user across the cluster: a burst of 40 and 20
        # a second, within 10 %.
        allowed = 40 + 20 * elapsed
        assert 36 <= acked <= 1.1 * allowed, (acked, elapsed)
        print(f"rate limit across instances: {acked} acked, fired in {fired:.2f} s, all answered in {elapsed:.2f} s")
    finally:
        for client in clients:
            client.close()


def test_a_redis_restart_is_survived_and_what_was_sent_meanwhile_arrives_after(instances, redis):
    from test_metrics import Scrape

    a, b, _ = instances
    ana, bob = register(a), register(b)
    ca = ChatClient(a, "websocket").connect(ana.token)
    cb = ChatClient(b, "websocket").connect(bob.token)
    try:
        # Every instance has read something of the stream before it goes.
        first = ca.call("chat:send", {"text": "before"})
        cb.wait_where("chat:new-message", lambda m: m["id"] == first["id"])
        time.sleep(0.3)
        gaps = [Scrape(s).get("chatwire_bus_gaps_total") for s in instances]
        redis.stop()
        for s in instances:
            wait_ready(s, 503)
        # A send while Redis is away waits for its turn on the bus (the rate
        # limit is the cluster's): nothing is acked before it is back...
        answer: list = []
        sender = threading.Thread(
            target=lambda: answer.append(ca.call("chat:send", {"text": "while Redis was away"},
                                                 timeout=15)))
        sender.start()
        time.sleep(1.0)
        assert answer == []
        redis.start()
        for s in instances:
            wait_ready(s, 200)
        # ...and then it is stored, acked and delivered (a longer outage, past
        # 5 s, refuses it with store_unavailable: the simulation shows that).
        sender.join(15)
        assert answer and "id" in answer[0], answer
        ack = answer[0]
        m = cb.wait_where("chat:new-message", lambda m: m["id"] == ack["id"], timeout=15)
        assert m["text"] == "while Redis was away"
        # And the bus works as before.
        again = cb.call("chat:send", {"text": "after"})
        assert ca.wait_where("chat:new-message", lambda m: m["id"] == again["id"])
        # The stream came back empty: every instance knows that entries it
        # had not read may be gone (no session recovers from before it).
        for s, was in zip(instances, gaps):
            assert Scrape(s).get("chatwire_bus_gaps_total") == was + 1, s.url
    finally:
        ca.close()
        cb.close()


def test_a_retry_on_another_instance_stores_nothing_new(instances):
    a, b, c = instances
    ana, bob = register(a), register(c)
    first = ChatClient(a, "websocket").connect(ana.token)
    retry = ChatClient(b, "websocket").connect(ana.token)
    watcher = ChatClient(c, "websocket").connect(bob.token)
    try:
        temp = f"t-{uuid.uuid4().hex[:8]}"
        ack1 = first.call("chat:send", {"text": "once", "tempId": temp})
        ack2 = retry.call("chat:send", {"text": "once", "tempId": temp})
        assert ack2 == ack1
        assert watcher.wait_where("chat:new-message", lambda m: m["id"] == ack1["id"])
        # One message, broadcast once.
        watcher.none("chat:new-message")
        assert [m["id"] for m in bob.messages() if m["text"] == "once"] == [ack1["id"]]
    finally:
        for client in (first, retry, watcher):
            client.close()


class RoundRobinProxy:
    """A load balancer with no affinity, in test code: each HTTP request goes
    to the next instance in turn (over a fresh connection to it), and so does
    each WebSocket (the upgrade request picks the instance, then the bytes
    are carried both ways). It records which instance each Engine.IO
    session's requests reached."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.turn = 0
        self.reached: dict[str, set[int]] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self.serve, "127.0.0.1", self.port))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(5)

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def next_backend(self, target: str) -> int:
        backend = self.backends[self.turn % len(self.backends)]
        self.turn += 1
        query = urllib.parse.urlparse(target).query
        sid = urllib.parse.parse_qs(query).get("sid", [None])[0]
        if sid:
            self.reached.setdefault(sid, set()).add(backend)
        return backend

    @staticmethod
    async def read_message(reader) -> tuple[bytes, dict[str, str], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        assert "chunked" not in headers.get("transfer-encoding", ""), headers
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
        return head, headers, body

    @staticmethod
    async def pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def serve(self, reader, writer) -> None:
        try:
            while True:
                head, headers, body = await self.read_message(reader)
                target = head.split(b" ", 2)[1].decode()
                backend = self.next_backend(target)
                br, bw = await asyncio.open_connection("127.0.0.1", backend)
                bw.write(head + body)
                await bw.drain()
                if "upgrade" in headers.get("connection", "").lower():
                    await asyncio.gather(self.pipe(reader, bw), self.pipe(br, writer))
                    return
                rhead, _, rbody = await self.read_message(br)
                bw.close()
                writer.write(rhead + rbody)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def proxy(instances):
    p = RoundRobinProxy([s.port for s in instances])
    yield p
    p.close()


@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
def test_no_sticky_sessions_behind_a_round_robin_balancer(instances, proxy, mode):
    transports = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": None}[mode]
    ana, bob = register(instances[0]), register(instances[1])

    def client(user) -> ChatClient:
        c = ChatClient(proxy, "websocket")
        c.sio.connect(proxy.url, auth={"token": user.token}, transports=transports,
                      wait_timeout=TIMEOUT)
        return c

    ca, cb = client(ana), client(bob)
    try:
        if mode == "upgrade":
            # The upgrade reached any instance: relayed to the holder, it
            # went through.
            assert ca.sio.transport() == "websocket" and cb.sio.transport() == "websocket"
        for k in range(6):
            ack = ca.call("chat:send", {"text": f"a{k}"})
            assert cb.wait_where("chat:new-message", lambda m: m["id"] == ack["id"])
            back = cb.call("chat:send", {"text": f"b{k}"})
            assert ca.wait_where("chat:new-message", lambda m: m["id"] == back["id"])
        assert ca.wait_where("chat:delivered", lambda d: d["messageId"] == ack["id"])
        if mode == "polling":
            # Each session's requests reached more than one instance.
            sids = [s for s in proxy.reached if len(proxy.reached[s]) > 1]
            assert len(sids) >= 2, proxy.reached
    except BaseException as e:
        # What each instance holds back, for whoever reads the failure.
        from test_metrics import Scrape

        state = []
        for s in instances:
            m = Scrape(s)
            state.append({k: m.get(f"chatwire_bus_{k}") for k in ("held_places", "outbox", "subscriptions")})
        raise AssertionError(f"{e!r}; the instances' bus: {state}") from e
    finally:
        ca.close()
        cb.close()


def test_an_instance_killed_under_load_loses_no_acked_message(redis):
    env = {"REDIS_URL": redis.url, "DATABASE_URL": shared_store_url()}
    servers = [start_chatwire(env) for _ in range(3)]
    for s in servers:
        wait_ready(s, 200)
    users = [register(s) for s in servers]
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list = []

    def send_through(k: int) -> None:
        """Sends with tempIds, one at a time; when its instance dies, it
        connects to the next one alive and sends the unanswered one again."""
        at = k
        client = ChatClient(servers[at], "websocket").connect(users[k].token)
        i = 0
        try:
            while not stop.is_set() and i < 400:
                temp = f"{k}-{i}"
                try:
                    ack = client.call("chat:send", {"text": temp, "tempId": temp}, timeout=3)
                except Exception:  # the instance died: the next one
                    client.close()
                    at = (at + 1) % 3
                    while not servers[at].alive():
                        at = (at + 1) % 3
                    client = ChatClient(servers[at], "websocket").connect(users[k].token)
                    continue
                if "id" in ack:
                    with lock:
                        acked.add(ack["id"])
                    i += 1
                else:
                    assert ack["error"]["code"] in ("rate_limited", "store_unavailable"), ack
                    time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=send_through, args=(k,)) for k in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        servers[2].kill()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert len(acked) > 30, len(acked)
        # Every acknowledged message is in the store the survivors share.
        stored: set[str] = set()
        before = None
        while True:
            params = {"limit": 100, **({"beforeId": before} if before else {})}
            page = users[0].messages(**params)
            if not page:
                break
            stored.update(m["id"] for m in page)
            before = page[0]["id"]
        assert acked <= stored, len(acked - stored)
        # And the survivors still make one chat: the places the killed
        # instance took for sends it never published hold the chat until
        # the bus has gone on for 10 s without a word from it (SILENT_FOR),
        # then it goes on.
        a = ChatClient(servers[0], "websocket").connect(users[0].token)
        b = ChatClient(servers[1], "websocket").connect(users[1].token)
        try:
            ack = a.call("chat:send", {"text": "after the kill"})
            assert b.wait_where("chat:new-message", lambda m: m["id"] == ack["id"], timeout=10 + TIMEOUT)
        finally:
            a.close()
            b.close()
    finally:
        stop.set()
        for s in servers:
            s.stop()
