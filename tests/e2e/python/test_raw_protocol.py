"""Raw Engine.IO v4 / Socket.IO v5 wire tests against the real server.

No Socket.IO client library here: plain HTTP (requests) and WebSocket
(websocket-client) frames, checked against the protocol specifications
(socketio/engine.io-protocol and socketio/socket.io-protocol, v4 and v5) and
the behaviour of the `conformance` example (raw echo at /engine.io/).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import requests
import websocket

HTTP_TIMEOUT = 5.0
PING_INTERVAL_MS = 300  # conformance defaults, as the official suites expect
PING_TIMEOUT_MS = 200
EIO_ERRORS = {
    0: "Transport unknown",
    1: "Session ID unknown",
    2: "Bad handshake method",
    3: "Bad request",
    5: "Unsupported protocol version",
}

_pool = ThreadPoolExecutor(max_workers=8)


# ---------------------------------------------------------------- helpers


def eio(server, query: str = "EIO=4&transport=polling", path: str = "/engine.io/") -> str:
    return f"{server.url}{path}?{query}"


def sid_url(server, sid: str, path: str = "/engine.io/") -> str:
    return eio(server, f"EIO=4&transport=polling&sid={sid}", path)


def ws_connect(server, query: str = "EIO=4&transport=websocket", path: str = "/engine.io/"):
    return websocket.create_connection(f"{server.ws_url}{path}?{query}", timeout=HTTP_TIMEOUT)


def get(url: str, timeout: float = HTTP_TIMEOUT, **kw) -> requests.Response:
    return requests.get(url, timeout=timeout, **kw)


def post(url: str, body, **kw) -> requests.Response:
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    return requests.post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT, **kw)


def get_later(url: str, delay: float = 0.0) -> Future:
    def run():
        if delay:
            time.sleep(delay)
        return get(url)

    return _pool.submit(run)


def assert_eio_error(resp: requests.Response, codes) -> None:
    """400 with the Engine.IO JSON error body {"code": N, "message": "..."}."""
    codes = {codes} if isinstance(codes, int) else set(codes)
    assert resp.status_code == 400, f"expected 400, got {resp.status_code} {resp.text!r}"
    try:
        body = resp.json()
    except ValueError:
        pytest.fail(f"error body is not JSON: {resp.text!r}")
    assert body.get("code") in codes, f"expected code in {sorted(codes)}, got {body!r}"
    assert body.get("message") == EIO_ERRORS[body["code"]], body


def polling_handshake(server, path: str = "/engine.io/") -> tuple[str, dict]:
    resp = get(eio(server, path=path))
    assert resp.status_code == 200, resp.text
    assert resp.text.startswith("0"), resp.text
    data = json.loads(resp.text[1:])
    return data["sid"], data


def ws_handshake(ws) -> dict:
    frame = ws.recv()
    assert isinstance(frame, str) and frame.startswith("0"), frame
    return json.loads(frame[1:])


def wait_parked(fut: Future, delay: float = 0.15) -> None:
    """Give a GET time to reach the server and be parked there."""
    time.sleep(delay)
    assert not fut.done(), f"GET should be parked, but was answered: {fut.result().text!r}"


def recv_skip_pings(ws):
    """Next data frame that is not an Engine.IO ping."""
    while True:
        frame = ws.recv()
        if frame != "2":
            return frame


def wait_closed(ws, timeout: float = 3.0) -> float:
    """Wait until the server closes the WebSocket; returns the seconds it took.

    Data frames that arrive first (pings, a close packet `1`) are ignored.
    """
    start = time.monotonic()
    deadline = start + timeout
    ws.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            opcode, _ = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            continue
        except (
            websocket.WebSocketConnectionClosedException,
            websocket.WebSocketProtocolException,  # garbage instead of frames: unusable
            ConnectionError,
            OSError,
        ):
            return time.monotonic() - start
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return time.monotonic() - start
    pytest.fail(f"the server did not close the WebSocket within {timeout}s")


def ws_refused_or_closed(server, query: str, path: str = "/engine.io/") -> None:
    """A WebSocket request the server must not serve: refused at the upgrade, or closed at once."""
    try:
        ws = ws_connect(server, query, path)
    except websocket.WebSocketBadStatusException as err:
        assert err.status_code == 400, err
        return
    try:
        ws.settimeout(1.0)
        try:
            first = ws.recv()
        except (websocket.WebSocketTimeoutException, websocket.WebSocketException, OSError):
            first = None
        assert not (isinstance(first, str) and first.startswith("0")), f"the server opened a session: {first!r}"
        wait_closed(ws)
    finally:
        ws.close()


# ---------------------------------------------------------------- handshake


def test_polling_handshake_shape(server):
    resp = get(eio(server))
    assert resp.status_code == 200
    assert resp.text.startswith("0"), resp.text
    data = json.loads(resp.text[1:])
    assert isinstance(data["sid"], str) and data["sid"]
    assert data["upgrades"] == ["websocket"]
    assert data["pingInterval"] == PING_INTERVAL_MS
    assert data["pingTimeout"] == PING_TIMEOUT_MS
    assert data["maxPayload"] == 1_000_000
    other, _ = polling_handshake(server)
    assert other != data["sid"], "two handshakes must get distinct session ids"


def test_polling_handshake_shape_socketio_path(server):
    sid, data = polling_handshake(server, "/socket.io/")
    assert data["upgrades"] == ["websocket"]
    assert data["pingInterval"] == PING_INTERVAL_MS


def test_websocket_handshake_shape(server):
    ws = ws_connect(server)
    try:
        data = ws_handshake(ws)
        assert isinstance(data["sid"], str) and data["sid"]
        assert data["upgrades"] == []
        assert data["pingInterval"] == PING_INTERVAL_MS
        assert data["pingTimeout"] == PING_TIMEOUT_MS
        assert data["maxPayload"] == 1_000_000
    finally:
        ws.close()


def test_handshake_configured_values(calm_server):
    _, data = polling_handshake(calm_server)
    assert data["pingInterval"] == 10000
    assert data["pingTimeout"] == 5000


@pytest.mark.parametrize("path", ["/engine.io/", "/socket.io/"])
def test_bad_eio(server, path):
    # A missing or non-numeric EIO is a bad request or an unsupported version;
    # an older or newer protocol version is an unsupported version.
    assert_eio_error(get(eio(server, "transport=polling", path)), (3, 5))
    assert_eio_error(get(eio(server, "EIO=abc&transport=polling", path)), (3, 5))
    assert_eio_error(get(eio(server, "EIO=3&transport=polling", path)), 5)
    assert_eio_error(get(eio(server, "EIO=5&transport=polling", path)), 5)


def test_bad_eio_websocket(server):
    ws_refused_or_closed(server, "transport=websocket")
    ws_refused_or_closed(server, "EIO=abc&transport=websocket")
    ws_refused_or_closed(server, "EIO=3&transport=websocket")


@pytest.mark.parametrize("path", ["/engine.io/", "/socket.io/"])
def test_bad_transport(server, path):
    assert_eio_error(get(eio(server, "EIO=4", path)), 0)
    assert_eio_error(get(eio(server, "EIO=4&transport=abc", path)), 0)


def test_bad_transport_websocket(server):
    ws_refused_or_closed(server, "EIO=4&transport=abc")


def test_bad_handshake_method(server):
    url = eio(server)
    assert_eio_error(post(url, "4hello"), 2)
    assert_eio_error(requests.put(url, data="", timeout=HTTP_TIMEOUT), 2)


def test_unknown_sid(server):
    url = sid_url(server, "unknown-session-id")
    assert_eio_error(get(url), 1)
    assert_eio_error(post(url, "4hello"), 1)
    ws_refused_or_closed(server, "EIO=4&transport=websocket&sid=unknown-session-id")


# ---------------------------------------------------------------- messages


def test_polling_message_echo(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    resp = post(url, "4hello")
    assert resp.status_code == 200
    assert resp.text == "ok"
    resp = get(url)
    assert resp.status_code == 200
    assert resp.text == "4hello"


def test_polling_utf8_message_echo(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    assert post(url, "4héllo €😀".encode()).status_code == 200
    resp = get(url)
    assert resp.content.decode() == "4héllo €😀"


def test_polling_several_packets(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    assert post(url, "4test1\x1e4test2\x1e4test3").status_code == 200
    resp = get(url)
    assert resp.status_code == 200
    assert resp.text == "4test1\x1e4test2\x1e4test3"


def test_polling_binary(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    assert post(url, "4hello\x1ebAQIDBA==").status_code == 200
    resp = get(url)
    assert resp.status_code == 200
    assert resp.text == "4hello\x1ebAQIDBA=="


def test_polling_parked_get_released_by_post(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    parked = get_later(url)
    wait_parked(parked)
    assert post(url, "4late").status_code == 200
    resp = parked.result(HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.text == "4late"


def test_websocket_text_and_binary_echo(calm_server):
    ws = ws_connect(calm_server)
    try:
        ws_handshake(ws)
        ws.send("4hello")
        assert ws.recv() == "4hello"
        ws.send_binary(bytes([1, 2, 3, 4]))
        assert ws.recv() == bytes([1, 2, 3, 4])
        ws.send("4héllo 😀")
        assert ws.recv() == "4héllo 😀"
    finally:
        ws.close()


def test_duplicate_concurrent_get(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    first = get_later(url)
    wait_parked(first)
    second = get(url + "&t=burst")
    assert second.status_code == 400, second.text
    resp = first.result(HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.text == "1", "the parked GET must be answered with a close packet"
    assert_eio_error(get(url), 1)


# ---------------------------------------------------------------- heartbeat


def test_polling_ping_pong(server):
    sid, _ = polling_handshake(server)
    url = sid_url(server, sid)
    start = time.monotonic()
    for _ in range(3):
        resp = get(url)
        assert resp.status_code == 200
        assert resp.text == "2"
        assert post(url, "3").status_code == 200
    # three full intervals: longer than pingInterval + pingTimeout
    assert time.monotonic() - start >= 3 * PING_INTERVAL_MS / 1000 * 0.8
    assert post(url, "4still-alive").status_code == 200
    assert get(url).text == "4still-alive"


def test_polling_ping_timeout(server):
    sid, _ = polling_handshake(server)
    url = sid_url(server, sid)
    time.sleep((PING_INTERVAL_MS + PING_TIMEOUT_MS) / 1000 + 0.5)
    assert_eio_error(get(url), 1)


def test_websocket_ping_pong(server):
    ws = ws_connect(server)
    try:
        ws_handshake(ws)
        start = time.monotonic()
        for _ in range(3):
            assert ws.recv() == "2"
            ws.send("3")
        assert time.monotonic() - start >= 3 * PING_INTERVAL_MS / 1000 * 0.8
        ws.send("4still-alive")
        assert recv_skip_pings(ws) == "4still-alive"
    finally:
        ws.close()


def test_websocket_ping_timeout(server):
    ws = ws_connect(server)
    try:
        ws_handshake(ws)
        assert ws.recv() == "2"
        took = wait_closed(ws, timeout=(PING_TIMEOUT_MS / 1000) + 2.0)
        assert took >= PING_TIMEOUT_MS / 1000 * 0.5, f"closed too early ({took:.3f}s after the ping)"
    finally:
        ws.close()


# ---------------------------------------------------------------- close


def test_polling_forced_close(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    parked = get_later(url)
    wait_parked(parked)
    assert post(url, "1").status_code == 200
    resp = parked.result(HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.text == "6"
    assert_eio_error(get(url), 1)


def test_websocket_forced_close(calm_server):
    ws = ws_connect(calm_server)
    try:
        ws_handshake(ws)
        ws.send("1")
        wait_closed(ws)
    finally:
        ws.close()


# ---------------------------------------------------------------- upgrade


def upgrade(server, path: str = "/engine.io/"):
    """Polling session upgraded to WebSocket; checks every step of the upgrade."""
    sid, _ = polling_handshake(server, path)
    url = sid_url(server, sid, path)
    parked = get_later(url)
    wait_parked(parked)
    ws = ws_connect(server, f"EIO=4&transport=websocket&sid={sid}", path)
    ws.send("2probe")
    assert ws.recv() == "3probe"
    resp = parked.result(HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.text == "6", "the parked GET must be released with a noop packet"
    ws.send("5")
    # a round trip on the WebSocket: the server has seen the upgrade packet
    ws.send("4sync")
    assert ws.recv() == "4sync"
    return sid, url, ws


def test_upgrade(calm_server):
    _, _, ws = upgrade(calm_server)
    try:
        ws.send("4hello")
        assert ws.recv() == "4hello"
        ws.send_binary(b"\x01\x02\x03")
        assert ws.recv() == b"\x01\x02\x03"
    finally:
        ws.close()


def test_upgrade_get_after_probe_gets_noop(calm_server):
    """A GET that arrives between the probe and the upgrade packet is released with a noop."""
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    ws = ws_connect(calm_server, f"EIO=4&transport=websocket&sid={sid}")
    try:
        ws.send("2probe")
        assert ws.recv() == "3probe"
        # the server may answer this GET with a noop while the upgrade is pending
        resp = get(url)
        assert resp.status_code == 200
        assert resp.text == "6"
        ws.send("5")
        ws.send("4after")
        assert ws.recv() == "4after"
    finally:
        ws.close()


def test_stale_sid_after_upgrade(calm_server):
    sid, url, ws = upgrade(calm_server)
    try:
        resp = get(url)
        assert resp.status_code == 400, resp.text
        ws_refused_or_closed(calm_server, f"EIO=4&transport=websocket&sid={sid}")
        # the upgraded session is unaffected
        ws.send("4hello")
        assert ws.recv() == "4hello"
    finally:
        ws.close()


# ---------------------------------------------------------------- invalid packets


def test_polling_invalid_packet(calm_server):
    sid, _ = polling_handshake(calm_server)
    url = sid_url(calm_server, sid)
    try:
        resp = post(url, "abc")
        assert resp.status_code == 400, resp.text
    except requests.ConnectionError:
        pass  # closing the request abruptly is acceptable too
    assert_eio_error(get(url), 1)


def test_websocket_invalid_packet(calm_server):
    ws = ws_connect(calm_server)
    try:
        ws_handshake(ws)
        ws.send("abc")
        wait_closed(ws)
    finally:
        ws.close()


def sio_connect(server, auth: str = ""):
    """Socket.IO over a raw WebSocket: handshake, CONNECT to `/`, the `auth` event."""
    ws = ws_connect(server, path="/socket.io/")
    ws_handshake(ws)
    ws.send("40" + auth)
    frame = ws.recv()
    assert frame.startswith("40{"), frame
    assert set(json.loads(frame[2:])) == {"sid"}
    assert ws.recv() == '42["auth",' + (auth or "{}") + "]"
    return ws


@pytest.mark.parametrize(
    "packet",
    ["4abc", "42{}", '42abc["message-with-ack",1,"2",{"3":[false]}]', "4", "49", '42"str"', "42[]"],
)
def test_socketio_invalid_packet(calm_server, packet):
    ws = sio_connect(calm_server)
    try:
        ws.send(packet)
        wait_closed(ws)
    finally:
        ws.close()


def test_socketio_event_and_ack_raw(calm_server):
    ws = sio_connect(calm_server, '{"token":"123"}')
    try:
        ws.send('42["message",1,"2",{"3":[true]}]')
        assert ws.recv() == '42["message-back",1,"2",{"3":[true]}]'
        ws.send('42456["message-with-ack",1,"2",{"3":[false]}]')
        assert ws.recv() == '43456[1,"2",{"3":[false]}]'
        ws.send('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        ws.send_binary(b"\x01\x02\x03")
        ws.send_binary(b"\x04\x05\x06")
        assert ws.recv() == '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
        assert ws.recv() == b"\x01\x02\x03"
        assert ws.recv() == b"\x04\x05\x06"
    finally:
        ws.close()


def test_socketio_server_to_client_ack_raw(calm_server):
    ws = sio_connect(calm_server)
    try:
        ws.send('42["call-me","a",2]')
        frame = ws.recv()
        # 42<ackId>["call-back","a",2]
        assert frame.startswith("42") and frame.endswith('["call-back","a",2]'), frame
        ack_id = frame[2 : frame.index("[")]
        assert ack_id.isdigit(), frame
        ws.send(f'43{ack_id}[{{"x":1}},"y"]')
        assert ws.recv() == '42["call-result",{"x":1},"y"]'
    finally:
        ws.close()


# ---------------------------------------------------------------- namespaces


@pytest.mark.parametrize("connect", ["40/random,", "40/random"])
def test_unknown_namespace(calm_server, connect):
    ws = ws_connect(calm_server, path="/socket.io/")
    try:
        ws_handshake(ws)
        ws.send(connect)
        assert ws.recv() == '44/random,{"message":"Invalid namespace"}'
        # the Engine.IO connection stays usable for a valid namespace
        ws.send("40/custom,")
        frame = ws.recv()
        assert frame.startswith("40/custom,{"), frame
        assert ws.recv() == '42/custom,["auth",{}]'
    finally:
        ws.close()


def test_custom_namespace_with_payload(calm_server):
    ws = ws_connect(calm_server, path="/socket.io/")
    try:
        ws_handshake(ws)
        ws.send('40/custom,{"token":"abc"}')
        frame = ws.recv()
        assert frame.startswith("40/custom,")
        assert set(json.loads(frame[len("40/custom,") :])) == {"sid"}
        assert ws.recv() == '42/custom,["auth",{"token":"abc"}]'
        ws.send('42/custom,["message","hi"]')
        assert ws.recv() == '42/custom,["message-back","hi"]'
        ws.send("41/custom,")
        # disconnected from /custom only: the Engine.IO session goes on
        ws.send("40")
        assert ws.recv().startswith("40{")
    finally:
        ws.close()


# ---------------------------------------------------------------- connect timeout


CONNECT_TIMEOUT_ARGS = ("--connect-timeout", "500", "--ping-interval", "10000", "--ping-timeout", "5000")


def test_connect_timeout(servers):
    server = servers.get(*CONNECT_TIMEOUT_ARGS)
    ws = ws_connect(server, path="/socket.io/")
    try:
        ws_handshake(ws)
        took = wait_closed(ws, timeout=3.0)
        assert took >= 0.3, f"closed after {took:.3f}s, before the 500 ms connect timeout"
    finally:
        ws.close()


def test_connect_in_time_is_kept(servers):
    server = servers.get(*CONNECT_TIMEOUT_ARGS)
    ws = ws_connect(server, path="/socket.io/")
    try:
        ws_handshake(ws)
        ws.send("40")
        assert ws.recv().startswith("40{")
        assert ws.recv() == '42["auth",{}]'
        time.sleep(0.8)
        ws.send('42["message","still here"]')
        assert ws.recv() == '42["message-back","still here"]'
    finally:
        ws.close()


# ---------------------------------------------------------------- maxPayload


MAX_PAYLOAD_ARGS = ("--max-payload", "1000", "--ping-interval", "10000", "--ping-timeout", "5000")


def test_max_payload_in_handshake(servers):
    _, data = polling_handshake(servers.get(*MAX_PAYLOAD_ARGS))
    assert data["maxPayload"] == 1000


def test_polling_body_at_max_payload_accepted(servers):
    server = servers.get(*MAX_PAYLOAD_ARGS)
    sid, _ = polling_handshake(server)
    url = sid_url(server, sid)
    body = "4" + "x" * 999
    assert post(url, body).status_code == 200
    assert get(url).text == body


def test_polling_body_over_max_payload(servers):
    server = servers.get(*MAX_PAYLOAD_ARGS)
    sid, _ = polling_handshake(server)
    url = sid_url(server, sid)
    try:
        resp = post(url, "4" + "x" * 1000)
        assert resp.status_code == 413, resp.text
    except requests.ConnectionError:
        pytest.fail("the server must answer 413, not drop the connection")
    # the session is closed: no parked poll
    assert get(url, timeout=2.0).status_code == 400


def test_websocket_frame_at_max_payload_accepted(servers):
    ws = ws_connect(servers.get(*MAX_PAYLOAD_ARGS))
    try:
        ws_handshake(ws)
        frame = "4" + "x" * 999
        ws.send(frame)
        assert ws.recv() == frame
    finally:
        ws.close()


def test_websocket_frame_over_max_payload(servers):
    ws = ws_connect(servers.get(*MAX_PAYLOAD_ARGS))
    try:
        ws_handshake(ws)
        ws.send("4" + "x" * 1000)
        wait_closed(ws)
    finally:
        ws.close()


def test_server_survives(server, calm_server):
    """After all of the above, the processes are still up (no panic)."""
    assert server.alive()
    assert calm_server.alive()
    assert get(eio(server)).status_code == 200
