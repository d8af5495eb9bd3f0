"""python-socketio against a chatwire with connection state recovery on
(RECOVERY_WINDOW_MS): every recoverable event carries its offset as an
extra last argument, which a handler taking `*args` receives; acks and
`error` carry none. (Recovery itself, with socket.io-client, is tested in
tests/e2e/js/test/recovery.test.mjs; python-socketio does not ask for it.)
"""

from __future__ import annotations

import pytest

from chatlib import ChatClient, register
from conftest import start_chatwire


@pytest.fixture(scope="module")
def recovering_server():
    server = start_chatwire({"RECOVERY_WINDOW_MS": "60000"})
    yield server
    server.stop()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_events_carry_an_offset_as_an_extra_last_argument(recovering_server, transport):
    ana, bob = register(recovering_server), register(recovering_server)
    a = ChatClient(recovering_server, transport).connect(ana.token)
    b = ChatClient(recovering_server, transport).connect(bob.token)
    try:
        ack = b.call("chat:send", {"text": "hi", "tempId": "t1"})
        # The ack callback's answer is as without recovery.
        assert set(ack) == {"tempId", "id", "timestamp"}
        # The chat:ack event has its offset, as has the message to the other socket.
        ack_event, ack_offset = b.wait("chat:ack")
        assert ack_event == ack
        message, offset = a.wait("chat:new-message")
        assert message["id"] == ack["id"] and message["text"] == "hi"
        assert isinstance(offset, str) and isinstance(ack_offset, str)
        assert int(ack_offset) != int(offset)
        # A refusal's `error` answers the client's own event: no offset.
        refusal = b.call("chat:send", {"text": "   "})
        assert refusal["error"]["code"] == "invalid"
        error = b.wait("error")
        assert isinstance(error, dict) and error["code"] == "invalid"
        # Offsets grow with each event.
        b.call("chat:send", {"text": "again"})
        _, later = a.wait("chat:new-message")
        assert int(later) > int(offset)
    finally:
        a.close()
        b.close()
