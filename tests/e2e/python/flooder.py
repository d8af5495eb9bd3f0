"""A Socket.IO client that floods a chatwire server with events from one
socket, in a process of its own (so that its work does not slow the client
whose latency a test measures). Used by test_flood.py.

    python flooder.py URL TOKEN TRANSPORT N

It connects over `websocket` or `polling` (raw Engine.IO, no client
library: the flood must go out as one burst), sends N events in one write
(WebSocket: N frames in one `sendall`; polling: one POST of N packets),
each without an ack: chat:join of a new chat, chat:typing in `general`,
chat:read of an unknown id, in turn. Once no `error` has come for QUIET
seconds (the server is done with the flood, and the budget refilled a
little) it sends one `chat:typing` with ack id 999, reads every packet
until that ack arrives, and prints one JSON line: how long the write took,
the `error` codes it got and how many, what the last ack said.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

import requests
import websocket

FINAL_ID = 999
FINAL = f'42{FINAL_ID}["chat:typing",{{"isTyping":false}}]'
DEADLINE = 60.0
QUIET = 0.5


def packets(n: int) -> list[str]:
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(f'42["chat:join",{{"chatId":"flood-{i}"}}]')
        elif kind == 1:
            out.append('42["chat:typing",{"isTyping":true}]')
        else:
            out.append(f'42["chat:read",{{"messageIds":["{i:024x}"]}}]')
    return out


class Tally:
    def __init__(self) -> None:
        self.codes: Counter = Counter()
        self.final = threading.Event()
        self.final_ack = None
        self.closed = False
        self.last = time.monotonic()

    def wait_quiet(self) -> None:
        while time.monotonic() - self.last < QUIET:
            time.sleep(0.05)

    def packet(self, p: str) -> str | None:
        """Counts one Engine.IO packet; returns the answer to send, if any."""
        if p == "2":
            return "3"
        if p == "1":
            self.closed = True
        elif p.startswith('42["error",'):
            self.last = time.monotonic()
            self.codes[json.loads(p[2:])[1]["code"]] += 1
        elif p.startswith(f"43{FINAL_ID}["):
            self.final_ack = json.loads(p[2 + len(str(FINAL_ID)):])[0]
            self.final.set()
        return None


def over_websocket(base: str, token: str, n: int) -> dict:
    ws = websocket.create_connection(
        base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=DEADLINE)
    assert ws.recv().startswith("0{")
    ws.send(json.dumps({"token": token}).join(["40", ""]))
    assert ws.recv().startswith("40{")
    tally = Tally()

    def read() -> None:
        try:
            while not tally.final.is_set():
                answer = tally.packet(ws.recv())
                if answer:
                    ws.send(answer)
        except Exception:  # the connection ended: reported as not acked
            tally.closed = True
            tally.final.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    burst = b"".join(
        websocket.ABNF.create_frame(p, websocket.ABNF.OPCODE_TEXT).format() for p in packets(n))
    t0 = time.monotonic()
    ws.sock.sendall(burst)
    write_s = time.monotonic() - t0
    tally.wait_quiet()
    ws.send(FINAL)
    tally.final.wait(DEADLINE)
    ws.close()
    return {"write_s": write_s, "codes": dict(tally.codes), "final_ack": tally.final_ack,
            "closed": tally.closed}


def over_polling(base: str, token: str, n: int) -> dict:
    s = requests.Session()
    url = base + "/socket.io/"
    r = s.get(url, params={"EIO": "4", "transport": "polling"}, timeout=DEADLINE)
    sid = json.loads(r.text[1:])["sid"]
    q = {"EIO": "4", "transport": "polling", "sid": sid}
    assert s.post(url, params=q, data="40" + json.dumps({"token": token}), timeout=DEADLINE).text == "ok"
    tally = Tally()
    statuses: list[int] = []

    def poll() -> None:
        # One GET at a time, as Engine.IO requires; each waits for packets.
        poller = requests.Session()
        while not tally.final.is_set():
            r = poller.get(url, params=q, timeout=DEADLINE)
            statuses.append(r.status_code)
            if r.status_code != 200:
                tally.closed = True
                tally.final.set()
                return
            for p in r.text.split("\x1e"):
                answer = tally.packet(p)
                if answer:
                    poller.post(url, params=q, data=answer, timeout=DEADLINE)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    body = "\x1e".join(packets(n)).encode()
    t0 = time.monotonic()
    r = s.post(url, params=q, data=body, timeout=DEADLINE)
    write_s = time.monotonic() - t0
    assert r.text == "ok", (r.status_code, r.text)
    tally.wait_quiet()
    s.post(url, params=q, data=FINAL, timeout=DEADLINE)
    tally.final.wait(DEADLINE)
    return {"write_s": write_s, "codes": dict(tally.codes), "final_ack": tally.final_ack,
            "closed": tally.closed, "post_bytes": len(body)}


def main() -> None:
    base, token, transport, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run = over_websocket if transport == "websocket" else over_polling
    print(json.dumps(run(base, token, n)), flush=True)


if __name__ == "__main__":
    main()
