"""The credential routes' throttles, with their default budgets: per client
address (`/login` and `/register`), per username for failed logins (never
locking the user out of an address they logged in from), the client address
taken from `X-Forwarded-For` only behind a trusted proxy, and bcrypt on a
bounded pool (503 with `Retry-After` at once past it)."""

from __future__ import annotations

import threading
import time

import requests
from chatlib import PASSWORD, unique
from conftest import UNTHROTTLED, start_chatwire

TIMEOUT = 10.0
DEFAULTS = {k: None for k in UNTHROTTLED}


def login(server, username, password, client: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": client} if client else {}
    return requests.post(server.url + "/login", json={"username": username, "password": password},
                         headers=headers, timeout=TIMEOUT)


def register(server, username, client: str | None = None) -> requests.Response:
    headers = {"X-Forwarded-For": client} if client else {}
    return requests.post(server.url + "/register", json={"username": username, "password": PASSWORD},
                         headers=headers, timeout=TIMEOUT)


def assert_throttled(r: requests.Response, status: int = 429) -> int:
    assert r.status_code == status, (r.status_code, r.text)
    assert set(r.json()) == {"detail"}
    wait = int(r.headers["retry-after"])
    assert wait >= 1
    return wait


def test_one_address_gets_twenty_attempts_then_waits():
    # X-Forwarded-For is not trusted by default: every request is 127.0.0.1's.
    server = start_chatwire(DEFAULTS)
    try:
        name = unique("ana")
        assert register(server, name).status_code == 201
        # 19 logins more (other names, so that no username's budget is spent)
        for i in range(19):
            r = login(server, unique("x"), "wrong-password", client=f"10.0.0.{i}")
            assert r.status_code == 401, (i, r.text)
        assert_throttled(login(server, name, PASSWORD))
        assert_throttled(register(server, unique("bob")))
    finally:
        server.stop()


def test_guessing_one_password_from_many_addresses_waits_but_the_user_does_not():
    server = start_chatwire({**DEFAULTS, "TRUSTED_PROXIES": "127.0.0.1"})
    try:
        victim, home = unique("ana"), "203.0.113.7"
        assert register(server, victim, client=home).status_code == 201
        assert login(server, victim, PASSWORD, client=home).status_code == 200
        # Ten failures (the burst) from ten addresses...
        for i in range(10):
            r = login(server, victim, f"guess-{i}", client=f"198.51.100.{i}")
            assert r.status_code == 401, (i, r.text)
        # ...then every other address waits, whatever it sends,
        wait = assert_throttled(login(server, victim.upper(), "guess-x", client="198.51.100.200"))
        assert wait >= 30, "one failure a minute"
        assert_throttled(login(server, victim, PASSWORD, client="198.51.100.201"))
        # but the user at home logs in, and other users are not affected.
        assert login(server, victim, PASSWORD, client=home).status_code == 200
        other = unique("bob")
        assert register(server, other, client="198.51.100.202").status_code == 201
        assert login(server, other, PASSWORD, client="198.51.100.202").status_code == 200
    finally:
        server.stop()


def test_a_burst_of_logins_cannot_stall_a_legitimate_one():
    """At bcrypt cost 12 (a quarter second a check here), 30 logins at once:
    past BCRYPT_MAX_PENDING (2) they are answered 503 with Retry-After at
    once instead of queueing, and a legitimate login gets through in time."""
    server = start_chatwire({**UNTHROTTLED, "BCRYPT_COST": "12", "BCRYPT_MAX_PENDING": "2",
                             "TRUSTED_PROXIES": "127.0.0.1"})
    try:
        name = unique("ana")
        assert register(server, name, client="192.0.2.1").status_code == 201
        answers: list[tuple[int, float, str | None]] = []

        def attacker(i: int) -> None:
            start = time.monotonic()
            r = login(server, unique("x"), "wrong-password", client=f"198.51.100.{i}")
            answers.append((r.status_code, time.monotonic() - start, r.headers.get("retry-after")))

        threads = [threading.Thread(target=attacker, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        start = time.monotonic()
        while True:
            r = login(server, name, PASSWORD, client="192.0.2.1")
            if r.status_code != 503:
                break
            time.sleep(int(r.headers["retry-after"]))
        took = time.monotonic() - start
        for t in threads:
            t.join()
        assert r.status_code == 200, r.text
        assert took < 4, f"the legitimate login took {took:.1f} s"
        busy = [a for a in answers if a[0] == 503]
        assert busy, "no login was turned away"
        assert all(a[2] == "1" and a[1] < 1.0 for a in busy), busy
        assert all(a[0] in (401, 503) for a in answers), answers
    finally:
        server.stop()
