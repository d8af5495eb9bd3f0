"""The edge against clients that hold the server's resources: slowly sent
headers, idle keep-alive connections, half-sent bodies, more connections
than the server can take, descriptors running out, huge declared lengths,
oversized headers, and a client still sending when it is refused. Each
limit is a setting; the tests run with small values."""

from __future__ import annotations

import json
import resource
import socket
import time

import pytest
import requests
from chatlib import cpu_seconds
from conftest import start_chatwire

TIMEOUT = 5.0


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (reading and dropping what it
    sent), or None if it stayed open."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    sock.settimeout(TIMEOUT)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.fixture(scope="module")
def quick():
    """Header and body timeouts of one second."""
    server = start_chatwire({"HTTP_HEADER_TIMEOUT_MS": "1000", "HTTP_BODY_TIMEOUT_MS": "1000"})
    yield server
    server.stop()


def test_headers_sent_a_byte_at_a_time_are_cut_off(quick):
    sock = connect(quick)
    start = time.monotonic()
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    try:
        for byte in request:
            sock.send(bytes([byte]))
            time.sleep(0.05)
            if time.monotonic() - start > 4:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert closed_within(sock, 3) is not None
    assert time.monotonic() - start < 3.5, "the slow client was held longer than the header timeout"
    sock.close()


def test_an_idle_keep_alive_connection_is_closed(quick):
    sock = connect(quick)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = read_response(sock)
    assert status == 200, body
    took = closed_within(sock, 3)
    assert took is not None and took < 2, took
    sock.close()


def test_a_half_sent_body_gets_408(quick):
    sock = connect(quick)
    sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"username\":")
    start = time.monotonic()
    status, headers, body = read_response(sock)
    assert status == 408, body
    assert "detail" in json.loads(body)
    assert time.monotonic() - start < 3
    assert closed_within(sock, 3) is not None
    sock.close()


def test_a_huge_declared_length_is_refused_at_once():
    server = start_chatwire()
    try:
        sock = connect(server)
        sock.sendall(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000000000\r\n\r\n")
        start = time.monotonic()
        status, headers, body = read_response(sock)
        assert status == 413 and json.loads(body) == {"detail": "Request body too large"}
        assert time.monotonic() - start < 1
        sock.close()
    finally:
        server.stop()


def test_a_client_still_sending_reads_its_413():
    """The server answers 413 before the body is in, then keeps reading (and
    dropping) what the client still sends, so that the client reads the
    answer instead of a reset."""
    server = start_chatwire()
    try:
        body = b"x" * 1_100_000
        for _ in range(5):
            sock = connect(server)
            sock.sendall(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode())
            for i in range(0, len(body), 65536):
                sock.sendall(body[i:i + 65536])
            status, _, answer = read_response(sock)
            assert status == 413, answer
            assert json.loads(answer)["detail"]
            sock.close()
    finally:
        server.stop()


def test_oversized_headers_get_431_in_json():
    server = start_chatwire()
    try:
        ok = requests.get(server.url + "/", headers={"X-Big": "a" * 10_000}, timeout=TIMEOUT)
        assert ok.status_code == 200
        r = requests.get(server.url + "/", headers={"X-Big": "a" * 20_000}, timeout=TIMEOUT)
        assert r.status_code == 431
        assert r.json() == {"detail": "Request header fields too large"}
    finally:
        server.stop()


def test_past_the_connection_cap_a_client_gets_503_at_once():
    server = start_chatwire({"MAX_CONNECTIONS": "6", "HTTP_HEADER_TIMEOUT_MS": "30000"})
    held = []
    try:
        # WebSocket connections count as well as plain HTTP ones.
        import websocket
        for _ in range(3):
            ws = websocket.WebSocket()
            ws.connect(f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket", timeout=TIMEOUT)
            assert ws.recv().startswith("0")
            held.append(ws)
        for _ in range(3):
            sock = connect(server)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
            held.append(sock)
        sock = connect(server)
        start = time.monotonic()
        status, headers, body = read_response(sock)
        assert status == 503, body
        assert json.loads(body) == {"detail": "Too many connections"}
        assert headers.get("retry-after") == "1"
        assert time.monotonic() - start < 1
        sock.close()
        # A WebSocket closed gives its place back.
        held.pop(0).close()
        time.sleep(0.3)
        assert requests.get(server.url + "/", timeout=TIMEOUT).status_code == 200
    finally:
        for h in held:
            h.close()
        server.stop()


def _few_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_out_of_descriptors_the_server_backs_off_and_logs_once(tmp_path):
    """With the cap above the descriptors (64), `accept` fails with EMFILE:
    the server waits instead of spinning, says so once, and serves again
    when descriptors are freed."""
    server = start_chatwire({"MAX_CONNECTIONS": "1000", "RUST_LOG": "warn"}, preexec_fn=_few_descriptors,
                            stderr_path=tmp_path / "stderr.log")
    socks = []
    try:
        for _ in range(80):
            socks.append(connect(server))
        time.sleep(0.3)
        before = cpu_seconds(server.proc.pid)
        time.sleep(2)
        assert cpu_seconds(server.proc.pid) - before < 0.5, "the accept loop spins"
        log = (tmp_path / "stderr.log").read_text()
        assert log.count("accept failed") == 1, log
        for s in socks:
            s.close()
        socks.clear()
        deadline = time.monotonic() + 5
        while True:
            try:
                if requests.get(server.url + "/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the server did not serve again"
            time.sleep(0.1)
    finally:
        for s in socks:
            s.close()
        server.stop()


def _some_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_by_default_the_cap_is_below_the_descriptor_limit():
    """MAX_CONNECTIONS unset: the open-file limit less a tenth, at least 64
    (256 here, so 192), so a flood is answered 503 rather than left waiting
    in the backlog."""
    server = start_chatwire(preexec_fn=_some_descriptors)
    socks = []
    try:
        for _ in range(220):
            socks.append(connect(server))
        refused = 0
        for s in socks[-10:]:
            s.settimeout(2)
            try:
                if s.recv(64).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except socket.timeout:
                pass
        assert refused == 10, refused
    finally:
        for s in socks:
            s.close()
        server.stop()
