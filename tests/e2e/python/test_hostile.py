"""A hostile-input corpus against one real `chatwire` (docs/API.md).

More than 10,000 cases, generated from one seed and targeted at the
contract's edges, in four categories:

- REST: every route with wrong methods, unknown paths, malformed JSON,
  wrong content types, wrong field types, out-of-bounds fields, bad query
  parameters and cursors, bad tokens, oversized bodies, odd
  percent-encoding. Each gets the status the contract names with a JSON
  `{"detail": str}` body, and no refused request changes the store.
- Socket.IO events: every client event with payloads of every wrong shape,
  with and without an ack, over raw WebSocket (pipelined) and over
  python-socketio's long-polling. Each gets `error` with `code: "invalid"`
  (and the ack `{"error": {...}}` when one was asked), nothing is
  broadcast, nothing stored, and the connection stays open.
- Raw Engine.IO / Socket.IO: bad query strings, methods and sids (HTTP 400
  `{"code", "message"}`), malformed payloads and packets over polling and
  WebSocket (the session closed), bad namespaces (CONNECT_ERROR, the
  session kept), while a bystander session is unaffected.
- WebSocket frames on raw sockets: reserved bits and opcodes, unmasked,
  fragmented or long control frames, bad UTF-8, bad close codes, oversized
  and endless messages: closed with 1002 / 1007 / 1009 / 1008.

After every batch the server process is alive, its memory bounded, and a
fresh client can register, connect, send and get its ack.

The seed comes from $HOSTILE_SEED (default below); every failure names the
seed, the category and the case, so `HOSTILE_SEED=<seed> pytest ...`
replays it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import socket
import string
import struct
import time
import uuid

import jwt
import pytest
import requests

from chatlib import HEX24, PASSWORD, TIMEOUT, ChatClient, register, unique
from conftest import JWT_SECRET, start_chatwire
from wslib import BINARY, CLOSE, CONT, PING, PONG, TEXT, Raw, frame, vm_kb

DEFAULT_SEED = 20_251_125
SEED = int(os.environ.get("HOSTILE_SEED") or DEFAULT_SEED)
MAX_PAYLOAD = 1_000_000
MAX_BODY = 1_000_000
# Limits of the memory check (see `check_health`).
RSS_FACTOR = 3
RSS_CEILING_KB = 200 * 1024
# Cases per category (targeted ones first, then generated ones up to the count).
N_REST = 4200
N_EVENTS_WS = 5000
N_EVENTS_POLLING = 300
N_ENGINE = 1500
N_FRAMES = 2000
BATCH = 500

EIO_ERRORS = {
    0: "Transport unknown",
    1: "Session ID unknown",
    2: "Bad handshake method",
    3: "Bad request",
    5: "Unsupported protocol version",
}


def rng_for(category: str) -> random.Random:
    """One generator per category, so that one category's cases do not move
    when another's change."""
    return random.Random(f"{SEED}:{category}")


def where(category: str, i: int, case) -> str:
    text = repr(case)
    if len(text) > 600:
        text = text[:600] + "..."
    return f"[HOSTILE_SEED={SEED} {category} case #{i}] {text}"


@pytest.fixture(autouse=True)
def _print_seed():
    # Captured output is shown only for a failing test: the seed to replay it.
    print(f"HOSTILE_SEED={SEED} (replay: HOSTILE_SEED={SEED} pytest tests/e2e/python/test_hostile.py)")
    yield


# ---------------------------------------------------------------- the server, its health


class Hostile:
    """The server under attack, with what every batch checks afterwards."""

    def __init__(self) -> None:
        self.server = start_chatwire({
            # every chat:send spends a token of its user's limit and every
            # event one of its socket's budget, accepted or not: the corpus
            # must meet the validation, not the limiters (test_flood.py
            # shows those)
            "RATE_LIMIT_PER_SECOND": "1000000",
            "RATE_LIMIT_BURST": "1000000",
            "EVENT_RATE_LIMIT_PER_SECOND": "1000000",
            "EVENT_RATE_LIMIT_BURST": "1000000",
        })
        self.pid = self.server.proc.pid
        self.baseline_kb: int | None = None
        self.peak_kb = 0
        self.counts: dict[str, int] = {}

    def rss_kb(self) -> int:
        return vm_kb(self.pid, "VmRSS")

    def count(self, category: str, n: int) -> None:
        self.counts[category] = self.counts.get(category, 0) + n


def fresh_client_round_trip(server) -> None:
    """A legitimate newcomer: registers, connects, sends, gets its ack."""
    user = register(server)
    c = ChatClient(server).connect(user.token)
    try:
        ack = c.call("chat:send", {"text": "still serving", "tempId": "health", "chatId": "hostile-health"})
        assert "error" not in ack and HEX24.fullmatch(ack["id"]) and ack["tempId"] == "health", ack
    finally:
        c.close()


def check_health(h: Hostile, after: str) -> None:
    """The process is up, its memory bounded, and it still serves.

    The bound: the resident set after warm-up (every kind of request once,
    a maximal body among them) times RSS_FACTOR, and never over
    RSS_CEILING_KB. What the corpus leaves behind is a few hundred users and
    nothing else: no session, no message, no buffer may outlive its case,
    so the resident set may wobble with the allocator but not grow with the
    number of cases; a leak of even a few hundred bytes per case (10,000+
    cases, some of them 1 MB bodies) would cross it."""
    assert h.server.alive(), f"[HOSTILE_SEED={SEED}] the server died during {after}"
    rss = h.rss_kb()
    h.peak_kb = max(h.peak_kb, rss)
    if h.baseline_kb is not None:
        bound = min(RSS_FACTOR * h.baseline_kb, RSS_CEILING_KB)
        assert rss < bound, (f"[HOSTILE_SEED={SEED}] after {after}: VmRSS {rss} kB over the bound {bound} kB "
                             f"(warm-up {h.baseline_kb} kB)")
    fresh_client_round_trip(h.server)


@pytest.fixture(scope="module")
def hostile():
    h = Hostile()
    try:
        warm_up(h)
        yield h
    finally:
        print(f"\nHOSTILE_SEED={SEED} cases: {h.counts} total {sum(h.counts.values())}; "
              f"VmRSS warm-up {h.baseline_kb} kB, peak {h.peak_kb} kB")
        alive = h.server.alive()
        h.server.stop()
        assert alive, "the server died"


def warm_up(h: Hostile) -> None:
    """Every kind of traffic once, then the memory baseline."""
    server = h.server
    fresh_client_round_trip(server)
    http_ = Http(server)
    http_.request("POST", "/register", {"Content-Type": "application/json"}, b"x" * (MAX_BODY + 1))
    http_.request("POST", "/login", {"Content-Type": "application/json"},
                  b'{"username": "' + b"a" * (MAX_BODY - 41) + b'", "password": "secret-pw"}')
    http_.request("GET", "/messages", {}, b"")
    http_.close()
    ws = Raw(server, path="/socket.io/")
    ws.open()
    ws.send(frame(TEXT, b"4" + b"x" * (MAX_PAYLOAD - 1), mask=b"\0\0\0\0"))
    ws.expect_close(1000)  # one Socket.IO packet that is not one: the session ends
    ws.close()
    r = requests.get(f"{server.url}/socket.io/?EIO=4&transport=polling", timeout=TIMEOUT)
    assert r.status_code == 200
    time.sleep(0.2)
    h.baseline_kb = h.rss_kb()
    check_health(h, "warm-up")


# ---------------------------------------------------------------- HTTP on keep-alive connections


class Http:
    """Requests sent as written (no re-quoting of the path), on one
    keep-alive connection, reopened when the server closes it."""

    def __init__(self, server) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)

    def request(self, method: str, target: str, headers: dict, body, chunked: bool = False):
        """Returns (status, headers, body bytes)."""
        for attempt in (1, 2):
            try:
                self.conn.putrequest(method, target, skip_accept_encoding=True)
                for k, v in headers.items():
                    self.conn.putheader(k, v)
                if chunked:
                    self.conn.putheader("Transfer-Encoding", "chunked")
                    self.conn.endheaders()
                    for i in range(0, len(body), 65536):
                        piece = body[i:i + 65536]
                        self.conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    self.conn.send(b"0\r\n\r\n")
                else:
                    if body or method in ("POST", "PUT", "PATCH"):
                        self.conn.putheader("Content-Length", str(len(body)))
                    self.conn.endheaders(body if body else None)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self.conn.close()
                return resp.status, resp.headers, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                # the server closed the kept-alive connection between requests
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def assert_detail(status, headers, body, want: int, ctx: str) -> str:
    assert status == want, f"{ctx}: expected {want}, got {status} {body[:300]!r}"
    assert (headers.get("content-type") or "").startswith("application/json"), f"{ctx}: {headers}"
    try:
        doc = json.loads(body)
    except ValueError:
        pytest.fail(f"{ctx}: the error body is not JSON: {body[:300]!r}")
    assert isinstance(doc, dict) and set(doc) == {"detail"}, f"{ctx}: {doc!r}"
    assert isinstance(doc["detail"], str) and doc["detail"], f"{ctx}: {doc!r}"
    return doc["detail"]


# ---------------------------------------------------------------- REST corpus

JSON_CT = {"Content-Type": "application/json"}
ROUTES = {"/": "GET", "/ready": "GET", "/register": "POST", "/login": "POST", "/messages": "GET"}
OTHER_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "TRACE", "PROPFIND", "PURGE", "BREW"]
NON_STRINGS = [0, 7, -1, 1.5, True, False, None, [], ["abcdef"], {}, {"a": "b"}]
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
BAD_NAME_CHARS = " !\"#$%&'()*+,/:;<=>?@[\\]^`{|}~\t\n\x00é€😀\u3000\u200b"
# chat ids allow ":" too
BAD_CHAT_CHARS = BAD_NAME_CHARS.replace(":", "")


class RestCase:
    """One request and its expected answer. `kind`: what the case attacks."""

    __slots__ = ("kind", "method", "target", "headers", "body", "status", "chunked", "register_after",
                 "login_after")

    def __init__(self, kind, method, target, headers, body, status, chunked=False, register_after=None,
                 login_after=None):
        self.kind = kind
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.status = status
        self.chunked = chunked
        # a refused /register for a name the contract allows: registering it
        # afterwards must succeed (the refusal stored nothing)
        self.register_after = register_after
        # (username, password) that must NOT log in afterwards
        self.login_after = login_after

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"...(%d bytes)" % len(self.body)
        return (f"RestCase({self.kind}: {self.method} {self.target} {self.headers} {body!r} "
                f"-> {self.status}{' chunked' if self.chunked else ''})")


def jbody(obj) -> bytes:
    return json.dumps(obj).encode()


def valid_name(s) -> bool:
    return isinstance(s, str) and 3 <= len(s) <= 32 and all(c in NAME_CHARS for c in s)


def valid_password(s) -> bool:
    return isinstance(s, str) and 6 <= len(s.encode()) <= 72


def rand_name(rng: random.Random, n: int | None = None) -> str:
    n = rng.randint(3, 32) if n is None else n
    # a unique head, so that generated names never collide by chance
    head = "h" + uuid.UUID(int=rng.getrandbits(128)).hex[:9]
    tail = "".join(rng.choice(NAME_CHARS) for _ in range(max(0, n - len(head))))
    return (head + tail)[:n]


def rand_password(rng: random.Random, nbytes: int) -> str:
    """A password of exactly `nbytes` UTF-8 bytes, multi-byte characters mixed in."""
    out, size = [], 0
    while size < nbytes:
        left = nbytes - size
        c = rng.choice(["a", "Z", "9", "!", " ", "é", "€", "😀"])
        if len(c.encode()) > left:
            c = "x"
        out.append(c)
        size += len(c.encode())
    return "".join(out)


def bad_name(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return rand_name(rng, 32)[: rng.randint(0, 2)]  # too short
    if kind == 1:
        return rand_name(rng, 32) + "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 40)))
    name = list(rand_name(rng, rng.randint(3, 32)))
    for _ in range(rng.randint(1, 3)):
        name[rng.randrange(len(name))] = rng.choice(BAD_NAME_CHARS)
    return "".join(name)


def bad_password(rng: random.Random) -> str:
    return rand_password(rng, rng.choice([0, 1, 2, 3, 4, 5, 73, 74, 75, 80, 100, 1000]))


class Tokens:
    """Tokens for /messages: one good, and every way of being bad."""

    def __init__(self, user_id: str, username: str) -> None:
        self.user_id = user_id
        self.username = username

    def mint(self, alg="HS256", secret=JWT_SECRET, headers=None, **claims) -> str:
        now = int(time.time())
        base = {"sub": self.user_id, "username": self.username, "iat": now, "exp": now + 3600}
        base.update(claims)
        base = {k: v for k, v in base.items() if v is not _DROP}
        return jwt.encode(base, secret, algorithm=alg, headers=headers)

    def bad(self, rng: random.Random) -> tuple[str, str]:
        """(what, Authorization header value) of a refused token."""
        now = int(time.time())
        good = self.mint()
        k = rng.randrange(17)
        if k == 0:
            return "expired", "Bearer " + self.mint(exp=now - rng.randint(5, 10**8))
        if k == 1:
            return "wrong secret", "Bearer " + self.mint(secret="another-secret-" + "%032x" % rng.getrandbits(128))
        if k == 2:
            return "other alg", "Bearer " + self.mint(alg=rng.choice(["HS384", "HS512"]))
        if k == 3:
            header = _b64url(json.dumps({"alg": rng.choice(["none", "None", "NONE"]), "typ": "JWT"}).encode())
            payload = good.split(".")[1]
            return "alg none", "Bearer " + f"{header}.{payload}." + rng.choice(["", good.split(".")[2]])
        if k == 4:
            h, p, s = good.split(".")
            claims = json.loads(_unb64url(p))
            claims[rng.choice(["username", "sub", "exp"])] = rng.choice(
                ["mallory", "0" * 24, now + 10**6, "ffffffffffffffffffffffff"])
            return "tampered payload", "Bearer " + f"{h}.{_b64url(json.dumps(claims).encode())}.{s}"
        if k == 5:
            h, p, s = good.split(".")
            i = rng.randrange(len(s) - 1)  # not the last char: its low bits may be padding
            flipped = s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]
            return "flipped signature", "Bearer " + f"{h}.{p}.{flipped}"
        if k == 6:
            missing = rng.choice(["sub", "username", "exp"])
            return f"no {missing}", "Bearer " + self.mint(**{missing: _DROP})
        if k == 7:
            field, value = rng.choice([
                ("sub", "not-an-object-id"), ("sub", 12345), ("sub", None), ("sub", "0" * 23),
                ("username", 5), ("username", None), ("username", ["x"]),
                ("exp", "tomorrow"), ("exp", None), ("exp", [now + 3600]),
            ])
            return f"{field} of the wrong type", "Bearer " + self.mint(**{field: value})
        if k == 8:
            return "nbf in the future", "Bearer " + self.mint(nbf=now + rng.randint(120, 10**7))
        if k == 9:
            return "crit header", "Bearer " + self.mint(headers={"crit": [rng.choice(["exp", "b64", "x"])]})
        if k == 10:
            # RFC 7515 signature with the right secret over a header that is not JSON
            h = _b64url(b"not json")
            p = good.split(".")[1]
            sig = _b64url(hmac.new(JWT_SECRET.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest())
            return "header not JSON", f"Bearer {h}.{p}.{sig}"
        if k == 11:
            parts = good.split(".")
            return "parts missing or extra", "Bearer " + rng.choice(
                [parts[0], ".".join(parts[:2]), ".".join(parts + ["x"]), "..", ".", good + "."])
        if k == 12:
            junk = "".join(rng.choice(string.printable[:94]) for _ in range(rng.randint(1, 300)))
            return "garbage", "Bearer " + junk.strip() if junk.strip() else "Bearer x"
        if k == 13:
            return "bad scheme", rng.choice(["Basic " + good, "Token " + good, "Bearer", "Bearer ", good,
                                             "Bearer" + good, "JWT " + good, "Digest x=y", ""])
        if k == 14:
            return "token with junk around", "Bearer " + rng.choice(["x" + good, good + "x", good + ".x",
                                                                     good[:-1], good[1:]])
        if k == 15:
            return "huge", "Bearer " + "a" * rng.randint(5000, 60000)
        return "payload not base64url", "Bearer " + good.split(".")[0] + ".!!!!." + good.split(".")[2]


_DROP = object()


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def malformed_json(rng: random.Random) -> bytes:
    """Bytes that are not JSON (every variant is invalid by construction)."""
    good = json.dumps({"username": rand_name(rng), "password": rand_password(rng, 10),
                       "n": [1, 2, {"x": None}]}, ensure_ascii=rng.random() < 0.5).encode()
    k = rng.randrange(14)
    if k == 0:
        return good[: rng.randint(1, len(good) - 1)]  # a strict prefix of an object
    if k == 1:
        return good + rng.choice([b"}", b"]", b"x", b",", b"{}", b'"', b"0x", b"\x00"])
    if k == 2:
        return good.replace(b'"', b"'")
    if k == 3:
        return b'{"username": "abcdef", "password": ' + rng.choice([b"NaN", b"Infinity", b"-Infinity",
                                                                   b"undefined", b"secret"]) + b"}"
    if k == 4:
        return b'{"username": "abcdef", /* c */ "password": "secret-pw"}'
    if k == 5:
        return b'{"username": "abcdef", "password": "secret-pw",}'
    if k == 6:
        return b'{username: "abcdef", password: "secret-pw"}'
    if k == 7:  # a raw control character inside a string
        return b'{"username": "ab' + bytes([rng.randrange(0, 32)]) + b'cdef", "password": "secret-pw"}'
    if k == 8:  # bytes that are not UTF-8 inside a string
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80"])
        return b'{"username": "ab' + bad + b'cdef", "password": "secret-pw"}'
    if k == 9:  # an escape that is not one, or a lone surrogate
        return b'{"username": "ab' + rng.choice([b"\\x41", b"\\u12zz", b"\\ud800", b"\\udc00x", b"\\q"]) + \
            b'cdef", "password": "secret-pw"}'
    if k == 10:
        depth = rng.choice([200, 1000, 10000])
        return b"[" * depth + b"]" * depth
    if k == 11:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))).replace(b" ", b"\x01") + b"\xff"
    if k == 12:
        return b"{" + b'"a":1,' * rng.randint(1, 50) + b"}"
    return rng.choice([b"{", b"}", b"[", b'"', b"tru", b"nul", b"01", b"-", b"1.", b".5", b"+1", b"1e", b"\xef\xbb\xbf{}"])


def rest_cases(rng: random.Random, alice, tokens: Tokens, chat, other_chat, taken) -> list[RestCase]:
    """`chat`: (chat id, its message ids); `other_chat`: the same for another
    chat; `taken`: (username, password) of an existing account."""
    cases: list[RestCase] = []
    auth = {"Authorization": f"Bearer {alice.token}"}
    chat_id, ids = chat
    other_id, other_ids = other_chat
    now_ms = int(time.time() * 1000)

    def add(*a, **kw):
        cases.append(RestCase(*a, **kw))

    # --- targeted
    for route, good in ROUTES.items():
        for m in OTHER_METHODS:
            if m != good:
                add("wrong method", m, route, JSON_CT, b"{}" if m != "GET" else b"", 405)
        add("wrong method, query", "DELETE", route + "?limit=5", auth, b"", 405)
    for path in ["/nope", "/messages/x", "/register/extra", "/register/", "/login/", "/messages/",
                 "/ready/", "//", "//register", "/REGISTER", "/Login", "/message", "/messagesx",
                 "/%00", "/%ff%fe", "/%zz", "/%", "/a%2Fb", "/register%00", "/login%20", "/..",
                 "/openapi", "/socket.io/x", "/socket.io/socket.io/", "/" + "a" * 4000, "/%C3%A9"]:
        for m in ("GET", "POST"):
            add("unknown path", m, path, JSON_CT, b"{}" if m == "POST" else b"", 404)
    for route in ("/register", "/login"):
        good = jbody({"username": rand_name(rng), "password": PASSWORD})
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                   "application/jsonx", "application/json-patch+json", "json", "application/javascript",
                   "text/json", "application/xml", "*/*", "application", "application/", "; application/json",
                   "application/json-seq", "image/png", "application/vnd.api+json", "x"]:
            add("content type", "POST", route, {"Content-Type": ct}, good, 415)
        add("no content type", "POST", route, {}, good, 415)
        for raw in [b"", b" ", b"\n\t \r"]:
            add("empty body", "POST", route, JSON_CT, raw, 422)
        for raw in [b"[]", b"5", b'"text"', b"null", b"true", b"[{}]", b"1.5"]:
            add("body not an object", "POST", route, JSON_CT, raw, 422)
        for raw in [b"[" * 10000 + b"]" * 10000, b'{"username": "\\ud800abc", "password": "secret-pw"}',
                    b"\xff\xfe\x00garbage", b'{"a":1}}', b"{not json}"]:
            add("malformed JSON", "POST", route, JSON_CT, raw, 400)
        # oversized, by Content-Length and chunked, JSON or not
        for size in (MAX_BODY + 1, MAX_BODY + 2, MAX_BODY + 4096):
            add("oversized body", "POST", route, JSON_CT, b"{" + b" " * (size - 2) + b"}", 413)
        add("oversized body, not JSON", "POST", route, {"Content-Type": "text/plain"}, b"x" * (MAX_BODY + 1), 413)
        add("oversized body, chunked", "POST", route, JSON_CT, b"[" + b"1," * (MAX_BODY // 2) + b"1]", 413,
            chunked=True)
    add("oversized body on a GET route", "GET", "/messages", auth, b"x" * (MAX_BODY + 1), 413)
    # exactly the limit: read, then judged on its fields (the name is too long)
    at_limit = b'{"username": "' + b"a" * (MAX_BODY - 41) + b'", "password": "secret-pw"}'
    assert len(at_limit) == MAX_BODY
    add("body at the limit", "POST", "/register", JSON_CT, at_limit, 422)
    add("body at the limit", "POST", "/login", JSON_CT, at_limit, 401)
    # usernames at their bounds, and the duplicate in every case
    user, pw = taken
    for variant in {user, user.upper(), user.lower(), user.swapcase(), user.capitalize()}:
        other_pw = "other-" + PASSWORD
        add("duplicate username", "POST", "/register", JSON_CT, jbody({"username": variant, "password": other_pw}),
            409, login_after=(variant, other_pw))
    add("login, wrong password", "POST", "/login", JSON_CT, jbody({"username": user, "password": pw + "x"}), 401)
    add("login, cut password", "POST", "/login", JSON_CT, jbody({"username": user, "password": pw[:-1]}), 401)
    # /messages: limit, times, cursors, chats
    for limit in ["0", "101", "-1", "1000", "99999999999999999999999", "abc", "", "1.5", "1e2", "0x10",
                  "NaN", "-0.5", "%D9%A1", "10%2010", "%31%30%31", "+-1", "2147483648", "-9223372036854775809"]:
        add("limit out of bounds", "GET", f"/messages?limit={limit}", auth, b"", 422)
    for key in ("before", "after"):
        for v in ["abc", "1.5", "1e12", "", "99999999999999999999", "-99999999999999999999", "0x1f",
                  "9223372036854775808", "NaN", "now", "%2B%2B1", "12abc"]:
            add(f"{key} not an integer", "GET", f"/messages?{key}={v}", auth, b"", 422)
    for key in ("beforeId", "afterId"):
        for v in ["xyz", "123", "0123456789ABCDEF01234567", "0123456789abcdef0123456", "0123456789abcdef012345678",
                  "g" * 24, "", "%30" * 24 + "0", "%20" + "0" * 23, "0" * 24 + "%00"]:
            add(f"{key} malformed", "GET", f"/messages?chatId={chat_id}&{key}={v}", auth, b"", 422)
        add(f"{key} unknown", "GET", f"/messages?chatId={chat_id}&{key}={'0' * 24}", auth, b"", 422)
        add(f"{key} of another chat", "GET", f"/messages?chatId={chat_id}&{key}={other_ids[0]}", auth, b"", 422)
        add(f"{key} of a chat, asked in general", "GET", f"/messages?{key}={ids[0]}", auth, b"", 422)
    # Bounds combine (a range, two bounds on a side); an unknown id on either side is still refused.
    for params in [f"before={now_ms}&after=1", f"before={now_ms}&beforeId={ids[0]}", f"after=1&afterId={ids[0]}",
                   f"beforeId={ids[0]}&afterId={ids[1]}", f"before={now_ms}&afterId={ids[0]}",
                   f"beforeId={ids[0]}&after=1", f"before=1&after=1&beforeId={ids[0]}&afterId={ids[0]}"]:
        add("combined bounds", "GET", f"/messages?chatId={chat_id}&{params}", auth, b"", 200)
        if ids[0] in params:
            add("combined bounds, an id unknown", "GET",
                f"/messages?chatId={chat_id}&{params.replace(ids[0], '0' * 24)}", auth, b"", 422)
    for cid in ["", "bad%20chat", "bad+chat", "x" * 65, "caf%C3%A9", "a%2Fb", "%00", "a%23b", "%zz", "%ff",
                "%E2%82%AC", "a%0Ab", "*", "a,b", "%7B%7D", "a%09b"]:
        add("bad chatId", "GET", f"/messages?chatId={cid}", auth, b"", 422)
    # percent-encoding that decodes to something valid is valid
    add("encoded chatId", "GET", "/messages?chatId=gen%65ral", auth, b"", 200)
    add("encoded key", "GET", "/messages?%6Cimit=5", auth, b"", 200)
    add("encoded key, bad value", "GET", "/messages?%6Cimit=0", auth, b"", 422)
    add("encoded limit", "GET", "/messages?limit=%31%30%30", auth, b"", 200)
    for header in ["Bearer", "Bearer ", "Basic abc", "garbage", "Token x.y.z", "Bearer e30.e30.e30",
                   "Bearer not.a.jwt", "Bearer " + "a" * 10000]:
        add("bad Authorization", "GET", "/messages", {"Authorization": header}, b"", 401)
    add("no Authorization", "GET", "/messages", {}, b"", 401)
    add("no Authorization, bad query", "GET", "/messages?limit=0", {}, b"", 401)
    # accepted edges, as controls: the same rules let these through
    for n in (3, 32):
        name = rand_name(rng, n)
        add("username at its bound", "POST", "/register", JSON_CT, jbody({"username": name, "password": PASSWORD}), 201)
    for nbytes in (6, 72):
        add("password at its bound", "POST", "/register", JSON_CT,
            jbody({"username": rand_name(rng), "password": rand_password(rng, nbytes)}), 201)
    for limit in ("1", "100"):
        add("limit at its bound", "GET", f"/messages?chatId={chat_id}&limit={limit}", auth, b"", 200)
    add("before far in the future", "GET", "/messages?before=9223372036854775807", auth, b"", 200)
    add("after far in the past", "GET", "/messages?after=-9223372036854775808", auth, b"", 200)

    # --- generated, up to N_REST
    generators = [
        lambda: gen_register_bad_field(rng),
        lambda: gen_register_bad_field(rng),
        lambda: gen_login_bad(rng),
        lambda: gen_malformed_json(rng),
        lambda: gen_bad_token(rng, tokens),
        lambda: gen_bad_token(rng, tokens),
        lambda: gen_bad_query(rng, auth, chat, other_chat),
        lambda: gen_bad_query(rng, auth, chat, other_chat),
        lambda: gen_method_path(rng),
        lambda: gen_content_type(rng),
    ]
    while len(cases) < N_REST:
        cases.append(rng.choice(generators)())
    return cases


def gen_register_bad_field(rng) -> RestCase:
    name, pw = rand_name(rng), rand_password(rng, rng.randint(6, 72))
    k = rng.randrange(6)
    after = None
    if k == 0:
        body = {"username": bad_name(rng), "password": pw}
    elif k == 1:
        body = {"username": name, "password": bad_password(rng)}
        after = name
    elif k == 2:
        body = {"username": rng.choice(NON_STRINGS), "password": pw}
    elif k == 3:
        body = {"username": name, "password": rng.choice(NON_STRINGS)}
        after = name
    elif k == 4:
        body = rng.choice([{"username": name}, {"password": pw}, {}, {"user": name, "pass": pw},
                           {"Username": name, "Password": pw}])
        after = name
    else:
        body = {"username": bad_name(rng), "password": bad_password(rng)}
    if rng.random() < 0.3:
        body = dict(body, extra=rng.choice(NON_STRINGS + ["x"]))
    return RestCase("register, field refused", "POST", "/register", JSON_CT, jbody(body), 422,
                    register_after=after)


def gen_login_bad(rng) -> RestCase:
    k = rng.randrange(4)
    if k == 0:  # strings, but no account can have them: 401 as for a wrong password
        body = {"username": rng.choice([bad_name(rng), rand_name(rng)]),
                "password": rng.choice([bad_password(rng), rand_password(rng, 10)])}
        return RestCase("login, no such account", "POST", "/login", JSON_CT, jbody(body), 401)
    if k == 1:
        body = {"username": rng.choice(NON_STRINGS), "password": PASSWORD}
    elif k == 2:
        body = {"username": rand_name(rng), "password": rng.choice(NON_STRINGS)}
    else:
        body = rng.choice([{}, {"username": rand_name(rng)}, {"password": PASSWORD}])
    return RestCase("login, field refused", "POST", "/login", JSON_CT, jbody(body), 422)


def gen_malformed_json(rng) -> RestCase:
    route = rng.choice(["/register", "/login"])
    ct = rng.choice(["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
                     " application/json ", "application/json;charset=latin1"])
    return RestCase("malformed JSON", "POST", route, {"Content-Type": ct}, malformed_json(rng), 400)


# The server's limit on a request's line and headers (MAX_HEADER_BYTES): a
# header over it is answered 431 before anything reads the token.
MAX_HEADER_BYTES = 16_384


def gen_bad_token(rng, tokens: Tokens) -> RestCase:
    what, header = tokens.bad(rng)
    query = rng.choice(["", "?limit=5", "?limit=0", "?chatId=bad%20chat", "?before=x"])
    status = 431 if len(header) > MAX_HEADER_BYTES else 401
    return RestCase(f"token: {what}", "GET", "/messages" + query, {"Authorization": header}, b"", status)


def gen_bad_query(rng, auth, chat, other_chat) -> RestCase:
    chat_id, ids = chat
    good = {"chatId": chat_id, "limit": str(rng.randint(1, 100))}
    k = rng.randrange(7)
    if k == 0:
        good["limit"] = rng.choice([str(rng.randint(101, 10**6)), str(-rng.randint(0, 10**6)), "0",
                                    str(rng.randint(10**19, 10**30)), _q("".join(rng.choices("abc.,-", k=3)))])
    elif k == 1:
        key = rng.choice(["before", "after"])
        good[key] = rng.choice([str(rng.randint(10**19, 10**25)), str(rng.random()), "x" + str(rng.randint(0, 9)),
                                str(rng.randint(0, 10**12)) + "ms", ""])
    elif k == 2:
        key = rng.choice(["beforeId", "afterId"])
        good[key] = rng.choice(["%024x" % rng.getrandbits(96) + "0", "%023x" % rng.getrandbits(92),
                                "%024X" % (rng.getrandbits(96) | 1 << 95), "z" * 24, "%024x" % rng.getrandbits(96)])
        if len(good[key]) == 24 and good[key].islower() and all(c in "0123456789abcdef" for c in good[key]):
            good[key] = good[key] if good[key] not in ids else "0" * 24  # well formed, but no such message
    elif k == 3:
        good["chatId"] = rng.choice(["x" * rng.randint(65, 300), _q("".join(rng.choices(BAD_CHAT_CHARS, k=3))),
                                     chat_id + rng.choice(["%20", "%2F", "%C3%A9", "%00", "+"])])
    elif k == 4:
        # a range whose bounds are fine but for one id that names no message
        a, b = rng.sample([("before", str(int(time.time() * 1000))), ("after", "1"), ("beforeId", ids[0]),
                           ("afterId", ids[-1])], 2)
        good[a[0]], good[b[0]] = a[1], b[1]
        good[rng.choice(["beforeId", "afterId"])] = "0" * 24
    elif k == 5:
        good[rng.choice(["beforeId", "afterId"])] = other_chat[1][0]
    else:
        good["limit"] = rng.choice(["0", "101"])
        good[rng.choice(["foo", "limit[]", "LIMIT"])] = "1"
    # every value above is already URL-safe (percent-encoded where it had to be)
    quoted = "&".join(f"{k}={v}" for k, v in good.items())
    if rng.random() < 0.2:
        quoted = "&" + quoted + "&&"
    return RestCase("query refused", "GET", "/messages?" + quoted, auth, b"", 422)


def _q(v: str) -> str:
    return "".join(c if c in NAME_CHARS + ":" else "".join(f"%{b:02X}" for b in c.encode()) for c in v)


def gen_method_path(rng) -> RestCase:
    if rng.random() < 0.5:
        route, good = rng.choice(list(ROUTES.items()))
        m = rng.choice([m for m in OTHER_METHODS if m != good])
        return RestCase("wrong method", m, route, JSON_CT, b"{}" if m != "GET" else b"", 405)
    segs = ["".join(rng.choices(string.ascii_lowercase + string.digits + "%-._~", k=rng.randint(1, 12)))
            for _ in range(rng.randint(1, 4))]
    path = "/" + "/".join(segs)
    if path.rstrip("/") in ROUTES or path.rstrip("/") == "/socket.io" or path == "/":
        path = "/x" + path
    m = rng.choice(["GET", "POST", "PUT", "DELETE"])
    return RestCase("unknown path", m, path, JSON_CT, b"{}" if m != "GET" else b"", 404)


def gen_content_type(rng) -> RestCase:
    ct = rng.choice(["text/plain", "text/html", "application/xml", "application/x-www-form-urlencoded",
                     "multipart/form-data", "application/octet-stream", "application/jsonp", "json/application",
                     "application/ json", "text/plain; application/json"])
    body = jbody({"username": rand_name(rng), "password": PASSWORD})
    if rng.random() < 0.3:
        body = malformed_json(rng)
    return RestCase("content type", "POST", rng.choice(["/register", "/login"]), {"Content-Type": ct}, body, 415)


def run_rest_case(http_: Http, case: RestCase, ctx: str) -> None:
    status, headers, body = http_.request(case.method, case.target, case.headers, case.body, case.chunked)
    assert status < 500, f"{ctx}: {status} {body[:300]!r}"
    if case.status >= 400:
        assert_detail(status, headers, body, case.status, ctx)
        return
    assert status == case.status, f"{ctx}: expected {case.status}, got {status} {body[:300]!r}"
    doc = json.loads(body)
    if case.status == 201:
        assert set(doc) == {"access_token", "token_type", "user"}, f"{ctx}: {doc}"
    else:
        assert isinstance(doc, list), f"{ctx}: {doc!r}"


def history(server, token: str, chat_id: str) -> list[dict]:
    r = requests.get(f"{server.url}/messages", params={"chatId": chat_id, "limit": 100},
                     headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def test_rest_corpus(hostile):
    server = hostile.server
    rng = rng_for("rest")
    alice = register(server)
    taken = (unique("taken"), "taken-" + PASSWORD)
    register(server, *taken)
    c = ChatClient(server).connect(alice.token)
    try:
        chat_id, other_id = unique("rest"), unique("rest-other")
        ids = [c.call("chat:send", {"text": f"r{i}", "chatId": chat_id})["id"] for i in range(3)]
        other_ids = [c.call("chat:send", {"text": "o", "chatId": other_id})["id"]]
    finally:
        c.close()
    chats = ["general", chat_id, other_id]
    before = {cid: history(server, alice.token, cid) for cid in chats}
    cases = rest_cases(rng, alice, Tokens(alice.id, alice.username), (chat_id, ids), (other_id, other_ids), taken)
    assert len(cases) >= N_REST
    http_ = Http(server)
    started = time.monotonic()
    try:
        for start in range(0, len(cases), BATCH):
            for i in range(start, min(start + BATCH, len(cases))):
                run_rest_case(http_, cases[i], where("rest", i, cases[i]))
            check_health(hostile, f"REST cases {start}..{start + BATCH}")
    finally:
        http_.close()
    hostile.count("rest", len(cases))
    # Nothing stored by a refusal: no message anywhere...
    for cid in chats:
        assert history(server, alice.token, cid) == before[cid], f"[HOSTILE_SEED={SEED}] chat {cid} changed"
    # ...no account under a refused name (registering it now succeeds)...
    names = sorted({c.register_after for c in cases if c.register_after}, key=str.lower)
    seen_lower: set[str] = set()
    for name in names:
        if name.lower() in seen_lower:
            continue
        seen_lower.add(name.lower())
        r = requests.post(f"{server.url}/register", json={"username": name, "password": PASSWORD}, timeout=TIMEOUT)
        assert r.status_code == 201, f"[HOSTILE_SEED={SEED}] a refused /register stored {name!r}: {r.status_code} {r.text}"
    # ...and the duplicates changed nobody's password.
    for case in cases:
        if case.login_after:
            name, pw = case.login_after
            r = requests.post(f"{server.url}/login", json={"username": name, "password": pw}, timeout=TIMEOUT)
            assert r.status_code == 401, f"[HOSTILE_SEED={SEED}] {case}: the refused password logs in"
    r = requests.post(f"{server.url}/login", json={"username": taken[0], "password": taken[1]}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    print(f"REST: {len(cases)} cases ({len(names)} refused names checked) in {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------- Socket.IO on a raw WebSocket


def parse_sio(text: str) -> tuple[str, int | None, object]:
    """A server Socket.IO packet (namespace `/`): (type digit, ack id, data)."""
    kind, rest = text[0], text[1:]
    i = 0
    while i < len(rest) and rest[i].isdigit():
        i += 1
    ack = int(rest[:i]) if i else None
    data = json.loads(rest[i:]) if rest[i:] else None
    return kind, ack, data


class RawSio:
    """A Socket.IO client on a raw WebSocket (`wslib.Raw`): events go out
    as written, every packet that comes back is read in order."""

    def __init__(self, server, token: str | None = None) -> None:
        self.ws = Raw(server, path="/socket.io/")
        self.ws.open()
        self.next_ack = 0
        if token is not None:
            self.ws.send_text("40" + json.dumps({"token": token}))
            kind, _, data = parse_sio(self.packet())
            assert kind == "0" and set(data) == {"sid"}, data

    def packet(self) -> str:
        """The next Engine.IO message's Socket.IO packet; pings are answered."""
        while True:
            op, payload = self.ws.read()
            if op == TEXT and payload == b"2":
                self.ws.send(frame(TEXT, b"3"))
                continue
            assert op == TEXT and payload[:1] == b"4", (op, payload[:200])
            return payload[1:].decode()

    def emit(self, name: str, args: list, ack: bool, raw_json: str | None = None) -> int | None:
        aid = None
        head = "42"
        if ack:
            self.next_ack += 1
            aid = self.next_ack
            head += str(aid)
        self.ws.send(frame(TEXT, (head + (raw_json or json.dumps([name, *args]))).encode()))
        return aid

    def emit_binary(self, name: str, args: list, attachments: list[bytes], ack: bool) -> int | None:
        aid = None
        head = f"45{len(attachments)}-"
        if ack:
            self.next_ack += 1
            aid = self.next_ack
            head += str(aid)
        out = frame(TEXT, (head + json.dumps([name, *args])).encode())
        for a in attachments:
            out += frame(BINARY, a)
        self.ws.send(out)
        return aid

    def sync(self) -> list[tuple[str, int | None, object]]:
        """Sends a `chat:join` with an ack and returns every packet that came
        before its answer."""
        aid = self.emit("chat:join", [{"chatId": "hostile-sync"}], True)
        got = []
        while True:
            p = parse_sio(self.packet())
            if p[0] == "3" and p[1] == aid:
                assert p[2] == [{"chatId": "hostile-sync"}], p
                return got
            got.append(p)

    def close(self) -> None:
        self.ws.close()


# ---------------------------------------------------------------- event corpus

# Rust's char::is_whitespace (Unicode White_Space)
WHITE = " \t\n\x0b\x0c\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
        "\u2028\u2029\u202f\u205f\u3000"
TEXT_CHARS = "aZ9 !é€😀中\u0301"
EV_NON_STRINGS = [0, 1, -7, 1.5, True, False, [], ["x"], {}, {"text": "x"}]  # null is "absent" for optional fields
VALID_CHATS = ["general", "hostile-a", "hostile:b", "H.c_d-e", "z" * 64, "9"]


def rand_text(rng, n: int) -> str:
    return "".join(rng.choice(TEXT_CHARS) for _ in range(n))


def rand_bad_chat(rng) -> object:
    k = rng.randrange(4)
    if k == 0:
        return ""
    if k == 1:
        return "".join(rng.choice(NAME_CHARS + ":") for _ in range(rng.randint(65, 200)))
    if k == 2:
        base = list(rng.choice(VALID_CHATS[1:-1]))
        base[rng.randrange(len(base))] = rng.choice(BAD_CHAT_CHARS)
        return "".join(base)
    return rng.choice(EV_NON_STRINGS)


class EventCase:
    __slots__ = ("name", "args", "ack", "expect", "temp_id", "binary", "what")

    def __init__(self, what, name, args, ack, expect="invalid", temp_id=None, binary=None):
        self.what = what
        self.name = name
        self.args = args
        self.ack = ack
        self.expect = expect  # "invalid": error (+ ack); "ignored": nothing at all
        self.temp_id = temp_id  # the tempId the error must carry, if any
        self.binary = binary  # attachments, for a BINARY_EVENT

    def __repr__(self) -> str:
        text = json.dumps([self.name, *self.args])
        if len(text) > 400:
            text = text[:400] + f"...({len(text)} chars)"
        return f"EventCase({self.what}: {text} ack={self.ack} expect={self.expect} binary={bool(self.binary)})"


def expected_temp_id(payload) -> str | None:
    if not isinstance(payload, dict):
        return None
    t = payload.get("tempId")
    if isinstance(t, str) and len(t) <= 64:
        return t
    if isinstance(t, int) and not isinstance(t, bool):
        return str(t)
    return None


def gen_send(rng) -> EventCase:
    payload: dict = {"text": rand_text(rng, rng.randint(1, 50))}
    # noise the contract allows (never what makes the case invalid)
    if rng.random() < 0.7:
        payload["tempId"] = rng.choice([rand_text(rng, rng.randint(0, 64)), rng.randint(0, 10**9), None])
    if rng.random() < 0.4:
        payload["type"] = rng.choice([rand_text(rng, rng.randint(1, 32)), None])
    if rng.random() < 0.5:
        payload["chatId"] = rng.choice(VALID_CHATS + [None])
    if rng.random() < 0.3:
        payload.update(author="mallory", status="read", authorId="0" * 24, id="f" * 24)
    k = rng.randrange(12)
    if k == 0:
        what, payload["text"] = "empty text", ""
    elif k == 1:
        what, payload["text"] = "white space only", "".join(rng.choice(WHITE) for _ in range(rng.randint(1, 60)))
    elif k == 2:
        what, payload["text"] = "text over 4000", rand_text(rng, rng.choice([4001, 4002, rng.randint(4001, 9000)]))
    elif k == 3:
        what, payload["text"] = "text not a string", rng.choice(EV_NON_STRINGS + [None])
    elif k == 4:
        what = "no text"
        del payload["text"]
    elif k == 5:
        what, payload["tempId"] = "tempId over 64", rand_text(rng, rng.randint(65, 300))
    elif k == 6:
        what, payload["tempId"] = "tempId of the wrong type", rng.choice([True, False, [], {}, ["t"], {"t": 1}])
    elif k == 7:
        what, payload["type"] = "type over 32", rand_text(rng, rng.randint(33, 300))
    elif k == 8:
        what, payload["type"] = "type not a string", rng.choice([5, True, [], {}, ["text"]])
    elif k in (9, 10):
        what, payload["chatId"] = "bad chatId", rand_bad_chat(rng)
    else:
        what = "not an object"
        args = rng.choice([["just text"], [42], [None], [True], [[payload]], [], ["x", payload]])
        return EventCase(what, "chat:send", args, rng.random() < 0.6)
    return EventCase(what, "chat:send", [payload], rng.random() < 0.6, temp_id=expected_temp_id(payload))


def gen_typing(rng) -> EventCase:
    payload: dict = {"isTyping": rng.choice([True, False])}
    if rng.random() < 0.5:
        payload["chatId"] = rng.choice(VALID_CHATS + [None])
    k = rng.randrange(4)
    if k == 0:
        what = "no isTyping"
        del payload["isTyping"]
    elif k == 1:
        what, payload["isTyping"] = "isTyping not a bool", rng.choice([0, 1, "true", "false", None, [], {}, [True]])
    elif k == 2:
        what, payload["chatId"] = "bad chatId", rand_bad_chat(rng)
    else:
        return EventCase("not an object", "chat:typing", rng.choice([["typing"], [1], [None], [[payload]], []]),
                         rng.random() < 0.6)
    return EventCase(what, "chat:typing", [payload], rng.random() < 0.6)


def rand_id(rng) -> str:
    return "%024x" % rng.getrandbits(96)


def gen_read(rng) -> EventCase:
    k = rng.randrange(6)
    if k == 0:
        what, payload = "no messageIds", rng.choice([{}, {"messageId": rand_id(rng)}, {"ids": [rand_id(rng)]}])
    elif k == 1:
        what, payload = "messageIds not a list", {"messageIds": rng.choice([rand_id(rng), 5, None, {}, True])}
    elif k == 2:
        what, payload = "no ids", {"messageIds": []}
    elif k == 3:
        what, payload = "over 500 ids", {"messageIds": [rand_id(rng) for _ in range(rng.choice([501, 502, 600, 1000]))]}
    elif k == 4:
        # (upper-case hex is not in this list: ObjectId, in chatwire as in
        # the Python service's bson, reads it as the same id)
        ids = [rand_id(rng) for _ in range(rng.randint(0, 20))]
        bad = rng.choice([rand_id(rng)[:23], rand_id(rng) + "0",
                          "z" * 24, "", 5, None, [rand_id(rng)], {"id": rand_id(rng)}, " " + rand_id(rng)[1:],
                          "0x" + rand_id(rng)[2:]])
        ids.insert(rng.randint(0, len(ids)), bad)
        what, payload = "a bad id among them", {"messageIds": ids}
    else:
        return EventCase("not an object", "chat:read", rng.choice([[[rand_id(rng)]], [rand_id(rng)], [None], []]),
                         rng.random() < 0.6)
    return EventCase(what, "chat:read", [payload], rng.random() < 0.6)


def gen_room(rng) -> EventCase:
    name = rng.choice(["chat:join", "chat:leave"])
    if rng.random() < 0.75:
        return EventCase("bad chatId", name, [{"chatId": rand_bad_chat(rng)}], rng.random() < 0.6)
    return EventCase("not an object", name, rng.choice([["general"], [7], [None], [["general"]], [True], []]),
                     rng.random() < 0.6)


def gen_ignored(rng) -> EventCase:
    name = rng.choice(["chat:SEND", "chat:send ", " chat:send", "chat:sen", "Chat:send", "chat:ack", "chat:new-message",
                       "chat:delivered", "error", "connect", "disconnect", "disconnecting", "newListener", "",
                       "x" * rng.randint(100, 2000), "chat:typing\u0000", "chat:read/", "chat", "message",
                       rand_text(rng, rng.randint(1, 30))])
    if name in ("chat:send", "chat:typing", "chat:read", "chat:join", "chat:leave"):
        name = name + "!"
    return EventCase("unknown event", name, [{"text": "ignored", "tempId": "ign"}], rng.random() < 0.5, "ignored")


def gen_binary(rng) -> EventCase:
    ph = {"_placeholder": True, "num": 0}
    name, payload = rng.choice([
        ("chat:send", ph), ("chat:send", {"text": ph, "tempId": "bin"}), ("chat:typing", ph),
        ("chat:typing", {"isTyping": ph}), ("chat:read", {"messageIds": [ph]}), ("chat:read", ph),
        ("chat:join", {"chatId": ph}), ("chat:leave", {"chatId": ph}),
    ])
    temp = "bin" if isinstance(payload.get("text"), dict) else None
    return EventCase("binary attachment where a field belongs", name, [payload], rng.random() < 0.6,
                     temp_id=temp, binary=[bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))])


def event_cases(rng, n: int) -> list[EventCase]:
    cases = []
    # targeted: the contract's bounds, each with and without an ack
    for ack in (True, False):
        for p in [{"text": ""}, {"text": " \t\n\u3000 "}, {"text": "x" * 4001}, {"text": "😀" * 4001},
                  {"text": 5}, {"tempId": "t"}, {"text": "ok", "tempId": "t" * 65}, {"text": "ok", "type": "y" * 33},
                  {"text": "ok", "chatId": ""}, {"text": "ok", "chatId": "c" * 65}, {"text": "ok", "chatId": "a b"},
                  {"text": "ok", "chatId": "café"}, {"text": "ok", "chatId": "a/b"}]:
            cases.append(EventCase("bound", "chat:send", [p], ack, temp_id=expected_temp_id(p)))
        for p in ["just text", 42, [{"text": "hi"}], None]:
            cases.append(EventCase("bound: not an object", "chat:send", [p], ack))
        for ids in [[], ["0" * 24] * 501, ["nothex"], ["0" * 23], "0" * 24, None]:
            cases.append(EventCase("bound", "chat:read", [{"messageIds": ids}], ack))
        for p in [{"isTyping": "yes"}, {"chatId": "general"}, {"isTyping": True, "chatId": "x" * 65}]:
            cases.append(EventCase("bound", "chat:typing", [p], ack))
        for name in ("chat:join", "chat:leave"):
            for cid in ["", "x" * 65, "bad chat", 5]:
                cases.append(EventCase("bound", name, [{"chatId": cid}], ack))
    gens = [gen_send] * 5 + [gen_typing] * 2 + [gen_read] * 2 + [gen_room] * 2 + [gen_ignored, gen_binary]
    while len(cases) < n:
        cases.append(rng.choice(gens)(rng))
    return cases


def check_error_payload(err, case: EventCase, ctx: str) -> None:
    assert isinstance(err, dict), f"{ctx}: error payload {err!r}"
    assert err.get("code") == "invalid", f"{ctx}: error {err!r}"
    assert isinstance(err.get("message"), str) and err["message"], f"{ctx}: error {err!r}"
    assert set(err) <= {"message", "code", "tempId"}, f"{ctx}: error {err!r}"
    if case.name == "chat:send" and case.temp_id is not None:
        assert err.get("tempId") == case.temp_id, f"{ctx}: error {err!r}, tempId {case.temp_id!r}"
    elif "tempId" in err:
        pytest.fail(f"{ctx}: error names a tempId that was not a valid one: {err!r}")


def check_ack_payload(args, ctx: str) -> None:
    assert isinstance(args, list) and len(args) == 1, f"{ctx}: ack {args!r}"
    a = args[0]
    assert isinstance(a, dict) and set(a) == {"error"}, f"{ctx}: ack {a!r}"
    assert isinstance(a["error"], dict) and set(a["error"]) == {"message", "code"}, f"{ctx}: ack {a!r}"
    assert a["error"]["code"] == "invalid" and isinstance(a["error"]["message"], str), f"{ctx}: ack {a!r}"


def run_event_batch(sender: RawSio, watcher: RawSio, cases: list[EventCase], offset: int) -> None:
    """Sends the batch pipelined, then checks every answer, in order."""
    sent: list[tuple[int, EventCase, int | None]] = []
    for j, case in enumerate(cases):
        if case.binary is not None:
            aid = sender.emit_binary(case.name, case.args, case.binary, case.ack)
        else:
            aid = sender.emit(case.name, case.args, case.ack)
        sent.append((offset + j, case, aid))
    got = sender.sync()
    k = 0
    for i, case, aid in sent:
        ctx = where("events", i, case)
        if case.expect == "ignored":
            continue
        assert k < len(got), f"{ctx}: no error event (answers: {got[-3:]!r})"
        kind, _, data = got[k]
        assert kind == "2" and isinstance(data, list) and data[0] == "error", f"{ctx}: expected error, got {got[k]!r}"
        assert len(data) == 2, f"{ctx}: {data!r}"
        check_error_payload(data[1], case, ctx)
        k += 1
        if aid is not None:
            assert k < len(got), f"{ctx}: no ack"
            kind, ack_id, data = got[k]
            assert kind == "3" and ack_id == aid, f"{ctx}: expected ack {aid}, got {got[k]!r}"
            check_ack_payload(data, ctx)
            k += 1
    assert k == len(got), (f"[HOSTILE_SEED={SEED}] events {offset}..{offset + len(cases)}: "
                           f"answers nobody asked for: {got[k:k + 5]!r}")
    heard = watcher.sync()
    assert heard == [], f"[HOSTILE_SEED={SEED}] events {offset}..{offset + len(cases)}: a bystander heard {heard[:5]!r}"


def test_event_corpus_websocket(hostile):
    server = hostile.server
    rng = rng_for("events")
    ana, bob = register(server), register(server)
    watcher = RawSio(server, bob.token)
    for cid in VALID_CHATS:
        watcher.emit("chat:join", [{"chatId": cid}], False)
    assert watcher.sync() == []
    sender = RawSio(server, ana.token)
    before = {cid: history(server, ana.token, cid) for cid in VALID_CHATS}
    cases = event_cases(rng, N_EVENTS_WS)
    started = time.monotonic()
    try:
        for start in range(0, len(cases), BATCH):
            for sub in range(start, min(start + BATCH, len(cases)), 100):
                run_event_batch(sender, watcher, cases[sub:min(sub + 100, start + BATCH, len(cases))], sub)
            check_health(hostile, f"event cases {start}..{start + BATCH}")
        # the same connections are still open and serve
        ack_id = sender.emit("chat:send", [{"text": "after the corpus", "chatId": "hostile-after"}], True)
        got = [parse_sio(sender.packet()) for _ in range(2)]
        ack = next(d for kind, a, d in got if kind == "3" and a == ack_id)[0]
        assert HEX24.fullmatch(ack["id"]), ack
    finally:
        sender.close()
        watcher.close()
    hostile.count("events (websocket)", len(cases))
    for cid in VALID_CHATS:
        assert history(server, ana.token, cid) == before[cid], f"[HOSTILE_SEED={SEED}] chat {cid} changed"
    print(f"events over WebSocket: {len(cases)} cases in {time.monotonic() - started:.1f}s")


def test_event_corpus_polling(hostile):
    """Some of the same cases through python-socketio over long-polling."""
    server = hostile.server
    rng = rng_for("events-polling")
    user = register(server)
    c = ChatClient(server, "polling").connect(user.token)
    cases = [case for case in event_cases(rng, N_EVENTS_POLLING + 200)[200:] if case.binary is None]
    cases = cases[:N_EVENTS_POLLING]
    before = {cid: history(server, user.token, cid) for cid in VALID_CHATS}
    answered: list = []
    ran = 0
    try:
        for i, case in enumerate(cases):
            ctx = where("events-polling", i, case)
            if len(case.args) != 1:
                continue  # python-socketio sends one argument here; the raw corpus has the others
            ran += 1
            if case.expect == "ignored":
                c.sio.emit(case.name, case.args[0],
                           callback=(lambda *a, ctx=ctx: answered.append((ctx, a))) if case.ack else None)
            elif case.ack:
                check_ack_payload([c.call(case.name, case.args[0])], ctx)
            else:
                c.sio.emit(case.name, case.args[0])
            if case.expect == "invalid":
                check_error_payload(c.wait("error"), case, ctx)
        c.none("error", 0.2)
        c.none("chat:ack", 0.0)
        assert answered == [], f"[HOSTILE_SEED={SEED}] ignored events were answered: {answered[:3]!r}"
        assert c.sio.connected
    finally:
        c.close()
    hostile.count("events (polling)", ran)
    for cid in VALID_CHATS:
        assert history(server, user.token, cid) == before[cid], f"[HOSTILE_SEED={SEED}] chat {cid} changed"
    check_health(hostile, "event cases over polling")


# ---------------------------------------------------------------- raw Engine.IO / Socket.IO corpus


def assert_eio_error(status, headers, body, codes, ctx: str) -> None:
    """400 with Engine.IO's `{"code": N, "message": "..."}`."""
    codes = {codes} if isinstance(codes, int) else set(codes)
    assert status == 400, f"{ctx}: expected 400, got {status} {body[:300]!r}"
    try:
        doc = json.loads(body)
    except ValueError:
        pytest.fail(f"{ctx}: the error body is not JSON: {body[:300]!r}")
    assert isinstance(doc, dict) and set(doc) == {"code", "message"}, f"{ctx}: {doc!r}"
    assert doc["code"] in codes and doc["message"] == EIO_ERRORS[doc["code"]], f"{ctx}: {doc!r} not in {codes}"


def eio_query_case(rng) -> tuple[str, str, set[int]]:
    """(method, query, the Engine.IO error codes it may get): a request the
    server must refuse with 400, never a session."""
    eio = rng.choice([None, "3", "5", "2", "abc", "", "04", "4.0", "%204", "4%20", "%34", "40", "-4", "4", "4", "4"])
    transport = rng.choice([None, "", "xhr", "POLLING", "Polling", "websocket%20", "flashsocket", "jsonp",
                            "polling%00", "polling", "polling", "websocket"])
    sid = rng.choice([None, None, uuid.UUID(int=rng.getrandbits(128)).hex[:20], "x" * rng.randint(1, 300),
                      "%00", "AAAAAAAAAAAAAAAAAAAA", "../", "a%2Fb"])
    method = rng.choice(["GET", "GET", "POST", "PUT", "DELETE", "PATCH"])
    codes: set[int] = set()
    if transport not in ("polling", "websocket"):
        codes.add(0)
    if eio != "4":
        # missing or not a number: "bad request" or "unsupported version" (the
        # official server says the latter); another number: unsupported
        codes |= {5} if (eio or "").isdigit() else {3, 5}
    if not codes:
        if transport == "websocket":
            codes.add(3)  # a WebSocket request without the upgrade
        elif sid is not None:
            codes.add(1)
        elif method != "GET":
            codes.add(2)
        else:
            sid = "unknown-" + "%016x" % rng.getrandbits(64)  # never open a session here
            codes.add(1)
    params = [("EIO", eio), ("transport", transport), ("sid", sid)]
    rng.shuffle(params)
    params += [("t", "x%d" % rng.randrange(10**6))] if rng.random() < 0.5 else []
    return method, "&".join(f"{k}={v}" for k, v in params if v is not None), codes


POLL = "/socket.io/?EIO=4&transport=polling"
TEXT_CT = {"Content-Type": "text/plain;charset=UTF-8"}


def bad_eio_payload(rng) -> bytes:
    """A polling body that is not an Engine.IO payload (every variant is
    invalid by construction): 400, the session closed."""
    k = rng.randrange(8)
    if k == 0:
        return rng.choice([b"0", b"7", b"8x", b"9", b"a", b"x4hello", b"{}", b"\x00", b"-1", b" 4"])
    if k == 1:
        return rng.choice([b"", b"\x1e", b"4a\x1e\x1e4b", b"4a\x1e", b"\x1e4a"])  # an empty record
    if k == 2:
        return b"b" + rng.choice([b"!!!!", b"A", b"AQ", b"AQI", b"AQ=", b"====", b"AQID*A==", b"\xff"])
    if k == 3:
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"])
        return b"4" + bad + b"hello"
    if k == 4:  # good records, then a bad one: the whole payload is refused
        good = b"\x1e".join(rng.choice([b"2", b"3", b"6", b"4x"]) for _ in range(rng.randint(1, 5)))
        return good + b"\x1e" + rng.choice([b"7", b"", b"bA", b"z"])
    if k == 5:
        return "é4".encode()
    if k == 6:
        return b"\x1e".join(b"7" for _ in range(rng.randint(2, 50)))
    return bytes([rng.randrange(0x37, 0x3a)]) + bytes(rng.randrange(0x20, 0x7f) for _ in range(rng.randint(0, 40)))


def bad_sio_packet(rng) -> tuple[str, list[bytes]]:
    """A Socket.IO packet (text, then binary frames) that breaks the protocol:
    the session is closed."""
    ph = '{"_placeholder":true,"num":%d}'
    k = rng.randrange(12)
    if k == 0:
        return rng.choice(["", "7", "8", "9", "a", " ", "x2[]", "-1", "\u00e9"]), []
    if k == 1:
        return "4" + rng.choice(["", "{}", '{"message":"x"}']), []  # CONNECT_ERROR comes from servers only
    if k == 2:
        return "2" + rng.choice(["", "{}", "[]", "[1]", '"x"', "[", "null", '["a",', "[null]", "[{}]", "[[\"a\"]]",
                                 '["a"]]', '["a"', "true"]), []
    if k == 3:
        return "3" + rng.choice(["[]", "[1]", '["x"]']), []  # an ack without an id
    if k == 4:
        return "3" + str(rng.randint(0, 1000)) + rng.choice(["", "{}", '"x"', "[", "5"]), []
    if k == 5:
        # (digits right after the type are an ack id, so "05" is a CONNECT)
        return "0" + rng.choice(["[]", '"x"', "{", "null", "[{}]", "{}}", "true"]), []
    if k == 6:
        return rng.choice(["5", "6"]) + rng.choice(["-", "a-", "-1", "1234-", "65-", "99-", "1", "1["]) + '["x"]', []
    if k == 7:  # a placeholder past the announced attachments
        n = rng.randint(1, 3)
        return f"5{n}-" + '["chat:send",' + ph % rng.randint(n, n + 5) + "]", [b"x"] * n
    if k == 8:  # an ack id that does not fit
        return "2" + str(rng.randint(10**20, 10**30)) + '["chat:send",{"text":"x"}]', []
    if k == 9:  # text while attachments are awaited
        return "51-" + '["chat:send",' + ph % 0 + "]", [None]  # None: send a text packet instead
    if k == 10:  # a lone surrogate: not JSON serde or any strict parser reads
        return '2["chat:send",{"text":"\\ud800"}]', []
    return "2" + '["chat:send",' + rng.choice(["NaN", "Infinity", "{'text':'x'}", '{"text":"x",}', "{text:1}"]) + "]", []


def ws_upgrade(server, query: str) -> tuple[bytes, bytes, socket.socket]:
    """Sends a WebSocket upgrade to /socket.io/?query; returns (head, body so far, socket)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /socket.io/?{query} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest, sock


def read_http_body(sock: socket.socket, head: bytes, rest: bytes) -> bytes:
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            break
        rest += data
    return rest[:length]


class Bystander:
    """A connected chat client on each transport, checked after the corpus."""

    def __init__(self, server) -> None:
        user = register(server)
        self.ws = RawSio(server, user.token)
        self.poll = ChatClient(server, "polling").connect(user.token)

    def check(self, ctx: str) -> None:
        assert self.ws.sync() == [], ctx
        assert self.poll.call("chat:join", {"chatId": "hostile-sync"}) == {"chatId": "hostile-sync"}, ctx
        assert self.poll.sio.connected, ctx

    def close(self) -> None:
        self.ws.close()
        self.poll.close()


def test_engine_io_corpus(hostile):
    server = hostile.server
    rng = rng_for("engine")
    user = register(server)
    token = user.token
    bystander = Bystander(server)
    http_ = Http(server)
    n = 0
    started = time.monotonic()

    def done(what: str) -> None:
        nonlocal n
        n += 1
        if n % BATCH == 0:
            bystander.check(f"[HOSTILE_SEED={SEED}] bystander after engine case #{n} ({what})")
            check_health(hostile, f"Engine.IO cases ..{n}")

    try:
        # 1. Bad query strings and methods on the polling endpoint: 400 {code, message}.
        for i in range(520):
            method, query, codes = eio_query_case(rng)
            ctx = where("engine/query", i, (method, query, sorted(codes)))
            status, headers, body = http_.request(method, "/socket.io/?" + query, TEXT_CT,
                                                  b"4hello" if method != "GET" else b"")
            assert_eio_error(status, headers, body, codes, ctx)
            done("query")
        # 2. The same as WebSocket upgrades: refused with 400 {code, message}
        #    before any upgrade, or (an unknown sid) closed without a session.
        for i in range(120):
            _, query, codes = eio_query_case(rng)
            good_ws = not codes & {0, 5} and "transport=websocket&" in query + "&" and "sid=" not in query
            if good_ws or rng.random() < 0.3:
                # (a good WebSocket handshake opens a session: give it a sid nobody has)
                query, codes = f"EIO=4&transport=websocket&sid={'%020x' % rng.getrandbits(80)}", None
            ctx = where("engine/ws-query", i, (query, codes))
            head, rest, sock = ws_upgrade(server, query)
            try:
                status = int(head.split(b" ")[1])
                if codes is None or not codes & {0, 5}:
                    # EIO and transport are good (or name polling): refused, or
                    # accepted and closed at once, never a session
                    assert status in (101, 400), f"{ctx}: {head!r}"
                    if status == 101:
                        ws = Raw.__new__(Raw)
                        ws.sock, ws.buf = sock, rest
                        op, payload = ws.read()
                        assert op == CLOSE, f"{ctx}: the server spoke before closing: {payload[:100]!r}"
                        ws.expect_eof()
                    else:
                        body = read_http_body(sock, head, rest)
                        assert_eio_error(400, {}, body, set(EIO_ERRORS), ctx)
                else:
                    body = read_http_body(sock, head, rest)
                    assert_eio_error(status, {}, body, codes, ctx)
            finally:
                sock.close()
            done("ws query")
        # 3. Polling sessions sent a body that is not an Engine.IO payload:
        #    400, and the session is gone (413 for one over maxPayload).
        for i in range(300):
            status, _, body = http_.request("GET", POLL, {}, b"")
            assert status == 200 and body.startswith(b"0"), body
            sid = json.loads(body[1:])["sid"]
            url = f"{POLL}&sid={sid}"
            big = i % 60 == 0
            payload = b"4" + b"x" * MAX_PAYLOAD if big else bad_eio_payload(rng)
            ctx = where("engine/polling-payload", i, payload[:100])
            status, headers, body = http_.request("POST", url, TEXT_CT, payload)
            if big:
                assert status == 413 and json.loads(body) == {"code": 3, "message": "Payload too large"}, \
                    f"{ctx}: {status} {body!r}"
            else:
                assert_eio_error(status, headers, body, 3, ctx)
            status, headers, body = http_.request("GET", url, {}, b"")
            assert_eio_error(status, headers, body, 1, ctx + " (the session must be closed)")
            done("polling payload")
        # 4. Polling Socket.IO sessions sent a packet that breaks Socket.IO: the
        #    POST is taken ("ok"), the session closed.
        for i in range(160):
            status, _, body = http_.request("GET", POLL, {}, b"")
            sid = json.loads(body[1:])["sid"]
            url = f"{POLL}&sid={sid}"
            if i % 2:
                assert http_.request("POST", url, TEXT_CT, ("40" + json.dumps({"token": token})).encode())[0] == 200
                status, _, body = http_.request("GET", url, {}, b"")
                assert status == 200 and body.startswith(b"40{"), body
            text, attachments = bad_sio_packet(rng)
            records = ["4" + text] + ["b" + base64.b64encode(a).decode() if a is not None else '42["x"]'
                                      for a in attachments]
            if text == "" and rng.random() < 0.5:
                records = ["5"]  # an upgrade packet on a session that is not upgrading
            ctx = where("engine/polling-sio", i, records)
            status, _, body = http_.request("POST", url, TEXT_CT, "\x1e".join(records).encode())
            assert (status, body) == (200, b"ok"), f"{ctx}: {status} {body!r}"
            status, headers, body = http_.request("GET", url, {}, b"")
            assert_eio_error(status, headers, body, 1, ctx + " (the session must be closed)")
            done("polling sio")
        # 5. WebSocket sessions sent an Engine.IO or Socket.IO violation: closed (1000).
        for i in range(280):
            ws = RawSio(server, token if i % 2 else None)
            try:
                if i % 5 == 0:
                    what = rng.choice(["", "7", "0", "9x", "a", "5", "\u00e9"])
                    ctx = where("engine/ws-eio", i, what)
                    ws.ws.send(frame(TEXT, what.encode()))
                elif i % 5 == 1:
                    ctx = where("engine/ws-binary", i, "binary with no binary packet announced")
                    ws.ws.send(frame(BINARY, os.urandom(rng.randint(0, 100))))
                else:
                    text, attachments = bad_sio_packet(rng)
                    ctx = where("engine/ws-sio", i, (text, attachments))
                    out = frame(TEXT, ("4" + text).encode())
                    for a in attachments:
                        out += frame(BINARY, a) if a is not None else frame(TEXT, b'42["x"]')
                    ws.ws.send(out)
                op, payload = ws.ws.read_data()
                assert op == CLOSE and struct.unpack(">H", payload[:2])[0] == 1000, \
                    f"{ctx}: expected the session closed, got {op} {payload[:200]!r}"
                ws.ws.expect_eof()
            finally:
                ws.close()
            done("ws violation")
        # 6. Namespaces that do not exist, events to namespaces not joined, and
        #    CONNECTs with bad tokens, on one session: refused, the session kept.
        ws = RawSio(server)
        tokens = Tokens(user.id, user.username)
        try:
            for i in range(160):
                k = i % 4
                if k == 0:
                    nsp = rng.choice(["/admin", "/chat", "/socket.io", "/x", "/" + rand_name(rng), "/général",
                                      "//", "/a/b", "/" + "n" * 200])
                    auth = rng.choice(["", json.dumps({"token": token})])
                    ctx = where("engine/namespace", i, nsp)
                    ws.ws.send_text(f"40{nsp},{auth}")
                    assert ws.packet() == f'4{nsp},{{"message":"Invalid namespace"}}', ctx
                elif k == 1:
                    nsp = rng.choice(["/admin", "/x", "/chat"])
                    ctx = where("engine/unjoined-namespace", i, nsp)
                    ws.ws.send_text(f'42{nsp},["chat:send",{{"text":"nobody hears this"}}]')
                    ws.ws.send_text(f'42{nsp},7["chat:send",{{"text":"nor this"}}]')
                else:
                    what, header = tokens.bad(rng)
                    bad = header.partition(" ")[2] if header.lower().startswith("bearer ") else header
                    auth = rng.choice([{"token": bad}, {"token": bad}, {}, {"token": None}, {"token": 5},
                                       {"jwt": token}, {"token": [token]}])
                    expired = what == "expired" and auth.get("token") == bad
                    ctx = where("engine/connect-auth", i, (what, auth))
                    ws.ws.send_text("40" + json.dumps(auth))
                    want = {"message": "Token expired" if expired else "Unauthorized"}
                    kind, _, data = parse_sio(ws.packet())
                    assert (kind, data) == ("4", want), f"{ctx}: {kind} {data!r}"
                done("namespace/auth")
            # the session still joins `/` with a good token and serves
            ws.ws.send_text("40" + json.dumps({"token": token}))
            kind, _, data = parse_sio(ws.packet())
            assert kind == "0" and set(data) == {"sid"}, data
            assert ws.sync() == []
        finally:
            ws.close()
        bystander.check(f"[HOSTILE_SEED={SEED}] bystander after the Engine.IO corpus")
    finally:
        http_.close()
        bystander.close()
    hostile.count("engine.io/socket.io", n)
    check_health(hostile, "the Engine.IO corpus")
    assert n >= N_ENGINE
    print(f"Engine.IO/Socket.IO: {n} cases in {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------- WebSocket frame corpus

VALID_CLOSE = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CLOSE = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\xaf",
            b"\xe0\x80\xaf", b"\xf8\x88\x80\x80\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xbf", b"\xf0\x9f\x98"]


def frame_case(rng) -> tuple[str, bytes, tuple[int, ...]]:
    """(what, bytes, the close codes RFC 6455 gives them)."""
    k = rng.randrange(14)
    data = rng.choice([b"4hello", b"", b"40", os.urandom(rng.randint(0, 200))])
    if k == 0:
        rsv = rng.randint(1, 7)
        op = rng.choice([TEXT, BINARY, CONT, PING, PONG, CLOSE])
        return f"RSV {rsv:03b} on opcode {op}", frame(op, data[:100], rsv=rsv), (1002,)
    if k == 1:
        op = rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
        return f"reserved opcode {op:#x}", frame(op, data[:100], fin=rng.random() < 0.8), (1002,)
    if k == 2:
        op = rng.choice([TEXT, BINARY, PING, PONG, CLOSE])
        payload = b"4x" if op == TEXT else (struct.pack(">H", 1000) if op == CLOSE else data[:100])
        return f"unmasked opcode {op}", frame(op, payload, masked=False), (1002,)
    if k == 3:
        return "continuation of nothing", frame(CONT, data, fin=rng.random() < 0.5), (1002,)
    if k == 4:
        op = rng.choice([PING, PONG, CLOSE])
        return f"fragmented control {op}", frame(op, b"" if op == CLOSE else data[:50], fin=False), (1002,)
    if k == 5:
        op = rng.choice([PING, PONG, CLOSE])
        return f"control {op} over 125 bytes", frame(op, struct.pack(">H", 1000) + b"x" * rng.randint(124, 2000)), (1002,)
    if k == 6:
        first = frame(rng.choice([TEXT, BINARY]), b"4a", fin=False)
        return "a new message inside a fragmented one", first + frame(rng.choice([TEXT, BINARY]), b"4b",
                                                                       fin=rng.random() < 0.5), (1002,)
    if k == 7:
        bad = b"4" + rand_text(rng, rng.randint(0, 20)).encode() + rng.choice(BAD_UTF8) + \
            rand_text(rng, rng.randint(0, 20)).encode()
        if rng.random() < 0.5:
            return "text not UTF-8", frame(TEXT, bad), (1007,)
        cut = rng.randint(1, len(bad) - 1)
        return "text not UTF-8, in fragments", frame(TEXT, bad[:cut], fin=False) + frame(CONT, bad[cut:]), (1007,)
    if k == 8:
        return "close with one byte", frame(CLOSE, bytes([rng.randrange(256)])), (1002,)
    if k == 9:
        code = rng.choice(INVALID_CLOSE + [rng.randint(5000, 65535), rng.randint(1016, 2999)])
        return f"close code {code}", frame(CLOSE, struct.pack(">H", code) + data[:20]), (1002,)
    if k == 10:
        code = rng.choice(VALID_CLOSE)
        return f"close {code}, reason not UTF-8", frame(CLOSE, struct.pack(">H", code) + rng.choice(BAD_UTF8)), (1007,)
    if k == 11:
        n = rng.choice([MAX_PAYLOAD + 1, MAX_PAYLOAD + rng.randint(2, 10**6), rng.randint(MAX_PAYLOAD + 1, 2**32),
                        rng.randint(2**32, 2**63 - 1)])
        # the header alone: refused from it, before any payload
        head = bytes([0x80 | rng.choice([TEXT, BINARY]), 0x80 | 127]) + struct.pack(">Q", n) + os.urandom(4)
        return f"a frame of {n} bytes announced", head, (1009,)
    if k == 12:
        n = rng.randint(2**63, 2**64 - 1)
        head = bytes([0x80 | TEXT, 0x80 | 127]) + struct.pack(">Q", n) + os.urandom(4)
        # the most significant bit must be 0 (1002); it is also far too big (1009)
        return "a 64-bit length with its top bit set", head, (1002, 1009)
    code = rng.choice(VALID_CLOSE)
    return f"client close {code} (answered with itself)", frame(CLOSE, struct.pack(">H", code) + b"bye"), (code,)


def test_websocket_frame_corpus(hostile):
    server = hostile.server
    rng = rng_for("frames")
    token = register(server).token
    bystander = Bystander(server)
    cases = [frame_case(rng) for _ in range(N_FRAMES - 12)]
    # a few of the expensive ones: fragments over the limit, endless fragments
    for i in range(6):
        piece = MAX_PAYLOAD // 3 + 1
        cases.append(("fragments over the limit",
                      frame(TEXT, b"4" + b"x" * piece, fin=False, mask=b"\0\0\0\0")
                      + frame(CONT, b"x" * piece, fin=False, mask=b"\0\0\0\0")
                      + frame(CONT, b"x" * piece, mask=b"\0\0\0\0"), (1009,)))
        cases.append(("endless empty fragments",
                      frame(TEXT, b"4", fin=False) + frame(CONT, b"", fin=False) * (20_000 + i), (1008,)))
    started = time.monotonic()
    for i, (what, data, codes) in enumerate(cases):
        ctx = where("frames", i, (what, data[:40], codes))
        ws = RawSio(server, token if i % 4 == 0 else None)
        try:
            # half of them arrive in pieces, split anywhere
            if len(data) > 2 and len(data) < 10_000 and rng.random() < 0.5:
                cut = rng.randint(1, len(data) - 1)
                ws.ws.send(data[:cut])
                ws.ws.send(data[cut:])
            else:
                ws.ws.send(data)
            try:
                ws.ws.expect_close(codes)
            except AssertionError as e:
                raise AssertionError(f"{ctx}: {e}") from e
        finally:
            ws.close()
        if (i + 1) % BATCH == 0:
            bystander.check(f"[HOSTILE_SEED={SEED}] bystander after frame case #{i}")
            check_health(hostile, f"frame cases ..{i + 1}")
    bystander.check(f"[HOSTILE_SEED={SEED}] bystander after the frame corpus")
    bystander.close()
    hostile.count("websocket frames", len(cases))
    check_health(hostile, "the frame corpus")
    print(f"WebSocket frames: {len(cases)} cases in {time.monotonic() - started:.1f}s")


def test_corpus_size_and_server_health(hostile):
    """Runs last: the whole corpus ran (when the whole file did), and the
    server is still up, bounded, and serving."""
    check_health(hostile, "the whole corpus")
    total = sum(hostile.counts.values())
    print(f"HOSTILE_SEED={SEED}: {total} cases {hostile.counts}")
    if len(hostile.counts) == 5:
        assert total >= 10_000, hostile.counts
