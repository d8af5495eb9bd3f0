"""chatwire's logs as an operator reads them: the store line once at start,
and at debug every request, connection, refusal and auth failure, with no
password, token or Authorization header value anywhere."""

from __future__ import annotations

import json
import re
import uuid

import requests

from chatlib import TIMEOUT, ChatClient, register, unique
from conftest import start_chatwire

PASSWORD = "right-pw-" + uuid.uuid4().hex[:8]
WRONG = "wrong-pw-" + uuid.uuid4().hex[:8]


def lines_with(log: list[str], *parts: str) -> list[str]:
    return [line for line in log if all(p in line for p in parts)]


def test_a_session_logged_at_debug(tmp_path):
    data = tmp_path / "data"
    stderr = tmp_path / "stderr.log"
    server = start_chatwire(env={"DATABASE_URL": str(data), "RUST_LOG": "debug"}, stderr_path=stderr)
    bad_token = "bad." + uuid.uuid4().hex + ".token"
    try:
        user = register(server, unique("logs"), PASSWORD)
        wrong = requests.post(f"{server.url}/login", json={"username": user.username, "password": WRONG},
                              timeout=TIMEOUT)
        assert wrong.status_code == 401
        refused = ChatClient(server, "websocket").refused(headers={"Authorization": f"Bearer {bad_token}"})
        assert refused == {"message": "Unauthorized"}
        # The token in the query string: it must not reach the log either.
        c = ChatClient(server, "polling").connect(query=f"?token={user.token}")
        ack = c.call("chat:send", {"text": "hello", "tempId": "t1"})
        assert "id" in ack, ack
        c.close()
        c.disconnected.wait(TIMEOUT)
        # A peer that breaks the protocol: its session closes, and the log
        # says how.
        polling = f"{server.url}/socket.io/?EIO=4&transport=polling"
        sid = json.loads(requests.get(polling, timeout=TIMEOUT).text[1:])["sid"]
        bad = requests.post(f"{polling}&sid={sid}", data="x", timeout=TIMEOUT)
        assert bad.status_code == 400, bad.text
    finally:
        server.stop()
    text = stderr.read_text()
    log = text.splitlines()

    # The store, once, at info, with where it keeps its data.
    store_lines = lines_with(log, "store at")
    assert len(store_lines) == 1, store_lines
    assert " INFO " in store_lines[0], store_lines
    assert store_lines[0].endswith(f"embedded store at {data / 'chatwire.sqlite3'}"), store_lines
    assert len(lines_with(log, "listening on http://127.0.0.1:")) == 1

    # Each HTTP request: method, route, status, duration.
    for method, route, status in [("POST", "/register", 201), ("POST", "/login", 401),
                                  ("GET", "/socket.io/", 101), ("GET", "/socket.io/", 200)]:
        found = lines_with(log, "DEBUG", "http request", f"method={method}", f"route={route}",
                           f"status={status}")
        assert found, (method, route, status)
        assert re.search(r" ms=\d+\.\d{3}", found[0]), found[0]
    # Each connection opened and closed, with its transport and why it closed.
    assert lines_with(log, "DEBUG", "connection opened", "transport=websocket")
    assert lines_with(log, "DEBUG", "connection opened", "transport=polling")
    assert lines_with(log, "DEBUG", "connection closed", "transport=polling", "reason=client_close")
    assert lines_with(log, "DEBUG", "connection closed", "reason=protocol_error", "violation=bad_payload")
    # Refusals and auth failures, and why.
    assert lines_with(log, "DEBUG", "auth failure", "via=rest", "reason=bad_credentials")
    assert lines_with(log, "DEBUG", "auth failure", "via=socket", "reason=invalid_token")
    assert lines_with(log, "DEBUG", "socket.io CONNECT_ERROR", "reason=unauthorized")
    assert lines_with(log, "DEBUG", "socket.io CONNECT accepted")
    assert lines_with(log, "DEBUG", "socket.io event", "event=chat:send")

    # Never a secret.
    for secret in (PASSWORD, WRONG, user.token, bad_token, "Bearer"):
        assert secret not in text, secret
    # The JWT's signature alone, in case a token was cut or re-encoded.
    assert user.token.rsplit(".", 1)[1] not in text


def test_an_event_refusal_and_an_engine_refusal_are_logged(tmp_path):
    stderr = tmp_path / "stderr.log"
    server = start_chatwire(env={"RUST_LOG": "debug"}, stderr_path=stderr)
    try:
        user = register(server, unique("logs"), PASSWORD)
        c = ChatClient(server, "websocket").connect(user.token)
        assert c.call("chat:send", {"text": ""})["error"]["code"] == "invalid"
        c.close()
        r = requests.get(f"{server.url}/socket.io/", params={"EIO": "3", "transport": "polling"},
                         timeout=TIMEOUT)
        assert r.status_code == 400
    finally:
        server.stop()
    log = stderr.read_text().splitlines()
    store_lines = lines_with(log, "in-memory store (memory:)")
    assert len(store_lines) == 1 and " INFO " in store_lines[0], store_lines
    assert lines_with(log, "DEBUG", "event refused", "event=chat:send", "code=invalid")
    assert lines_with(log, "DEBUG", "engine.io request refused", "reason=unsupported_protocol_version")
