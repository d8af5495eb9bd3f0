"""WebSocket (RFC 6455) on raw sockets: frames built by hand and a client
that reads the server's frames as they are. Shared by the framing tests
(test_websocket_framing.py, against `conformance`) and the hostile-input
corpus (test_hostile.py, against `chatwire`)."""

from __future__ import annotations

import base64
import os
import socket
import struct

import pytest

TIMEOUT = 5.0

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def mask_bytes(payload: bytes, mask: bytes) -> bytes:
    """`payload` XOR the repeated 4-byte `mask` (fast for big payloads)."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, mask: bytes | None = None,
          rsv: int = 0) -> bytes:
    """One client frame; `rsv` sets the reserved bits (0..7, RSV1 = 4)."""
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | opcode])
    n = len(payload)
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    mask = mask or os.urandom(4)
    if mask == b"\0\0\0\0":  # a valid mask that leaves the bytes as they are: fast for big frames
        return head + mask + payload
    return head + mask + mask_bytes(payload, mask)


class Raw:
    """A WebSocket client on a plain socket, reading the server's frames.

    `path` is the Engine.IO path (the conformance server echoes on
    /engine.io/; chatwire serves /socket.io/), `query` its query string."""

    def __init__(self, server, first: bytes = b"", path: str = "/engine.io/",
                 query: str = "EIO=4&transport=websocket", timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        # frames sent in pieces go out at once (no Nagle wait for an ACK)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path}?{query} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        # `first`: frames sent in the same write as the request.
        self.sock.sendall(request + first)
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        return data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += self._recv()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload). Server frames are final and unmasked."""
        b0, b1 = self._take(2)
        assert b0 & 0x80 and not b0 & 0x70, f"bad first byte {b0:#x}"
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._take(8))
        return b0 & 0x0F, self._take(n)

    def read_data(self) -> tuple[int, bytes]:
        """The next frame that is not an Engine.IO ping."""
        while True:
            op, payload = self.read()
            if not (op == TEXT and payload == b"2"):
                return op, payload

    def open(self) -> dict:
        op, payload = self.read()
        assert op == TEXT and payload.startswith(b"0"), payload
        return payload

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(frame(TEXT, text.encode()))

    def expect_close(self, code: int | tuple[int, ...]) -> None:
        """The next frame (pings aside) is a close with `code` (or one of
        them), then the server ends the TCP connection."""
        codes = (code,) if isinstance(code, int) else code
        op, payload = self.read_data()
        assert op == CLOSE, (op, payload[:200])
        got = struct.unpack(">H", payload[:2])[0]
        assert got in codes, (got, codes, payload)
        self.expect_eof()

    def expect_eof(self) -> None:
        self.sock.settimeout(TIMEOUT)
        with pytest.raises((EOFError, ConnectionResetError)):
            while True:
                self.buf = b""
                self._recv()

    def close(self) -> None:
        self.sock.close()


def vm_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")
