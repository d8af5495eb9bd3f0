"""chatwire's REST API over real HTTP (docs/API.md, "REST" and "Tokens")."""

from __future__ import annotations

import json
import threading
import time

import jwt
import pytest
import requests

from chatlib import (
    HEX24,
    PASSWORD,
    TIMEOUT,
    ChatClient,
    assert_detail,
    assert_message,
    get_messages,
    mint,
    none_token,
    order_key,
    register,
    tampered,
    unique,
)
from conftest import JWT_SECRET


@pytest.fixture(scope="module")
def alice(chat_server):
    return register(chat_server)


def post(server, path: str, body) -> requests.Response:
    return requests.post(f"{server.url}{path}", json=body, timeout=TIMEOUT)


# ---------------------------------------------------------------- service


def test_root(chat_server):
    r = requests.get(chat_server.url + "/", timeout=TIMEOUT)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"status", "service", "version"}, body
    assert body["status"] == "ok"
    assert isinstance(body["service"], str) and body["service"]
    assert isinstance(body["version"], str) and body["version"]


def test_ready(chat_server):
    r = requests.get(chat_server.url + "/ready", timeout=TIMEOUT)
    assert r.status_code == 200, r.text


def test_unknown_route_404(chat_server):
    for path in ("/nope", "/messages/x/y", "/register/extra"):
        assert_detail(requests.get(chat_server.url + path, timeout=TIMEOUT), 404)


# ---------------------------------------------------------------- register / login


def test_register_shape_and_token_claims(chat_server):
    name = unique("Reg")
    before = int(time.time() * 1000)
    r = post(chat_server, "/register", {"username": name, "password": PASSWORD})
    after = int(time.time() * 1000)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "user"}, body
    assert body["token_type"] == "bearer"
    user = body["user"]
    assert set(user) == {"id", "username", "createdAt"}, user
    assert HEX24.fullmatch(user["id"]), user
    assert user["username"] == name
    assert isinstance(user["createdAt"], int) and before - 1000 <= user["createdAt"] <= after + 1000
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert set(claims) >= {"sub", "username", "iat", "exp"}, claims
    assert claims["sub"] == user["id"] and claims["username"] == name
    assert claims["exp"] - claims["iat"] == 43200 * 60
    assert abs(claims["iat"] - time.time()) < 60
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_register_token_works(chat_server):
    user = register(chat_server)
    assert isinstance(user.messages(), list)


def test_duplicate_username_any_case_409(chat_server):
    name = unique("Dup")
    register(chat_server, name)
    for other in (name, name.upper(), name.lower(), name.swapcase()):
        assert_detail(post(chat_server, "/register", {"username": other, "password": PASSWORD}), 409)


@pytest.mark.parametrize(
    "username",
    ["ab", "a" * 33, "has space", "bad!", "semi;colon", "ünïcode", "emoji😀x", "", "tab\tx", "slash/x"],
)
def test_username_refused_422(chat_server, username):
    assert_detail(post(chat_server, "/register", {"username": username, "password": PASSWORD}), 422)


def test_username_edges_accepted(chat_server):
    tag = unique("")[1:]
    for name in ("Z" + tag[:2], ("x.-_Z9" + tag + "q" * 32)[:32]):
        r = post(chat_server, "/register", {"username": name, "password": PASSWORD})
        assert r.status_code == 201, (name, r.text)
        assert r.json()["user"]["username"] == name


@pytest.mark.parametrize(
    "password",
    ["", "12345", "x" * 73, "é" * 37, "€" * 25],  # 0, 5, 73, 74 and 75 bytes
)
def test_password_refused_422(chat_server, password):
    assert_detail(post(chat_server, "/register", {"username": unique(), "password": password}), 422)


@pytest.mark.parametrize("password", ["123456", "x" * 72, "é" * 36, "€" * 24, "x" + "😀" * 17 + "abc"])
def test_password_accepted_and_login(chat_server, password):
    assert len(password.encode()) in (6, 72)
    name = unique()
    register(chat_server, name, password)
    r = post(chat_server, "/login", {"username": name, "password": password})
    assert r.status_code == 200, r.text
    if len(password.encode()) == 72:
        # never silently cut: the 71-byte prefix is another password
        cut = password.encode()[:71].decode(errors="ignore")
        assert_detail(post(chat_server, "/login", {"username": name, "password": cut}), 401)


@pytest.mark.parametrize(
    "body",
    [{}, {"username": "abcdef"}, {"password": PASSWORD}, {"username": 123, "password": PASSWORD},
     {"username": "abcdef", "password": None}, [], "text", 5],
)
def test_register_and_login_bad_fields_422(chat_server, body):
    assert_detail(post(chat_server, "/register", body), 422)
    assert_detail(post(chat_server, "/login", body), 422)


def test_login_shape(chat_server):
    user = register(chat_server)
    r = post(chat_server, "/login", {"username": user.username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "user"}, body
    assert body["token_type"] == "bearer"
    assert body["user"]["id"] == user.id and body["user"]["username"] == user.username
    assert body["user"]["createdAt"] == user.user["createdAt"]
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == user.id and claims["username"] == user.username
    assert get_messages(chat_server, body["access_token"]).status_code == 200


def test_login_wrong_password_and_unknown_user_same_401(chat_server):
    user = register(chat_server)
    wrong = assert_detail(post(chat_server, "/login", {"username": user.username, "password": "nope-nope"}), 401)
    unknown = assert_detail(post(chat_server, "/login", {"username": unique(), "password": PASSWORD}), 401)
    assert wrong == unknown


# ---------------------------------------------------------------- body errors


@pytest.mark.parametrize("path", ["/register", "/login"])
def test_malformed_json_400(chat_server, path):
    for raw in (b'{"username": "abc", ', b"{not json}", b'{"a":1}}'):
        r = requests.post(chat_server.url + path, data=raw, headers={"Content-Type": "application/json"},
                          timeout=TIMEOUT)
        assert_detail(r, 400)


@pytest.mark.parametrize("path", ["/register", "/login"])
def test_not_json_415(chat_server, path):
    body = json.dumps({"username": unique(), "password": PASSWORD})
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        r = requests.post(chat_server.url + path, data=body, headers={"Content-Type": ctype}, timeout=TIMEOUT)
        assert_detail(r, 415)


def _json_body_of_size(size: int) -> bytes:
    head = b'{"username": "abcdef", "password": "secret-pw", "pad": "'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("path", ["/register", "/login"])
def test_body_over_limit_413(chat_server, path):
    body = _json_body_of_size(1_000_001)
    assert len(body) == 1_000_001
    r = requests.post(chat_server.url + path, data=body, headers={"Content-Type": "application/json"},
                      timeout=TIMEOUT)
    assert_detail(r, 413)
    # exactly the limit is not "too large": it is read, then judged on its fields
    big_name = b'{"username": "' + b"a" * (1_000_000 - 41) + b'", "password": "secret-pw"}'
    assert len(big_name) == 1_000_000
    r = requests.post(chat_server.url + path, data=big_name, headers={"Content-Type": "application/json"},
                      timeout=TIMEOUT)
    assert r.status_code in (401, 422), (r.status_code, r.text[:200])
    assert_detail(r, r.status_code)


# ---------------------------------------------------------------- /messages auth


def test_messages_without_token_401(chat_server):
    assert_detail(get_messages(chat_server, None), 401)
    for header in ("Bearer", "Bearer ", "Basic abc", "garbage", "Token x.y.z"):
        r = requests.get(chat_server.url + "/messages", headers={"Authorization": header}, timeout=TIMEOUT)
        assert_detail(r, 401)


def test_messages_bad_tokens_401(chat_server, alice):
    bad = {
        "garbage": "not.a.jwt",
        "expired": mint(alice.id, alice.username, exp_in=-10),
        "alg none": none_token(alice.id, alice.username),
        "tampered": tampered(alice.token),
        "wrong secret": mint(alice.id, alice.username, secret="another-secret-of-at-least-32-bytes!!"),
        "other alg HS512": mint(alice.id, alice.username, alg="HS512"),
        "other alg HS384": mint(alice.id, alice.username, alg="HS384"),
        # RFC 7519 §4.1.5: not to be accepted before its nbf
        "nbf in an hour": mint(alice.id, alice.username, nbf=int(time.time()) + 3600),
        # RFC 7515 §4.1.11: an extension the server does not understand
        "crit header": jwt.encode(
            {"sub": alice.id, "username": alice.username, "exp": int(time.time()) + 3600},
            JWT_SECRET, algorithm="HS256", headers={"crit": ["exp"]},
        ),
    }
    for name, token in bad.items():
        r = get_messages(chat_server, token)
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert_detail(r, 401)


def test_messages_minted_token_trusted_as_is(chat_server):
    # no store lookup per request: a well-signed token is enough
    token = mint("0123456789abcdef01234567", "ghost_user")
    r = get_messages(chat_server, token)
    assert r.status_code == 200, r.text
    assert isinstance(r.json(), list)


# ---------------------------------------------------------------- sending helpers


def fill_chat(server, chat_id: str, per_user: int, users: int) -> list[dict]:
    """`users` users send `per_user` messages each to `chat_id`, all at once.

    Returns the acks. per_user must stay within the burst (40)."""
    assert per_user <= 40
    accounts = [register(server) for _ in range(users)]
    clients = [ChatClient(server).connect(u.token) for u in accounts]
    acks: list[dict] = []
    lock = threading.Lock()
    done = threading.Semaphore(0)
    start = threading.Barrier(users)

    def run(i: int, c: ChatClient) -> None:
        def on_ack(data):
            with lock:
                acks.append(data)
            done.release()

        start.wait()
        for k in range(per_user):
            c.sio.emit("chat:send", {"text": f"m{i}-{k}", "tempId": f"t{i}-{k}", "chatId": chat_id},
                       callback=on_ack)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(users * per_user):
        assert done.acquire(timeout=20), f"only {len(acks)} acks"
    for c in clients:
        c.close()
    for a in acks:
        assert "error" not in a, a
    return acks


@pytest.fixture(scope="module")
def filled(chat_server, alice):
    chat_id = unique("page")
    acks = fill_chat(chat_server, chat_id, per_user=25, users=10)
    return chat_id, acks


# ---------------------------------------------------------------- /messages queries


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5", ""])
def test_limit_out_of_bounds_422(chat_server, alice, limit):
    assert_detail(get_messages(chat_server, alice.token, limit=limit), 422)


@pytest.mark.parametrize("params", [
    {"before": "abc"}, {"after": "x"}, {"before": "1.5"},
    {"beforeId": "xyz"}, {"afterId": "123"}, {"beforeId": "0123456789ABCDEF01234567"},
    {"afterId": "0123456789abcdef0123456"}, {"chatId": ""}, {"chatId": "bad chat"}, {"chatId": "x" * 65},
])
def test_malformed_query_422(chat_server, alice, params):
    assert_detail(get_messages(chat_server, alice.token, **params), 422)


def test_bounds_combine(chat_server, alice, filled):
    """Any combination of bounds is a window of the chat's one order: both
    sides a range (its oldest `limit`), a time and an id on one side the
    tighter of the two."""
    chat_id, _ = filled
    history = []
    params = {"chatId": chat_id, "limit": 100}
    while True:
        page = alice.messages(**params)
        history = page + history
        if len(page) < 100:
            break
        params["beforeId"] = page[0]["id"]
    assert len(history) == 250
    ids = [m["id"] for m in history]
    key = [(m["timestamp"], m["id"]) for m in history]

    def window(**params):
        r = get_messages(chat_server, alice.token, chatId=chat_id, limit=100, **params)
        assert r.status_code == 200, (params, r.status_code, r.text)
        return [m["id"] for m in r.json()]

    at = dict(zip(ids, key))

    def model(after=None, afterId=None, before=None, beforeId=None):
        """What the contract says the window holds: strictly inside every
        bound given (a time takes its whole millisecond out), the oldest 100
        with an after-bound, else the newest 100."""
        kept = [i for (t, i) in key
                if (after is None or t > after) and (afterId is None or (t, i) > at[afterId])
                and (before is None or t < before) and (beforeId is None or (t, i) < at[beforeId])]
        return kept[:100] if after is not None or afterId is not None else kept[-100:]

    t_lo, t_hi = history[30]["timestamp"], history[60]["timestamp"]
    cases = [
        # ranges: ids, times, one of each; crossed and empty ones
        {"afterId": ids[10], "beforeId": ids[20]},
        {"afterId": ids[10], "beforeId": ids[200]},
        {"afterId": ids[20], "beforeId": ids[10]},
        {"afterId": ids[20], "beforeId": ids[21]},
        {"after": t_lo, "before": t_hi},
        {"after": t_lo, "beforeId": ids[60]},
        {"afterId": ids[5], "before": t_hi},
        # a time and an id on one side: the tighter of the two
        {"before": t_hi, "beforeId": ids[40]},
        {"before": history[40]["timestamp"], "beforeId": ids[60]},
        {"after": 1, "afterId": ids[200]},
        {"after": t_hi, "afterId": ids[5]},
        # all four
        {"after": 1, "afterId": ids[100], "before": 2**53, "beforeId": ids[110]},
    ]
    for params in cases:
        assert window(**params) == model(**params), params
    # and the model is not vacuous: a range is exactly what lies between
    assert window(afterId=ids[10], beforeId=ids[20]) == ids[11:20]
    assert window(afterId=ids[100], beforeId=ids[110], after=1, before=2**53) == ids[101:110]


def test_unknown_and_foreign_cursor_422(chat_server, alice, filled):
    chat_id, acks = filled
    unknown = "0" * 24
    for key in ("beforeId", "afterId"):
        assert_detail(get_messages(chat_server, alice.token, chatId=chat_id, **{key: unknown}), 422)
        # an id of a message of ANOTHER chat
        assert_detail(get_messages(chat_server, alice.token, chatId="general", **{key: acks[0]["id"]}), 422)


def test_limit_default_and_bounds(chat_server, alice, filled):
    chat_id, _ = filled
    assert len(alice.messages(chatId=chat_id)) == 30
    assert len(alice.messages(chatId=chat_id, limit=1)) == 1
    assert len(alice.messages(chatId=chat_id, limit=100)) == 100


def test_all_messages_have_the_contract_fields(chat_server, alice, filled):
    chat_id, acks = filled
    by_id = {a["id"]: a for a in acks}
    page = alice.messages(chatId=chat_id, limit=100)
    for m in page:
        assert_message(m)
        assert m["chatId"] == chat_id and m["type"] == "text"
        assert m["timestamp"] == by_id[m["id"]]["timestamp"]
        i, k = m["text"][1:].split("-")
        assert by_id[m["id"]]["tempId"] == f"t{i}-{k}"


def test_page_back_with_before_id_sees_every_message_once(chat_server, alice, filled):
    chat_id, acks = filled
    assert len(acks) == 250
    assert len({a["id"] for a in acks}) == 250
    # the test is only meaningful if many messages share one millisecond
    stamps = [a["timestamp"] for a in acks]
    assert len(set(stamps)) < len(stamps), "no two messages in one millisecond: the test proves little"
    seen: list[dict] = []
    page = alice.messages(chatId=chat_id, limit=30)
    pages = 0
    while page:
        pages += 1
        assert pages <= 20, "paging does not end"
        assert page == sorted(page, key=order_key), "a page is not oldest first"
        seen = page + seen
        page = alice.messages(chatId=chat_id, limit=30, beforeId=page[0]["id"])
    ids = [m["id"] for m in seen]
    assert len(ids) == len(set(ids)), "a message was seen twice"
    assert set(ids) == {a["id"] for a in acks}, "a message was never seen"
    assert seen == sorted(seen, key=order_key)
    assert pages == 9  # 8 full pages of 30, one of 10


def test_later_messages_get_greater_ids(chat_server, alice, filled):
    chat_id, acks = filled
    # within one process, id order agrees with time order
    assert sorted(acks, key=lambda a: a["id"]) == sorted(acks, key=order_key)
    # and one sender's messages, acked one after the other, get growing ids
    c = ChatClient(chat_server).connect(alice.token)
    try:
        ids = [c.call("chat:send", {"text": f"seq {i}", "chatId": unique("seq")})["id"] for i in range(10)]
    finally:
        c.close()
    assert ids == sorted(ids) and len(set(ids)) == 10


def test_newest_page_is_the_tail(chat_server, alice, filled):
    chat_id, acks = filled
    ordered = sorted(acks, key=order_key)
    assert [m["id"] for m in alice.messages(chatId=chat_id, limit=30)] == [a["id"] for a in ordered[-30:]]


def test_before_ms_is_strict(chat_server, alice, filled):
    chat_id, acks = filled
    ordered = sorted(acks, key=order_key)
    pivot = ordered[len(ordered) // 2]["timestamp"]
    expected = [a["id"] for a in ordered if a["timestamp"] < pivot][-50:]
    got = alice.messages(chatId=chat_id, before=pivot, limit=50)
    assert [m["id"] for m in got] == expected
    assert all(m["timestamp"] < pivot for m in got)


def test_after_and_after_id_oldest_strictly_after(chat_server, alice, filled):
    chat_id, acks = filled
    ordered = sorted(acks, key=order_key)
    pivot = ordered[100]
    got = alice.messages(chatId=chat_id, afterId=pivot["id"], limit=30)
    assert [m["id"] for m in got] == [a["id"] for a in ordered[101:131]]
    expected = [a["id"] for a in ordered if a["timestamp"] > pivot["timestamp"]][:30]
    got = alice.messages(chatId=chat_id, after=pivot["timestamp"], limit=30)
    assert [m["id"] for m in got] == expected
    # catching up from the newest: nothing after it
    assert alice.messages(chatId=chat_id, afterId=ordered[-1]["id"]) == []
    # walking forward with afterId also visits everything once
    seen, cursor = [], ordered[0]["id"]
    seen.append(cursor)
    while True:
        page = alice.messages(chatId=chat_id, afterId=cursor, limit=100)
        if not page:
            break
        seen += [m["id"] for m in page]
        cursor = page[-1]["id"]
    assert seen == [a["id"] for a in ordered]


def test_chat_id_separates_chats(chat_server, alice, filled):
    chat_id, acks = filled
    ours = {a["id"] for a in acks}
    assert not ours & {m["id"] for m in alice.messages(limit=100)}  # general
    assert not ours & {m["id"] for m in alice.messages(chatId="general", limit=100)}
    assert alice.messages(chatId=unique("empty")) == []
    assert all(m["chatId"] == chat_id for m in alice.messages(chatId=chat_id, limit=100))


def test_status_moves_forward(chat_server):
    chat_id = unique("status")
    ana, bob = register(chat_server), register(chat_server)
    a = ChatClient(chat_server).connect(ana.token)
    b = ChatClient(chat_server).connect(bob.token)
    try:
        # nobody else in the chat: stays `sent`
        ack1 = a.call("chat:send", {"text": "alone", "chatId": chat_id})
        a.none("chat:delivered")
        [m1] = ana.messages(chatId=chat_id)
        assert m1["id"] == ack1["id"] and m1["status"] == "sent"

        assert b.call("chat:join", {"chatId": chat_id}) == {"chatId": chat_id}
        ack2 = a.call("chat:send", {"text": "with bob", "chatId": chat_id})
        assert b.wait("chat:new-message")["status"] == "sent"
        assert a.wait("chat:delivered") == {"messageId": ack2["id"]}
        # `chat:delivered` goes out as the status write is started, not once
        # it is stored: the history shows it a moment later.
        deadline = time.monotonic() + 5
        while True:
            m1, m2 = ana.messages(chatId=chat_id)
            if m2["status"] == "delivered" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert (m1["status"], m2["status"]) == ("sent", "delivered")

        # a read by the author does not count
        a.call("chat:read", {"messageIds": [ack2["id"]]})
        assert ana.messages(chatId=chat_id)[1]["status"] == "delivered"

        b.call("chat:read", {"messageIds": [ack1["id"], ack2["id"]]})
        m1, m2 = bob.messages(chatId=chat_id)
        assert (m1["status"], m2["status"]) == ("read", "read")

        # never back: another socket getting... nothing changes a read message
        c = ChatClient(chat_server).connect(register(chat_server).token)
        c.call("chat:join", {"chatId": chat_id})
        b.call("chat:read", {"messageIds": [ack2["id"]]})
        assert [m["status"] for m in ana.messages(chatId=chat_id)] == ["read", "read"]
        c.close()
    finally:
        a.close()
        b.close()
