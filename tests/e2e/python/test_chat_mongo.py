"""The `chatwire` binary against MongoDB (`DATABASE_URL=mongodb://...`).

Needs MONGODB_TEST_URL (scripts/test.sh starts SecantusDB and sets it) and
the binary at $CHATWIRE_BIN (default target/debug/chatwire). Each run uses a
database of its own.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import threading
import uuid

import pytest
import requests
import socketio

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
READY_LINE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
TIMEOUT = 5.0


def mongo_url() -> str:
    base = os.environ.get("MONGODB_TEST_URL")
    if not base:
        pytest.fail("MONGODB_TEST_URL must name a MongoDB-wire server (scripts/test.sh starts one)")
    head, sep, query = base.partition("?")
    scheme, _, rest = head.partition("://")
    hosts = rest.split("/", 1)[0]
    return f"{scheme}://{hosts}/cw_e2e_{uuid.uuid4().hex[:12]}{sep}{query}"


class Chatwire:
    """One `chatwire` process on a free port."""

    def __init__(self, database_url: str) -> None:
        binary = pathlib.Path(os.environ.get("CHATWIRE_BIN", "target/debug/chatwire"))
        if not binary.is_absolute():
            binary = REPO_ROOT / binary
        if not binary.is_file():
            pytest.fail(f"chatwire binary not found at {binary}")
        env = dict(os.environ)
        env.update(
            DATABASE_URL=database_url,
            JWT_SECRET="e2e-secret-that-is-at-least-32-bytes-long",
            BCRYPT_COST="4",
            HOST="127.0.0.1",
            PORT="0",
        )
        self.proc = subprocess.Popen(
            [str(binary)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
        )
        first: list[str] = []
        got = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if not first:
                    first.append(line)
                    got.set()
            got.set()

        threading.Thread(target=pump, daemon=True).start()
        if not got.wait(30) or not first or not READY_LINE.fullmatch(first[0].strip()):
            self.stop()
            pytest.fail(f"chatwire did not start against {database_url}: {first!r}")
        self.url = f"http://127.0.0.1:{READY_LINE.fullmatch(first[0].strip()).group(1)}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_chat_round_trip_survives_a_restart_on_mongodb() -> None:
    db_url = mongo_url()
    server = Chatwire(db_url)
    try:
        assert requests.get(f"{server.url}/ready", timeout=TIMEOUT).status_code == 200
        creds = {"username": "MongoAna", "password": "secret-pw"}
        r = requests.post(f"{server.url}/register", json=creds, timeout=TIMEOUT)
        assert r.status_code == 201, r.text
        token = r.json()["access_token"]
        taken = {"username": "mongoana", "password": "secret-pw"}
        r = requests.post(f"{server.url}/register", json=taken, timeout=TIMEOUT)
        assert r.status_code == 409, r.text

        sio = socketio.Client(reconnection=False)
        sio.connect(server.url, auth={"token": token}, wait_timeout=TIMEOUT)
        try:
            ack = sio.call("chat:send", {"text": "hello mongo", "tempId": "t-1"}, timeout=TIMEOUT)
            again = sio.call("chat:send", {"text": "hello mongo", "tempId": "t-1"}, timeout=TIMEOUT)
        finally:
            sio.disconnect()
        assert ack["tempId"] == "t-1" and re.fullmatch(r"[0-9a-f]{24}", ack["id"]), ack
        assert (again["id"], again["timestamp"]) == (ack["id"], ack["timestamp"])
    finally:
        server.stop()

    server = Chatwire(db_url)
    try:
        r = requests.post(f"{server.url}/login", json=creds, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = requests.get(f"{server.url}/messages", headers=headers, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        messages = r.json()
        assert [(m["id"], m["timestamp"], m["text"], m["chatId"], m["author"]) for m in messages] == [
            (ack["id"], ack["timestamp"], "hello mongo", "general", "MongoAna")
        ]
        r = requests.get(
            f"{server.url}/messages",
            params={"beforeId": "0" * 24},
            headers=headers,
            timeout=TIMEOUT,
        )
        assert r.status_code == 422, r.text
    finally:
        server.stop()
