"""The `chatwire` binary against MongoDB (`DATABASE_URL=mongodb://...`):
history across a restart, and a MongoDB outage under a running server.

Needs MONGODB_TEST_URL (scripts/test.sh starts SecantusDB and sets it) and,
for the outage test, SECANTUSD_BIN (the same script sets it): that test runs
a MongoDB-wire server of its own so that it can stop and restart it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid

import pytest
import requests

from chatlib import TIMEOUT, ChatClient, assert_detail, register
from conftest import start_chatwire


def mongo_url(hosts: str | None = None, options: str = "") -> str:
    """A fresh database on the test server (or on `hosts`)."""
    base = os.environ.get("MONGODB_TEST_URL")
    if not base:
        pytest.fail("MONGODB_TEST_URL must name a MongoDB-wire server (scripts/test.sh starts one)")
    head, _, query = base.partition("?")
    scheme, _, rest = head.partition("://")
    hosts = hosts or rest.split("/", 1)[0]
    query = "&".join(q for q in (query, options) if q)
    url = f"{scheme}://{hosts}/cw_e2e_{uuid.uuid4().hex[:12]}"
    return f"{url}?{query}" if query else url


def test_chat_round_trip_survives_a_restart_on_mongodb() -> None:
    db_url = mongo_url()
    server = start_chatwire({"DATABASE_URL": db_url})
    try:
        assert requests.get(f"{server.url}/ready", timeout=TIMEOUT).status_code == 200
        ana = register(server, "MongoAna")
        r = requests.post(f"{server.url}/register", json={"username": "mongoana", "password": "secret-pw"}, timeout=TIMEOUT)
        assert_detail(r, 409)
        c = ChatClient(server).connect(ana.token)
        try:
            ack = c.call("chat:send", {"text": "hello mongo", "tempId": "t-1"})
            again = c.call("chat:send", {"text": "hello mongo", "tempId": "t-1"})
        finally:
            c.close()
        assert ack["tempId"] == "t-1", ack
        assert (again["id"], again["timestamp"]) == (ack["id"], ack["timestamp"])
    finally:
        server.stop()

    server = start_chatwire({"DATABASE_URL": db_url})
    try:
        r = requests.post(f"{server.url}/login", json={"username": "MongoAna", "password": "secret-pw"}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        messages = requests.get(f"{server.url}/messages", headers=headers, timeout=TIMEOUT).json()
        assert [(m["id"], m["timestamp"], m["text"], m["chatId"], m["author"]) for m in messages] == [
            (ack["id"], ack["timestamp"], "hello mongo", "general", "MongoAna")
        ]
        r = requests.get(f"{server.url}/messages", params={"beforeId": "0" * 24}, headers=headers, timeout=TIMEOUT)
        assert_detail(r, 422)
    finally:
        server.stop()


class Secantus:
    """A SecantusDB process on a fixed port and storage directory, restartable."""

    def __init__(self, port: int, storage: str) -> None:
        binary = os.environ.get("SECANTUSD_BIN")
        if not binary:
            pytest.fail("SECANTUSD_BIN must name secantusd-py (scripts/test.sh sets it)")
        self.cmd = [binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage, "--log-level", "WARNING"]
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, "secantusd-py exited"
                time.sleep(0.1)
        pytest.fail("secantusd-py did not listen")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_mongodb_outage_refuses_sends_and_the_server_recovers(tmp_path) -> None:
    db = Secantus(free_port(), str(tmp_path / "db"))
    db.start()
    url = mongo_url(f"127.0.0.1:{db.port}", "serverSelectionTimeoutMS=1500")
    server = start_chatwire({"DATABASE_URL": url})
    c = None
    try:
        ana = register(server)
        c = ChatClient(server).connect(ana.token)
        first = c.call("chat:send", {"text": "before", "tempId": "a"})
        assert "error" not in first, first

        db.kill()
        refused = c.call("chat:send", {"text": "during", "tempId": "b"}, timeout=15)
        assert refused["error"]["code"] == "store_unavailable", refused
        assert c.wait("error", timeout=TIMEOUT)["code"] == "store_unavailable"
        assert c.sio.connected, "a store outage must not drop the socket"
        assert_detail(requests.get(f"{server.url}/ready", timeout=15), 503)

        db.start()
        deadline = time.monotonic() + 30
        while requests.get(f"{server.url}/ready", timeout=15).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover when MongoDB came back"
            time.sleep(0.5)
        after = c.call("chat:send", {"text": "after", "tempId": "c"})
        assert "error" not in after, after
        texts = [m["text"] for m in ana.messages()]
        assert texts == ["before", "after"], texts
    finally:
        if c:
            c.close()
        server.stop()
        db.kill()
