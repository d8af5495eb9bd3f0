"""chatwire as a process: durability across SIGKILL, graceful SIGTERM, and
configuration (docs/API.md on durability and tokens; the README's configuration)."""

from __future__ import annotations

import json
import resource
import signal
import socket
import subprocess
import threading
import time

import jwt
import websocket
import pytest
import requests

from chatlib import (PASSWORD, TIMEOUT, ChatClient, User, assert_detail, cpu_seconds, get_messages, mint,
                     register, unique)
from conftest import (JWT_SECRET, Server, chatwire_bin, chatwire_env, merged_env, run_chatwire_to_exit,
                      start_chatwire)


# ---------------------------------------------------------------- durability


def test_acked_messages_survive_sigkill(tmp_path):
    data = tmp_path / "store"
    data.mkdir()
    server = start_chatwire({"DATABASE_URL": str(data)})
    clients: list[ChatClient] = []
    try:
        assert requests.get(server.url + "/ready", timeout=TIMEOUT).status_code == 200
        users = [register(server) for _ in range(4)]
        clients = [ChatClient(server).connect(u.token) for u in users]
        chat_id = unique("durable")
        acks: list[dict] = []
        lock = threading.Lock()
        all_acked = threading.Event()
        n = 100

        def on_ack(a):
            with lock:
                acks.append(a)
                if len(acks) == n:
                    all_acked.set()

        for k in range(n // len(clients)):
            for i, c in enumerate(clients):
                c.sio.emit("chat:send", {"text": f"d{i}-{k}", "tempId": f"d{i}-{k}", "chatId": chat_id},
                           callback=on_ack)
        assert all_acked.wait(20), f"{len(acks)} acks of {n}"
        # no grace: the acks are out, the process dies at once
        server.kill()
    finally:
        for c in clients:
            c.close()
        server.kill()
    assert all("error" not in a for a in acks), [a for a in acks if "error" in a][:3]

    server = start_chatwire({"DATABASE_URL": str(data)})
    try:
        reader = User(server, users[0].username, users[0].token, users[0].user)
        stored = reader.messages(chatId=chat_id, limit=100)
        assert {m["id"] for m in stored} == {a["id"] for a in acks}
        by_id = {m["id"]: m for m in stored}
        for a in acks:
            assert by_id[a["id"]]["timestamp"] == a["timestamp"]
            assert by_id[a["id"]]["text"] == a["tempId"]
        # the accounts survive too, and sending works again
        r = requests.post(server.url + "/login", json={"username": users[0].username, "password": PASSWORD},
                          timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        c = ChatClient(server).connect(r.json()["access_token"])
        try:
            ack = c.call("chat:send", {"text": "after restart", "chatId": chat_id})
            assert "error" not in ack and ack["id"] not in {a["id"] for a in acks}
            # (ids grow within one process only: the contract promises no more)
            # a retry of an acked tempId after the restart still stores nothing new
            again = c.call("chat:send", {"text": "d0-0", "tempId": "d0-0", "chatId": chat_id})
            first = next(a for a in acks if a["tempId"] == "d0-0")
            assert again == first
        finally:
            c.close()
    finally:
        server.stop()


# ---------------------------------------------------------------- busy poll


def test_a_busy_poll_serves_the_chat_and_sleeps_when_idle():
    """BUSY_POLL_MICROS keeps the node polling after each turn: messages
    back to back are acked and delivered in order, and once nothing comes the
    server sleeps (it does not keep a core busy)."""
    server = start_chatwire({"BUSY_POLL_MICROS": "10000"})
    clients: list[ChatClient] = []
    try:
        alice, bob = register(server), register(server)
        a, b = ChatClient(server).connect(alice.token), ChatClient(server).connect(bob.token)
        clients = [a, b]
        chat_id = unique("busy")
        for c in clients:
            assert "error" not in c.call("chat:join", {"chatId": chat_id})
        sent = [a.call("chat:send", {"text": f"m{i}", "tempId": f"t{i}", "chatId": chat_id}) for i in range(30)]
        assert all("error" not in ack for ack in sent), sent[:3]
        got = [b.wait_where("chat:new-message", lambda m: m.get("chatId") == chat_id)["text"] for _ in sent]
        assert got == [f"m{i}" for i in range(30)]
        # history (oldest first) has them once each, in the order acked
        assert [m["id"] for m in bob.messages(chatId=chat_id, limit=30)] == [ack["id"] for ack in sent]
        # Quiet now (the clients' heartbeats are 25 s apart): the server
        # polls 10 ms after its last turn, then sleeps.
        time.sleep(0.5)
        before = cpu_seconds(server.proc.pid)
        time.sleep(2)
        spent = cpu_seconds(server.proc.pid) - before
        assert spent < 0.5, f"{spent:.2f} s of CPU in 2 s with nothing to do"
    finally:
        for c in clients:
            c.close()
        server.stop()


# ---------------------------------------------------------------- graceful shutdown


def test_sigterm_exits_zero_and_clients_see_a_disconnect():
    server = start_chatwire()
    user = register(server)
    clients = [ChatClient(server, t).connect(user.token) for t in ("websocket", "polling")]
    try:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        for c in clients:
            assert c.disconnected.wait(5), f"{c.transport} client saw no disconnect"
    finally:
        for c in clients:
            c.close()
        server.stop()


def _healthcheck(port: int) -> subprocess.CompletedProcess:
    # as the container runs it: HOST 0.0.0.0 (probed on loopback), PORT
    return subprocess.run([str(chatwire_bin()), "--healthcheck"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=10, env=merged_env({"HOST": "0.0.0.0", "PORT": str(port)}))


def test_healthcheck_flag_probes_ready():
    """`chatwire --healthcheck`, the Dockerfile's HEALTHCHECK: 0 while a server answers, 1 once it is gone."""
    server = start_chatwire()
    try:
        up = _healthcheck(server.port)
        assert up.returncode == 0, up.stderr
        assert "200" in up.stdout, up.stdout
    finally:
        server.stop()
    down = _healthcheck(server.port)
    assert down.returncode == 1, down
    assert f"127.0.0.1:{server.port}" in down.stderr, down.stderr


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "env, words",
    [
        ({"JWT_SECRET": "x" * 31}, ["JWT_SECRET"]),
        ({"JWT_SECRET": ""}, ["JWT_SECRET"]),
        ({"JWT_ALGORITHM": "none"}, ["JWT_ALGORITHM"]),
        ({"JWT_ALGORITHM": "RS256"}, ["JWT_ALGORITHM"]),
        ({"DATABASE_URL": "ftp://x"}, ["DATABASE_URL"]),
        ({"RATE_LIMIT_BURST": "0"}, ["RATE_LIMIT_BURST"]),
        ({"RATE_LIMIT_PER_SECOND": "0"}, ["RATE_LIMIT_PER_SECOND"]),
        ({"BUSY_POLL_MICROS": "10001"}, ["BUSY_POLL_MICROS"]),
        ({"BUSY_POLL_MICROS": "-1"}, ["BUSY_POLL_MICROS"]),
    ],
    ids=["short secret", "empty secret", "alg none", "alg RS256", "ftp database", "no burst", "no rate",
         "busy poll too long", "busy poll negative"],
)
def test_bad_config_refused(env, words):
    done = run_chatwire_to_exit(chatwire_env(**env))
    assert done.returncode != 0
    assert "listening on" not in done.stdout
    err = done.stderr
    for word in words:
        # the message names the setting (as variable or flag)
        flag = "--" + word.lower().replace("_", "-")
        assert word in err or flag in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Nothing listens there: chatwire retries MongoDB for about 20 s at start.
def _unreachable_mongo() -> str:
    return f"mongodb://127.0.0.1:{_free_port()}/chatdb?serverSelectionTimeoutMS=300"


def test_a_bad_redis_url_is_refused_before_mongodb_is_tried():
    started = time.monotonic()
    done = run_chatwire_to_exit(chatwire_env(DATABASE_URL=_unreachable_mongo(), REDIS_URL="bogus://x"))
    assert done.returncode == 2, done
    assert "REDIS_URL" in done.stderr, done.stderr
    assert "MongoDB" not in done.stderr, done.stderr
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_while_mongodb_is_retried_at_start_ends_it_at_once(sig):
    proc = subprocess.Popen([str(chatwire_bin()), "--host", "127.0.0.1", "--port", "0"],
                            env=merged_env(chatwire_env(DATABASE_URL=_unreachable_mongo(), RUST_LOG="info")),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait for the first failed attempt: the server is inside the retries.
        lines = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "MongoDB not reachable yet" in line:
                break
        else:
            pytest.fail("no retry logged: " + "".join(lines))
        # One short line per attempt: the address and the cause, not the driver's dump.
        assert "Connection refused" in line and "Topology" not in line and len(line) < 300, line
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=5)
        assert time.monotonic() - sent < 2, "the stop waited for the retries"
        assert proc.returncode == 0, (proc.returncode, err)
        assert "stopped before the store was open" in err, err
        assert "listening on" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mongodb_unreachable_at_start_is_one_clear_line():
    done = run_chatwire_to_exit(chatwire_env(DATABASE_URL=_unreachable_mongo()), timeout=40)
    assert done.returncode == 2, done
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("chatwire: DATABASE_URL"), last
    assert "MongoDB unreachable after" in last and "Connection refused" in last, last
    assert "Topology" not in done.stderr and "labels" not in done.stderr, done.stderr


def test_a_second_process_on_the_same_data_directory_is_refused(tmp_path):
    data = str(tmp_path / "data")
    first = start_chatwire({"DATABASE_URL": data})
    try:
        user = register(first)
        second = run_chatwire_to_exit(chatwire_env(DATABASE_URL=data))
        assert second.returncode == 2, second
        assert "listening on" not in second.stdout
        assert "another process is using the store directory" in second.stderr, second.stderr
        assert "DATABASE_URL" in second.stderr, second.stderr
        # The first one is untouched.
        assert user.messages() == []
    finally:
        first.stop()
    # Once it is gone, the directory is free again (and kept its data).
    again = start_chatwire({"DATABASE_URL": data})
    try:
        login = requests.post(f"{again.url}/login", json={"username": user.username, "password": PASSWORD},
                              timeout=TIMEOUT)
        assert login.status_code == 200, login.text
    finally:
        again.stop()


def test_rate_limit_settings():
    # A burst of 5 that refills once in 1000 s: 5 of 12 sends pass, the rest are limited.
    server = start_chatwire({"RATE_LIMIT_BURST": "5", "RATE_LIMIT_PER_SECOND": "0.001"})
    try:
        user = register(server)
        c = ChatClient(server).connect(user.token)
        try:
            acks = [c.call("chat:send", {"text": f"m{i}"}) for i in range(12)]
        finally:
            c.close()
        assert sum("error" not in a for a in acks) == 5, acks
        assert all(a["error"]["code"] == "rate_limited" for a in acks[5:]), acks
    finally:
        server.stop()


def test_missing_secret_starts_with_a_warning(tmp_path):
    log = tmp_path / "stderr.txt"
    server = start_chatwire({"JWT_SECRET": None}, stderr_path=log)
    try:
        user = register(server)
        assert user.messages() == []
        # the random secret is not ours
        assert_detail(get_messages(server, mint(user.id, user.username)), 401)
    finally:
        server.stop()
    text = log.read_text()
    assert "JWT_SECRET" in text, text
    assert "warn" in text.lower(), text


def test_algorithm_and_expiration_settings():
    server = start_chatwire({"JWT_ALGORITHM": "HS512", "JWT_EXPIRATION_MINUTES": "2"})
    try:
        user = register(server)
        assert jwt.get_unverified_header(user.token)["alg"] == "HS512"
        claims = jwt.decode(user.token, JWT_SECRET, algorithms=["HS512"])
        assert claims["exp"] - claims["iat"] == 120
        assert get_messages(server, mint(user.id, user.username, alg="HS512")).status_code == 200
        # another algorithm with the same secret is refused
        assert_detail(get_messages(server, mint(user.id, user.username, alg="HS256")), 401)
        c = ChatClient(server)
        assert c.refused(token=mint(user.id, user.username, alg="HS256")) == {"message": "Unauthorized"}
    finally:
        server.stop()


def test_flags_work_like_env(tmp_path):
    """Each variable is also a command-line flag."""
    env = {k: None for k in chatwire_env()}
    server = Server("--database-url", "memory:", "--jwt-secret", JWT_SECRET, "--bcrypt-cost", "4",
                    "--jwt-expiration-minutes", "3", binary=chatwire_bin(), env=env)
    try:
        user = register(server)
        claims = jwt.decode(user.token, JWT_SECRET, algorithms=["HS256"])
        assert claims["exp"] - claims["iat"] == 180
    finally:
        server.stop()


def test_cors_origins():
    server = start_chatwire({"CORS_ORIGINS": "http://good.example,http://also.example"})
    try:
        def allow(origin):
            r = requests.options(server.url + "/login", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"}, timeout=TIMEOUT)
            return r.headers.get("access-control-allow-origin")

        assert allow("http://good.example") == "http://good.example"
        assert allow("http://also.example") == "http://also.example"
        assert allow("http://evil.example") in (None, "")

        # The list holds for Socket.IO too: the polling handshake and the
        # WebSocket upgrade from another origin are refused, as python-engineio does.
        handshake = f"{server.url}/socket.io/?EIO=4&transport=polling"
        r = requests.get(handshake, headers={"Origin": "http://evil.example"}, timeout=TIMEOUT)
        assert r.status_code == 400 and r.json()["message"] == "Not an accepted origin", r.text
        r = requests.get(handshake, headers={"Origin": "http://good.example"}, timeout=TIMEOUT)
        assert r.status_code == 200 and r.text.startswith("0"), r.text
        assert r.headers["access-control-allow-origin"] == "http://good.example"
        assert r.headers["access-control-allow-credentials"] == "true"
        # No Origin (not a browser), or the server's own: served.
        assert requests.get(handshake, timeout=TIMEOUT).status_code == 200
        own = f"http://127.0.0.1:{server.port}"
        assert requests.get(handshake, headers={"Origin": own}, timeout=TIMEOUT).status_code == 200
        for origin, allowed in (("http://evil.example", False), ("http://good.example", True)):
            ws = websocket.WebSocket()
            try:
                ws.connect(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
                           origin=origin, timeout=TIMEOUT)
                assert allowed, "upgrade from another origin accepted"
                assert ws.recv().startswith("0")
            except websocket.WebSocketBadStatusException as e:
                assert not allowed and e.status_code == 400, e
            finally:
                ws.close()
    finally:
        server.stop()


def test_any_origin_is_never_reflected_with_credentials():
    server = start_chatwire({})
    try:
        for path in ("/", "/socket.io/?EIO=4&transport=polling"):
            r = requests.get(server.url + path, headers={"Origin": "http://evil.example"}, timeout=TIMEOUT)
            assert r.status_code == 200, r.text
            assert r.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in r.headers
    finally:
        server.stop()


# ---------------------------------------------------------------- Engine.IO settings


def _open_packet(server) -> dict:
    r = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.text.startswith("0"), r.text
    return json.loads(r.text[1:])


def test_engineio_defaults_and_settings():
    server = start_chatwire()
    try:
        hello = _open_packet(server)
        assert hello["pingInterval"] == 25000 and hello["pingTimeout"] == 20000, hello
        assert hello["maxPayload"] == 1_000_000, hello
        assert hello["upgrades"] == ["websocket"], hello
    finally:
        server.stop()
    server = start_chatwire({"PING_INTERVAL_MS": "1500", "PING_TIMEOUT_MS": "700", "MAX_PAYLOAD": "5000"})
    try:
        hello = _open_packet(server)
        assert (hello["pingInterval"], hello["pingTimeout"], hello["maxPayload"]) == (1500, 700, 5000), hello
        # a client that sends more than maxPayload in one message is disconnected
        user = register(server)
        c = ChatClient(server).connect(user.token)
        try:
            c.sio.emit("chat:send", {"text": "x" * 3900, "tempId": "pad" + "y" * 2000})
            assert c.disconnected.wait(5), "a message over maxPayload did not end the connection"
        finally:
            c.close()
    finally:
        server.stop()


# ---------------------------------------------------------------- login timing


def test_login_unknown_user_takes_about_as_long_as_wrong_password():
    """401 for unknown user and wrong password "in about the same time": with
    a real bcrypt cost, an unknown user must not answer much faster."""
    server = start_chatwire({"BCRYPT_COST": "10"})
    try:
        user = register(server)

        def timed(username: str) -> float:
            start = time.perf_counter()
            r = requests.post(server.url + "/login", json={"username": username, "password": "wrong-pw"},
                              timeout=TIMEOUT)
            elapsed = time.perf_counter() - start
            assert r.status_code == 401, r.text
            return elapsed

        wrong = sorted(timed(user.username) for _ in range(5))[2]
        unknown = sorted(timed(unique()) for _ in range(5))[2]
        assert wrong > 0.01, f"bcrypt cost 10 should take well over 10 ms, took {wrong * 1000:.1f} ms"
        assert unknown >= 0.5 * wrong, f"unknown user {unknown * 1000:.1f} ms, wrong password {wrong * 1000:.1f} ms"
    finally:
        server.stop()


# ---------------------------------------------------------------- never a 500


def test_no_500_for_anything_a_client_sends():
    server = start_chatwire()
    try:
        user = register(server)
        auth = {"Authorization": f"Bearer {user.token}"}
        json_h = {"Content-Type": "application/json"}
        attempts = [
            ("POST", "/register", json_h, b"\xff\xfe\x00garbage"),
            ("POST", "/register", json_h, b'{"username": "\\ud800abc", "password": "secret-pw"}'),
            ("POST", "/register", json_h, b'{"username": "abcdef", "password": "secret-pw", "username": "x"}'),
            ("POST", "/register", json_h, b"[" * 10000 + b"]" * 10000),
            ("POST", "/login", json_h, b'{"username": null, "password": null}'),
            ("POST", "/login", json_h, b""),
            ("POST", "/login", {"Content-Type": "application/json; charset=latin1"}, b"{}"),
            ("POST", "/login", {}, b'{"username":"abc","password":"secret-pw"}'),
            ("GET", "/messages?limit=99999999999999999999999", auth, None),
            ("GET", "/messages?before=-1", auth, None),
            ("GET", "/messages?before=99999999999999999999999", auth, None),
            ("GET", "/messages?after=-5", auth, None),
            ("GET", "/messages?chatId=%00", auth, None),
            ("GET", "/messages?limit=1&limit=2", auth, None),
            ("GET", "/messages", {"Authorization": "Bearer " + "a" * 10000}, None),
            ("GET", "/messages", {"Authorization": "Bearer \u00e9.\u00e9.\u00e9".encode().decode("latin1")}, None),
            ("GET", "/messages", {"Authorization": "Bearer e30.e30.e30"}, None),
            ("DELETE", "/messages", auth, None),
            ("PUT", "/register", json_h, b"{}"),
            ("GET", "/socket.io/?EIO=3&transport=polling", {}, None),
            ("GET", "/socket.io/?EIO=4&transport=carrier-pigeon", {}, None),
        ]
        for method, path, headers, body in attempts:
            r = requests.request(method, server.url + path, headers=headers, data=body, timeout=TIMEOUT)
            assert r.status_code < 500, (method, path, body and body[:60], r.status_code, r.text[:200])
            if not path.startswith("/socket.io/") and r.status_code >= 400:
                assert_detail(r, r.status_code)
        assert server.alive()
    finally:
        server.stop()


def _ignore_sigxfsz() -> None:
    # A write past RLIMIT_FSIZE then fails with EFBIG instead of killing the
    # process, as a write to a full disk fails with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_ready_tells_the_truth_while_the_store_refuses_writes(tmp_path):
    """A "full disk" (no file of the server's may grow past 4 KiB, set on the
    running process with prlimit): /ready answers 503 and sends get
    store_unavailable; once writes go through again, /ready recovers by
    itself and sends are acked."""
    server = start_chatwire({"DATABASE_URL": str(tmp_path / "data")}, preexec_fn=_ignore_sigxfsz,
                            stderr_path=tmp_path / "stderr.log")
    try:
        user = register(server)
        client = ChatClient(server, "websocket").connect(user.token)
        assert requests.get(server.url + "/ready", timeout=TIMEOUT).status_code == 200
        assert "id" in client.call("chat:send", {"text": "before", "tempId": "b"})

        _, hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (4096, hard))
        r = requests.get(server.url + "/ready", timeout=TIMEOUT)
        assert_detail(r, 503)
        refused = client.call("chat:send", {"text": "while full", "tempId": "f"})
        assert refused["error"]["code"] == "store_unavailable", refused
        assert_detail(requests.get(server.url + "/ready", timeout=TIMEOUT), 503)
        # Three failures, one line: failures are logged, but not each of them.
        log = (tmp_path / "stderr.log").read_text()
        assert log.count("store operation") == 1, log

        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        deadline = time.monotonic() + 10
        while requests.get(server.url + "/ready", timeout=TIMEOUT).status_code != 200:
            assert time.monotonic() < deadline, "/ready did not recover"
            time.sleep(0.1)
        assert "id" in client.call("chat:send", {"text": "after", "tempId": "a"})
        assert [m["text"] for m in get_messages(server, user.token).json()] == ["before", "after"]
        client.close()
    finally:
        server.stop()
