"""WebSocket framing (RFC 6455) as the server speaks it, over raw sockets.

The server frames WebSocket messages itself (protocol/src/ws.rs), so
these tests check the framing a library would otherwise have covered:
fragmented messages, pings, the close handshake in both directions, bytes
sent together with the upgrade request, and the close codes of a client
that breaks the protocol (1002: an invalid close code among them), sends
text that is not UTF-8 (1007), announces a frame over the size limit (1009,
before any payload arrives) or fragments a message without end (1008); and
the opening handshake as RFC 6455 §4.2.1 has it (400, or 426 for a version
other than 13).
"""

from __future__ import annotations

import base64
import os
import socket
import struct

import pytest
from conftest import Server
from wslib import BINARY, CLOSE, CONT, PING, PONG, TEXT, TIMEOUT, Raw, frame, vm_kb

CALM = ("--ping-interval", "10000", "--ping-timeout", "5000")
SMALL = ("--ping-interval", "10000", "--ping-timeout", "5000", "--max-payload", "1000")


@pytest.fixture
def raw(servers):
    opened: list[Raw] = []

    def connect(args=CALM, first: bytes = b"") -> Raw:
        r = Raw(servers.get(*args), first)
        opened.append(r)
        return r

    yield connect
    for r in opened:
        r.close()


def test_text_and_binary_echo_in_one_write(raw):
    ws = raw()
    ws.open()
    ws.send(frame(TEXT, b"4hello") + frame(BINARY, b"\x00\x01\xff"))
    assert ws.read_data() == (TEXT, b"4hello")
    assert ws.read_data() == (BINARY, b"\x00\x01\xff")


def test_frames_sent_with_the_upgrade_request(raw):
    ws = raw(first=frame(TEXT, b"4early"))
    ws.open()
    assert ws.read_data() == (TEXT, b"4early")


def test_fragmented_message_with_a_ping_between(raw):
    ws = raw()
    ws.open()
    ws.send(
        frame(TEXT, "4hé".encode()[:3], fin=False)
        + frame(PING, b"p1")
        + frame(CONT, "4hé".encode()[3:] + b"llo", fin=True)
    )
    assert ws.read_data() == (PONG, b"p1")
    assert ws.read_data() == (TEXT, "4héllo".encode())


def test_large_frames_both_ways(raw):
    ws = raw()
    ws.open()
    for n in (125, 126, 65535, 65536, 200_000):
        payload = b"4" + b"x" * (n - 1)
        ws.send(frame(TEXT, payload))
        assert ws.read_data() == (TEXT, payload)


@pytest.mark.parametrize(
    "sent, code",
    [
        (frame(CLOSE, struct.pack(">H", 1001) + b"going"), 1001),  # client close: answered with its code
        (frame(CLOSE, b""), 1000),  # client close without a code: answered with 1000
        (frame(TEXT, b"1"), 1000),  # Engine.IO close packet: the server ends the session
        (frame(TEXT, b"4x", masked=False), 1002),  # unmasked client frame
        (bytes([0xC1, 0x80]) + b"\0\0\0\0", 1002),  # RSV1: no extension was negotiated
        (frame(0x3, b""), 1002),  # reserved opcode
        (frame(CONT, b"x"), 1002),  # continuation of nothing
        (frame(PING, b"x", fin=False), 1002),  # fragmented control frame
        (frame(PING, b"x" * 126), 1002),  # control frame over 125 bytes
        (frame(TEXT, b"4a", fin=False) + frame(TEXT, b"4b"), 1002),  # new message inside a fragmented one
        (frame(TEXT, b"4\xc3"), 1007),  # text that is not UTF-8
    ],
    ids=["client-close-1001", "client-close-no-code", "server-close", "unmasked", "rsv1",
         "reserved-opcode", "lone-continuation", "fragmented-ping", "long-ping", "nested-message",
         "bad-utf8"],
)
def test_close_handshake_and_close_codes(raw, sent, code):
    ws = raw()
    ws.open()
    ws.send(sent)
    ws.expect_close(code)


def test_oversized_frame_is_refused_from_its_header(raw):
    ws = raw(SMALL)
    ws.open()
    # A header announcing 2^40 bytes, and none of them: the server cannot be
    # waiting to buffer it, it answers at once.
    ws.send(bytes([0x81, 0x80 | 127]) + struct.pack(">Q", 1 << 40) + b"\0\0\0\0")
    ws.expect_close(1009)


def test_fragments_over_the_limit_close_with_1009(raw):
    ws = raw(SMALL)
    ws.open()
    ws.send(frame(TEXT, b"4" + b"x" * 600, fin=False) + frame(CONT, b"x" * 600))
    ws.expect_close(1009)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_an_invalid_close_code_is_a_protocol_error(raw, code):
    ws = raw()
    ws.open()
    ws.send(frame(CLOSE, struct.pack(">H", code)))
    ws.expect_close(1002)


@pytest.mark.parametrize("code", [1003, 1012, 1014, 3000, 4999])
def test_a_valid_close_code_is_answered_with_itself(raw, code):
    ws = raw()
    ws.open()
    ws.send(frame(CLOSE, struct.pack(">H", code)))
    ws.expect_close(code)


def test_endless_empty_fragments_close_with_1008(raw):
    ws = raw()
    ws.open()
    # 1 MB of maxPayload allows 15,625 fragments; 20,000 empty ones are refused.
    ws.send(frame(TEXT, b"4", fin=False) + frame(CONT, b"", fin=False) * 20_000)
    ws.expect_close(1008)


def handshake(server, *, method="GET", headers: dict[str, str | None] | None = None) -> bytes:
    """Sends an upgrade request (the good one, with `headers` replaced or,
    for None, left out) and returns the answer's head."""
    fields: dict[str, str | None] = {
        "Host": f"127.0.0.1:{server.port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Content-Length": "0" if method == "POST" else None,
    }
    fields.update(headers or {})
    request = f"{method} /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in fields.items() if v is not None
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall((request + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                break
            head += data
    return head.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize(
    "method, headers, status",
    [
        ("GET", {}, 101),
        ("GET", {"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"}, 101),
        ("GET", {"Sec-WebSocket-Version": None}, 426),
        ("GET", {"Sec-WebSocket-Version": "8"}, 426),
        ("GET", {"Connection": None}, 400),
        ("GET", {"Connection": "keep-alive"}, 400),
        ("POST", {}, 400),
        ("GET", {"Sec-WebSocket-Key": None}, 400),
        ("GET", {"Sec-WebSocket-Key": base64.b64encode(b"fifteen bytes!!").decode()}, 400),
        ("GET", {"Sec-WebSocket-Key": "not base64 at all"}, 400),
    ],
    ids=["good", "token-lists", "no-version", "version-8", "no-connection", "connection-without-upgrade",
         "post", "no-key", "short-key", "garbage-key"],
)
def test_the_opening_handshake_is_checked(servers, method, headers, status):
    head = handshake(servers.get(*CALM), method=method, headers=headers)
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    if status == 426:
        assert b"\r\nsec-websocket-version: 13" in head.lower(), head


def test_server_still_serves_after_all_that(raw):
    ws = raw()
    ws.open()
    ws.send(frame(TEXT, b"4ok"))
    assert ws.read_data() == (TEXT, b"4ok")


def test_a_client_that_does_not_read_is_dropped_not_buffered():
    """The server echoes ~58 MB at a client that never reads: once its
    queue passes its bound (4 MiB) the connection is dropped, and the
    server's memory never holds what the client did not take."""
    server = Server(*CALM, "--max-payload", "1000000")
    try:
        ws = Raw(server)
        ws.open()
        big = frame(TEXT, b"4" + b"x" * 899_999, mask=b"\0\0\0\0")
        dropped = False
        try:
            for _ in range(64):
                ws.sock.sendall(big)
        except OSError:  # reset, broken pipe, or the send blocked: the server stopped reading us
            dropped = True
        if not dropped:
            # Everything was read; the echoes could not all be written, so
            # the server must have closed: reading reaches the end.
            ws.sock.settimeout(TIMEOUT)
            with pytest.raises((EOFError, ConnectionResetError)):
                while True:
                    ws.buf = b""
                    ws._recv()
        ws.close()
        assert server.alive()
        # 64 echoes of 900 KB would be 58 MB; the bound keeps the peak far below.
        hwm = vm_kb(server.proc.pid, "VmHWM")
        print("server VmHWM kB", hwm)
        assert hwm < 40_000
        other = Raw(server)
        other.open()
        other.send(frame(TEXT, b"4still here"))
        assert other.read_data() == (TEXT, b"4still here")
        other.close()
    finally:
        server.stop()
