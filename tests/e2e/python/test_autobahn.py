"""Autobahn's WebSocket conformance cases 1-7, 9 and 10, run by kosoku
(which drives Autobahn's own case files), against the conformance server's
plain WebSocket echo on `/`. The echo is framed by the same code as every
chat connection (`protocol::ws`, `driver/src/ws.rs`), so these cases are
the framing's: text and binary frames, pings and pongs, reserved bits and
opcodes, fragmentation, UTF-8 (fail-fast is not asked of the server:
NON-STRICT counts as a pass, as Autobahn itself says), close handshakes
and close codes, big messages and many of them.

Each case must end OK, NON-STRICT or INFORMATIONAL, as Autobahn grades
them; the reports land in the test's temporary directory.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from conftest import SLOW_PING_ARGS

SECTIONS = ["1", "2", "3", "4", "5", "6", "7", "9", "10"]
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def test_autobahn_cases_pass_against_the_echo(servers, tmp_path):
    server = servers.get(*SLOW_PING_ARGS)
    kosoku = pathlib.Path(sys.executable).parent / "kosoku"
    selection = [arg for s in SECTIONS for arg in ("-i", f"{s}.*")]
    run = subprocess.run(
        [str(kosoku), f"127.0.0.1:{server.port}", *selection, "-p", "2", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    index = json.loads((tmp_path / "index.json").read_text())
    (cases,) = index.values()
    ran = {case.split(".")[0] for case in cases}
    assert ran == set(SECTIONS), ran
    assert len(cases) >= 290, len(cases)
    failed = {
        case: (r["behavior"], r["behaviorClose"])
        for case, r in cases.items()
        if r["behavior"] not in PASSING or r["behaviorClose"] not in PASSING
    }
    assert not failed, failed
