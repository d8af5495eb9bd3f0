"""Registers the user schemathesis authenticates as, and stores three
messages in chat `general` over Socket.IO (Engine.IO long-polling, with
requests), so that GET /messages has ids to page from and ranges between.

Prints two lines: the access token, then the message ids, space-separated.
Usage: seed.py BASE_URL
"""

from __future__ import annotations

import json
import sys
import time

import requests

base = sys.argv[1].rstrip("/")
user = {"username": "schemathesis", "password": "schemathesis-password"}
r = requests.post(f"{base}/register", json=user, timeout=10)
if r.status_code == 409:
    r = requests.post(f"{base}/login", json=user, timeout=10)
r.raise_for_status()
token = r.json()["access_token"]

eio = f"{base}/socket.io/?EIO=4&transport=polling"
opened = requests.get(eio, timeout=10)
opened.raise_for_status()
sid = json.loads(opened.text[1:])["sid"]
url = f"{eio}&sid={sid}"


def post(packet: str) -> None:
    requests.post(url, data=packet.encode(), timeout=10).raise_for_status()


def poll() -> list[str]:
    r = requests.get(url, timeout=30)
    r.raise_for_status()
    return r.text.split("\x1e")


SEEDS = 3
post("40" + json.dumps({"token": token}))
deadline = time.monotonic() + 20
ids: list[str] = []
while len(ids) < SEEDS:
    if time.monotonic() > deadline:
        sys.exit("seed.py: no chat:ack from the server")
    for packet in poll():
        if packet.startswith("40"):
            for n in range(SEEDS):
                send = ["chat:send", {"text": f"seed {n} for schemathesis", "tempId": f"seed-{n}"}]
                post(f"42{n}" + json.dumps(send))
        elif packet.startswith("44"):
            sys.exit(f"seed.py: connect refused: {packet}")
        elif packet.startswith("43"):
            ids.append(json.loads(packet[3:])[0]["id"])
        elif packet == "2":
            post("3")
post("41")
print(token)
print(" ".join(ids))
