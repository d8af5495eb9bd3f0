"""The README's examples run as pasted, and the configuration table
(docs/CONFIGURATION.md) names every setting `chatwire --help` shows.

The blocks marked `<!-- readme-test: shell -->` run in order in one bash
(so `TOKEN` carries from one to the next), with `set -euo pipefail`, in a
directory that holds each block marked `<!-- readme-test: <file> -->` as
that file (`chat.mjs`, `chat.py`) and the e2e suite's `node_modules` (where
a reader ran `npm install socket.io-client`), with this test's own Python
first on the PATH (where a reader ran `pip install "python-socketio[client]"`).
The only change made to them is the port: the server under test listens on
a free one instead of 3000.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from conftest import REPO_ROOT, Server, chatwire_bin

README = REPO_ROOT / "README.md"
CONFIGURATION = REPO_ROOT / "docs" / "CONFIGURATION.md"
JS_MODULES = REPO_ROOT / "tests" / "e2e" / "js" / "node_modules"
BLOCK = re.compile(r"<!-- readme-test: (\S+) -->\n```(\w+)\n(.*?)```", re.S)
MARK = "=== readme block {} ==="


def blocks() -> list[tuple[str, str]]:
    found = [(name, body) for name, _lang, body in BLOCK.findall(README.read_text())]
    assert [n for n, _ in found].count("chat.mjs") == 1, "one chat.mjs block"
    assert [n for n, _ in found].count("chat.py") == 1, "one chat.py block"
    assert sum(n == "shell" for n, _ in found) >= 3, "the shell examples are marked"
    return found


def test_readme_examples_run_as_pasted(tmp_path):
    assert JS_MODULES.is_dir(), "run `npm ci` in tests/e2e/js first"
    work = tmp_path / "work"
    work.mkdir()
    (work / "node_modules").symlink_to(JS_MODULES)
    server = Server(
        binary=chatwire_bin(),
        env={
            "DATABASE_URL": str(tmp_path / "data"),
            "JWT_SECRET": "readme-test-secret-readme-test-secret",
            "BCRYPT_COST": "4",
            "TOKEN": None,
        },
    )
    try:
        port = str(server.port)
        script = ["set -euo pipefail"]
        shell_blocks = 0
        for name, body in blocks():
            body = body.replace("localhost:3000", f"localhost:{port}")
            if name != "shell":
                (work / name).write_text(body)
            else:
                script.append(f"echo '{MARK.format(shell_blocks)}'")
                script.append(body)
                shell_blocks += 1
        env = {k: v for k, v in os.environ.items() if k != "TOKEN"}
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        run = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
        out = run.stdout
        parts = [out.split(MARK.format(i))[1] for i in range(shell_blocks)]
        for i in range(shell_blocks - 1):
            parts[i] = parts[i].split(MARK.format(i + 1))[0]
        first, send, send_py, history = parts[0], parts[1], parts[2], parts[3]
        assert '{"status":"ok"' in first and '{"status":"ready"}' in first
        assert '"token_type":"bearer"' in first and '"username":"ana"' in first
        acked = re.search(r"acked: (\{.*?\})", send, re.S)
        assert acked, send
        assert re.search(r"tempId: '[0-9a-f-]{36}'", acked.group(1)), acked.group(1)
        assert re.search(r"id: '[0-9a-f]{24}'", acked.group(1)), acked.group(1)
        assert "received: ana hi" in send, send
        acked = re.search(r"acked: (\{.*?\})", send_py)
        assert acked, send_py
        assert re.search(r"'tempId': '[0-9a-f-]{36}'", acked.group(1)), acked.group(1)
        assert re.search(r"'id': '[0-9a-f]{24}'", acked.group(1)), acked.group(1)
        assert "received: ana hello from python" in send_py, send_py
        # The first listing holds the messages the JavaScript and Python examples sent.
        listing, _ = json.JSONDecoder().raw_decode(history.strip())
        texts = [(m["author"], m["text"]) for m in listing]
        assert texts == [("ana", "hi"), ("ana", "hello from python")]
    finally:
        server.stop()


def help_settings() -> tuple[set[str], set[str]]:
    out = subprocess.run(
        [str(chatwire_bin()), "--help"], capture_output=True, text=True, check=True
    ).stdout
    flags = set(re.findall(r"^\s+(--[a-z0-9-]+)", out, re.M)) - {"--help", "--version"}
    envs = set(re.findall(r"\[env: ([A-Z0-9_]+)", out))
    return flags, envs


def test_configuration_table_names_every_setting():
    text = CONFIGURATION.read_text()
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    flags, envs = help_settings()
    assert flags and envs
    missing = sorted(f for f in flags if f"`{f}`" not in table)
    missing += sorted(e for e in envs if f"`{e}`" not in table)
    assert not missing, f"settings missing from docs/CONFIGURATION.md's table: {missing}"
