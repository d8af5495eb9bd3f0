"""chatwire's `GET /metrics`: parsed with prometheus_client's OpenMetrics
parser (the format the server answers in), counters checked against the
traffic this test makes, and no label that names a user, a chat or a token."""

from __future__ import annotations

import time

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from chatlib import TIMEOUT, ChatClient, register, unique
from conftest import start_chatwire

# A heartbeat short enough that an idle session times out within the test,
# and a rate limit that the fourth send of a burst runs into.
ENV = {
    "PING_INTERVAL_MS": "1000",
    "PING_TIMEOUT_MS": "1000",
    "RATE_LIMIT_BURST": "3",
    "RATE_LIMIT_PER_SECOND": "0.001",
}


class Scrape:
    """One parsed exposition: sample (name, labels) -> value."""

    def __init__(self, server) -> None:
        r = requests.get(f"{server.url}/metrics", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/openmetrics-text"), r.headers
        self.text = r.text
        self.samples: dict[tuple, float] = {}
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        assert key in self.samples, f"no series {key}"
        return self.samples[key]

    def label_values(self) -> set[str]:
        return {v for _, labels in self.samples for _, v in labels}


def wait_for(scrape, predicate, what: str, timeout: float = 10.0) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        s = scrape()
        if predicate(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}:\n{s.text}")
        time.sleep(0.1)


def test_counters_follow_the_traffic():
    server = start_chatwire(env=ENV)
    scrapes = 0

    def scrape() -> Scrape:
        nonlocal scrapes
        scrapes += 1
        return Scrape(server)

    try:
        before = scrape()
        assert before.get("chatwire_connections", transport="websocket") == 0

        # ------------------------------------------------ REST
        ana, bob = register(server), register(server)
        ok = requests.post(f"{server.url}/login", json={"username": ana.username, "password": "secret-pw"},
                           timeout=TIMEOUT)
        assert ok.status_code == 200, ok.text
        wrong = requests.post(f"{server.url}/login", json={"username": ana.username, "password": "not-it"},
                              timeout=TIMEOUT)
        assert wrong.status_code == 401
        assert requests.get(f"{server.url}/messages", timeout=TIMEOUT).status_code == 401
        ana.messages()
        assert requests.get(f"{server.url}/users/{ana.id}", timeout=TIMEOUT).status_code == 404

        # ------------------------------------------------ Socket.IO
        ChatClient(server, "websocket").refused(token="garbage")
        a = ChatClient(server, "websocket").connect(ana.token)
        b = ChatClient(server, "polling").connect(bob.token)
        connected = wait_for(
            scrape,
            lambda s: s.get("chatwire_connections", transport="websocket") == 1
            and s.get("chatwire_connections", transport="polling") == 1,
            "one websocket and one polling connection",
        )
        chat = unique("metrics")
        for c in (a, b):
            assert c.call("chat:join", {"chatId": chat}) == {"chatId": chat}
        for i in range(2):
            ack = a.call("chat:send", {"chatId": chat, "text": f"m{i}", "tempId": f"t{i}"})
            assert "id" in ack, ack
        for i in range(2):
            assert b.wait("chat:new-message")["text"] == f"m{i}"
        assert a.call("chat:send", {"chatId": chat, "text": ""})["error"]["code"] == "invalid"
        assert a.call("chat:send", {"chatId": chat, "text": "x"})["error"]["code"] == "rate_limited"
        a.sio.emit(f"zz:{ana.id}", {"chatId": chat})
        assert a.call("chat:leave", {"chatId": chat}) == {"chatId": chat}

        # An Engine.IO session that never polls again (ping timeout), and a
        # handshake of the wrong protocol version.
        idle = requests.get(f"{server.url}/socket.io/", params={"EIO": "4", "transport": "polling"},
                            timeout=TIMEOUT)
        assert idle.status_code == 200 and idle.text.startswith("0{"), idle.text
        old = requests.get(f"{server.url}/socket.io/", params={"EIO": "3", "transport": "polling"},
                           timeout=TIMEOUT)
        assert old.status_code == 400

        a.close()
        b.close()
        after = wait_for(
            scrape,
            lambda s: s.get("chatwire_connections", transport="websocket") == 0
            and s.get("chatwire_connections", transport="polling") == 0
            and s.get("chatwire_disconnects_total", reason="ping_timeout") == 1,
            "every session closed",
        )
    finally:
        server.stop()

    def delta(name: str, **labels: str) -> float:
        return after.get(name, **labels) - before.get(name, **labels)

    expected = {
        # handshakes: the refused socket and ana's over WebSocket; bob's and the idle one over polling
        ("chatwire_eio_handshakes_total", (("transport", "websocket"),)): 2,
        ("chatwire_eio_handshakes_total", (("transport", "polling"),)): 2,
        ("chatwire_eio_refusals_total", (("reason", "unsupported_protocol_version"),)): 1,
        ("chatwire_eio_refusals_total", (("reason", "bad_request"),)): 0,
        ("chatwire_sio_connects_total", ()): 2,
        ("chatwire_sio_connect_errors_total", (("reason", "unauthorized"),)): 1,
        ("chatwire_auth_failures_total", (("reason", "invalid_token"), ("via", "socket"))): 1,
        ("chatwire_auth_failures_total", (("reason", "missing_token"), ("via", "socket"))): 0,
        ("chatwire_auth_failures_total", (("reason", "bad_credentials"), ("via", "rest"))): 1,
        ("chatwire_auth_failures_total", (("reason", "missing_token"), ("via", "rest"))): 1,
        ("chatwire_events_in_total", (("event", "chat:join"),)): 2,
        ("chatwire_events_in_total", (("event", "chat:send"),)): 4,
        ("chatwire_events_in_total", (("event", "chat:leave"),)): 1,
        ("chatwire_events_in_total", (("event", "other"),)): 1,
        ("chatwire_events_out_total", (("event", "chat:ack"),)): 2,
        ("chatwire_events_out_total", (("event", "chat:new-message"),)): 2,
        ("chatwire_events_out_total", (("event", "chat:delivered"),)): 2,
        ("chatwire_events_out_total", (("event", "error"),)): 2,
        ("chatwire_broadcast_deliveries_total", ()): 2,
        ("chatwire_events_refused_total", (("code", "invalid"), ("event", "chat:send"))): 1,
        ("chatwire_events_refused_total", (("code", "rate_limited"), ("event", "chat:send"))): 1,
        ("chatwire_events_refused_total", (("code", "store_unavailable"), ("event", "chat:send"))): 0,
        ("chatwire_disconnects_total", (("reason", "ping_timeout"),)): 1,
        ("chatwire_disconnects_total", (("reason", "protocol_error"),)): 0,
        ("chatwire_disconnects_total", (("reason", "slow_consumer"),)): 0,
        ("chatwire_disconnects_total", (("reason", "server_close"),)): 0,
        ("chatwire_ws_slow_consumer_disconnects_total", ()): 0,
        ("chatwire_http_requests_total", (("route", "/register"), ("status", "2xx"))): 2,
        ("chatwire_http_requests_total", (("route", "/login"), ("status", "2xx"))): 1,
        ("chatwire_http_requests_total", (("route", "/login"), ("status", "4xx"))): 1,
        ("chatwire_http_requests_total", (("route", "/messages"), ("status", "2xx"))): 1,
        ("chatwire_http_requests_total", (("route", "/messages"), ("status", "4xx"))): 1,
        ("chatwire_http_requests_total", (("route", "other"), ("status", "4xx"))): 1,
        ("chatwire_http_requests_total", (("route", "/socket.io/"), ("status", "1xx"))): 2,
        ("chatwire_http_requests_total", (("route", "/socket.io/"), ("status", "4xx"))): 1,
        # every scrape but the last is counted by the last
        ("chatwire_http_requests_total", (("route", "/metrics"), ("status", "2xx"))): scrapes - 1,
        ("chatwire_store_operation_duration_seconds_count", (("op", "create_user"),)): 2,
        ("chatwire_store_operation_duration_seconds_count", (("op", "find_user"),)): 2,
        ("chatwire_store_operation_duration_seconds_count", (("op", "history"),)): 1,
        ("chatwire_store_operation_duration_seconds_count", (("op", "append"),)): 2,
        ("chatwire_store_operation_duration_seconds_count", (("op", "mark_delivered"),)): 2,
        ("chatwire_store_operation_duration_seconds_count", (("op", "mark_read"),)): 0,
    }
    got = {key: delta(key[0], **dict(key[1])) for key in expected}
    assert got == expected

    # While connected: one socket on each transport.
    assert connected.get("chatwire_connections", transport="websocket") == 1
    assert connected.get("chatwire_connections", transport="polling") == 1
    # Closing: python-socketio's polling client says goodbye (client_close);
    # its WebSocket client races its close packet against closing the socket.
    closes = delta("chatwire_disconnects_total", reason="client_close")
    assert closes >= 1
    assert closes + delta("chatwire_disconnects_total", reason="transport_close") == 3
    assert delta("chatwire_http_requests_total", route="/socket.io/", status="2xx") > 0
    assert after.get("chatwire_store_operation_duration_seconds_sum", op="append") > 0
    assert after.get("process_resident_memory_bytes") > 0

    # No label names a user, a chat, a token or a raw path.
    secrets = [ana.id, bob.id, ana.username, bob.username, chat, ana.token, f"/users/{ana.id}"]
    for value in after.label_values():
        for secret in secrets:
            assert secret not in value, (value, secret)
    for secret in secrets:
        assert secret not in after.text
