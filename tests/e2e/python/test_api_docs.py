"""The API documents and their viewers over real HTTP: `/openapi.json`,
`/asyncapi.json`, Swagger UI at `/docs`, ReDoc at `/redoc`, every asset
served by chatwire itself.

With a Chromium on the PATH (`CHROMIUM_BIN` names another), each page is
also loaded in headless Chromium over the DevTools protocol: it must render
the routes and make no request outside this server that the page's
Content-Security-Policy does not stop. Without one, that test is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from urllib.parse import urljoin, urlparse

import pytest
import requests
import websocket

from chatlib import TIMEOUT


def get(server, path: str, **kwargs) -> requests.Response:
    return requests.get(f"{server.url}{path}", timeout=TIMEOUT, **kwargs)


def test_openapi_document(chat_server):
    r = get(chat_server, "/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {"/", "/ready", "/register", "/login", "/messages"}
    assert doc["paths"]["/messages"]["get"]["security"] == [{"bearer": []}]


def test_asyncapi_document(chat_server):
    r = get(chat_server, "/asyncapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["asyncapi"].startswith("3.")
    names = {m.get("name") for m in doc["components"]["messages"].values()}
    assert {"chat:send", "chat:new-message", "error"} <= names


@pytest.mark.parametrize("page", ["/docs", "/docs/"])
def test_swagger_ui_assets_are_all_served_here(chat_server, page):
    r = get(chat_server, page)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    base = re.search(r'<base href="([^"]+)"', r.text)
    base_url = urljoin(f"{chat_server.url}{page}", base.group(1) if base else "")
    links = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assets = [urljoin(base_url, link) for link in links]
    assert len(assets) >= 5
    kinds = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}
    for url in assets:
        assert url.startswith(f"{chat_server.url}/docs/"), url
        if url.endswith("/docs/"):
            continue  # the page's <base>
        a = requests.get(url, timeout=TIMEOUT)
        assert a.status_code == 200, url
        ext = os.path.splitext(urlparse(url).path)[1]
        assert a.headers["content-type"].startswith(kinds[ext]), (url, a.headers["content-type"])
    init = get(chat_server, "/docs/swagger-initializer.js").text
    assert '"url": "/openapi.json"' in init
    assert '"validatorUrl": "none"' in init


def test_redoc_is_one_page(chat_server):
    r = get(chat_server, "/redoc")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "<script src" not in r.text
    assert 'Redoc.init("/openapi.json"' in r.text
    csp = r.headers["content-security-policy"]
    assert "img-src 'self' data:;" in csp and "http" not in csp


@pytest.mark.parametrize("path", ["/openapi.json", "/asyncapi.json", "/docs", "/docs/swagger-ui.css", "/redoc"])
def test_other_methods_get_405_with_allow(chat_server, path):
    r = requests.post(f"{chat_server.url}{path}", timeout=TIMEOUT)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert r.json() == {"detail": "Method Not Allowed"}
    assert requests.head(f"{chat_server.url}{path}", timeout=TIMEOUT).status_code == 200


# ------------------------------------------------------------- in a browser


def chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM_BIN")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A headless Chromium driven over the DevTools protocol."""

    def __init__(self, binary: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chatwire-docs-")
        port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Nothing of the browser's outside its temporary profile.
            env={**os.environ, "HOME": self.profile, "XDG_CONFIG_HOME": self.profile,
                 "XDG_CACHE_HOME": self.profile},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except (requests.RequestException, StopIteration, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        me = self.next_id
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
            if r.get("result", {}).get("value"):
                return
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {expression}")

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium on the PATH (CHROMIUM_BIN names one)")
    b = Browser(binary)
    yield b
    b.close()


@pytest.mark.parametrize(
    "page,rendered",
    [
        ("/docs", "document.querySelectorAll('.opblock-summary-path').length"),
        ("/redoc", "[...document.querySelectorAll('h2')].some(h => h.textContent.includes('A page of a chat'))"),
    ],
)
def test_the_pages_render_with_nothing_from_outside(chat_server, browser, page, rendered):
    browser.call("Network.enable")
    browser.call("Log.enable")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{chat_server.url}{page}")
    browser.wait_for(rendered)
    time.sleep(1)  # late requests (fonts, images, workers)
    browser.call("Runtime.evaluate", expression="1")
    own = urlparse(chat_server.url).netloc
    requested = {}
    failed = {}
    for e in browser.events:
        p = e.get("params", {})
        if e.get("method") == "Network.requestWillBeSent":
            requested[p["requestId"]] = p["request"]["url"]
        elif e.get("method") == "Network.loadingFailed":
            failed[p["requestId"]] = p.get("blockedReason")
    assert requested, "the page made no request at all?"
    outside = {
        url: failed.get(rid)
        for rid, url in requested.items()
        if urlparse(url).scheme not in ("data", "blob") and urlparse(url).netloc != own
    }
    # Anything from elsewhere (ReDoc's logo on Redocly's CDN) is stopped by the policy.
    assert all(reason == "csp" for reason in outside.values()), outside
    if page == "/docs":
        assert not outside, outside
    errors = [
        (entry["text"], entry.get("url"))
        for entry in (e["params"]["entry"] for e in browser.events if e.get("method") == "Log.entryAdded")
        if entry["level"] == "error"
        and "Content Security Policy" not in entry["text"]
        # The browser asks for /favicon.ico on its own; there is none.
        and not entry.get("url", "").endswith("/favicon.ico")
    ]
    assert not errors, errors
