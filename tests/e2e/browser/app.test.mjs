// The web chat page (/app) in a real browser: Debian's Chromium driven by
// playwright-core, one browser context per user, the server reached under a
// host name that is not localhost (so the page runs in a context that is not
// "secure", as it would on a LAN address), and every request that does not
// go to chatwire blocked and recorded. The page is driven by the names a
// user (and a screen reader) sees: the fields Username, Password, Message,
// Chat; the buttons Log in, Register, Send, Join, Log out; the lists Chats
// and Messages; the statuses Connection and Typing.
//
// Screenshots go to tests/e2e/browser/artifacts/ (ignored by git), or, with
// APP_SCREENSHOTS=1, to docs/img/app-desktop.png and docs/img/app-phone.png.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { launchChromium } from "./chromium.mjs";
import { io } from "socket.io-client";
import { chatwireBin, startServer } from "../js/lib/server.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../../..");
const SHOTS = process.env.APP_SCREENSHOTS === "1" ? path.join(REPO, "docs/img") : path.join(HERE, "artifacts");
const BUNDLE = path.join(HERE, "node_modules/socket.io-client/dist/socket.io.min.js");
const HOST = "chatwire.test";
const WAIT = 15000;
// Names unique to this run.
const TAG = Date.now().toString(36).slice(-6);
const PASSWORD = "secret1";

let plain; // a server without connection state recovery
let recovering; // one with it
let browser;
const apps = []; // every page opened, checked at the end

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  const env = {
    DATABASE_URL: "memory:",
    BCRYPT_COST: "4",
    JWT_SECRET: "browser-test-secret-browser-test-secret",
    // The history test sends 45 messages in a row from one user.
    RATE_LIMIT_BURST: "100",
  };
  [plain, recovering, browser] = await Promise.all([
    startServer([], { bin: chatwireBin(), env: { ...env, RECOVERY_WINDOW_MS: undefined } }),
    startServer([], { bin: chatwireBin(), env: { ...env, RECOVERY_WINDOW_MS: "120000" } }),
    launchChromium(HOST),
  ]);
});

after(async () => {
  await browser?.close();
  await Promise.all([plain?.stop(), recovering?.stop()]);
});

// ---- helpers ---------------------------------------------------------------

// A browser context with the page at /app, recording what the test checks:
// requests outside chatwire (aborted), script errors, policy violations,
// the events the page sent (over WebSocket frames and polling POSTs alike)
// and the ids each page load sent in chat:read.
async function openApp(server, { query = "", viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ viewport });
  const app = { server, context, outside: [], errors: [], sent: [], reads: [], websockets: [], history: [] };
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === "data:" || url.protocol === "blob:" || url.host === `${HOST}:${server.port}`) {
      return route.continue();
    }
    app.outside.push(route.request().url());
    return route.abort();
  });
  // Init scripts run outside the page's policy: this one reports what the
  // policy refused.
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const page = await context.newPage();
  app.page = page;
  page.on("pageerror", (e) => app.errors.push(String(e)));
  page.on("console", (m) => {
    if (/Content.Security.Policy|CSP violation/i.test(m.text())) app.errors.push(m.text());
  });
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) app.reads.push([]);
  });
  // Socket.IO EVENT packets ("42", an ack id, then [name, data]); a polling
  // POST may carry several, split by \x1e.
  const take = (payload) => {
    for (const packet of String(payload).split("\x1e")) {
      const m = /^42\d*(\[.*)$/s.exec(packet);
      if (!m) continue;
      const [name, data] = JSON.parse(m[1]);
      app.sent.push([name, data]);
      if (name === "chat:read") app.reads.at(-1).push(...data.messageIds);
    }
  };
  page.on("websocket", (ws) => {
    app.websockets.push(ws.url());
    ws.on("framesent", (f) => take(f.payload));
  });
  page.on("request", (r) => {
    const url = r.url();
    if (url.includes("/socket.io/") && r.method() === "POST") take(r.postData() ?? "");
    if (url.includes("/messages?")) app.history.push(url);
  });
  apps.push(app);
  await page.goto(`http://${HOST}:${server.port}/app${query}`);
  return app;
}

const connection = (page) => page.getByRole("status", { name: "Connection" });
const typing = (page) => page.getByRole("status", { name: "Typing" });
const messageList = (page) => page.getByRole("list", { name: "Messages", exact: true });
const chatList = (page) => page.getByRole("list", { name: "Chats", exact: true });
const item = (page, text) => messageList(page).getByRole("listitem").filter({ hasText: text });

async function connected(page) {
  await connection(page).filter({ hasText: /^connected$/ }).waitFor({ timeout: WAIT });
}

// Waits until the page's connection has upgraded to WebSocket: from then
// on every event arrives in a task of its own.
async function onWebSocket(page) {
  await page.waitForFunction(
    () => document.querySelector('[aria-label="Connection"]').dataset.transport === "websocket",
    null,
    { timeout: WAIT },
  );
}

async function logIn(page, username, button = "Register") {
  await page.getByLabel("Username", { exact: true }).fill(username);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: button, exact: true }).click();
}

async function register(page, username) {
  await logIn(page, username, "Register");
  await connected(page);
}

async function send(page, text) {
  await page.getByLabel("Message", { exact: true }).fill(text);
  await page.getByRole("button", { name: "Send", exact: true }).click();
}

// Waits until the user's own message `text` shows one of `words` (a status
// word or several, "sent|delivered").
async function ownStatus(page, text, words) {
  await item(page, text)
    .filter({ hasText: new RegExp(`\\b(?:${words})\\b`) })
    .waitFor({ timeout: WAIT });
}

async function openChat(page, name) {
  await chatList(page).getByRole("button", { name, exact: true }).click();
  await page.getByRole("heading", { name, exact: true }).waitFor({ timeout: WAIT });
}

async function joinChat(page, name) {
  await page.getByLabel("Chat", { exact: true }).fill(name);
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await chatList(page).getByRole("button", { name, exact: true }).waitFor({ timeout: WAIT });
  await page.getByRole("heading", { name, exact: true }).waitFor({ timeout: WAIT });
}

// The texts of the messages shown, in order.
async function texts(page) {
  return messageList(page).getByRole("listitem").locator("p").allTextContents();
}

const rank = (status) => ["sending", "sent", "delivered", "read"].indexOf(status);

// Polls `check` until it returns true (for conditions no locator states).
async function until(what, check, timeout = WAIT) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// Records, for every own message, each status its item shows, in order, from
// a MutationObserver: it runs after each task that changed the list, so a
// status that lasts one task (`sending` until the ack) is seen too.
async function recordStatuses(page) {
  await page.evaluate(() => {
    const log = (window.statusLog = {});
    const note = () => {
      for (const li of document.querySelectorAll('[aria-label="Messages"] li[data-status]')) {
        const text = li.querySelector("p").textContent;
        const seen = (log[text] ??= []);
        if (seen.at(-1) !== li.dataset.status) seen.push(li.dataset.status);
      }
    };
    new MutationObserver(note).observe(document.querySelector('[aria-label="Messages"]'), {
      subtree: true,
      childList: true,
      attributes: true,
      characterData: true,
    });
  });
}

// A user who sends `count` messages to `chatId` with the Node client, each
// acknowledged before the next.
async function seed(server, username, chatId, count) {
  const res = await fetch(`${server.url}/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  assert.equal(res.status, 201, await res.clone().text());
  const { access_token: token } = await res.json();
  const socket = io(server.url, { auth: { token }, transports: ["websocket"], reconnection: false });
  try {
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    await socket.timeout(5000).emitWithAck("chat:join", { chatId });
    const sent = [];
    for (let i = 1; i <= count; i++) {
      const text = `history ${String(i).padStart(2, "0")} ${TAG}`;
      const ack = await socket.timeout(5000).emitWithAck("chat:send", { text, tempId: `h${i}`, chatId });
      assert.match(ack.id ?? "", /^[0-9a-f]{24}$/, JSON.stringify(ack));
      sent.push(text);
    }
    return sent;
  } finally {
    socket.disconnect();
  }
}

// ---- the page and its files ---------------------------------------------------

test("the page and its files are served from chatwire, under a policy that allows only chatwire", async () => {
  const res = await fetch(`${plain.url}/app`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = res.headers.get("content-security-policy");
  assert.ok(csp, "a Content-Security-Policy");
  const directives = Object.fromEntries(csp.split(";").map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k, v]));
  assert.deepEqual(directives["default-src"], ["'none'"]);
  assert.deepEqual(directives["script-src"], ["'self'"], "no inline or outside script");
  assert.deepEqual(directives["connect-src"], ["'self'"], "HTTP and WebSocket to this server only");
  assert.deepEqual(directives["frame-ancestors"], ["'none'"]);
  for (const sources of Object.values(directives)) {
    for (const s of sources) assert.ok(["'self'", "'none'"].includes(s), `${s} in ${csp}`);
  }
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
  assert.equal(res.headers.get("referrer-policy"), "no-referrer");
  assert.equal(res.headers.get("cache-control"), "no-cache");
  const html = await res.text();
  const links = [...html.matchAll(/(?:src|href)="([^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual(links.sort(), ["/app/app.css", "/app/app.js", "/app/socket.io.min.js"]);
  for (const [file, type] of [
    ["app.js", "text/javascript; charset=utf-8"],
    ["app.css", "text/css; charset=utf-8"],
    ["socket.io.min.js", "text/javascript; charset=utf-8"],
  ]) {
    const r = await fetch(`${plain.url}/app/${file}`);
    assert.equal(r.status, 200, file);
    assert.equal(r.headers.get("content-type"), type, file);
  }
  // The vendored bundle is the one npm installed from the registry, byte for byte.
  const served = Buffer.from(await (await fetch(`${plain.url}/app/socket.io.min.js`)).arrayBuffer());
  assert.ok(served.equals(readFileSync(BUNDLE)), "/app/socket.io.min.js is socket.io-client's dist/socket.io.min.js");
  assert.equal((await fetch(`${plain.url}/app`, { method: "POST" })).status, 405);
  // `/` stays the health check.
  assert.equal((await (await fetch(`${plain.url}/`)).json()).status, "ok");
});

// ---- two users ----------------------------------------------------------------

let ana; // {page, ...}: ana_<tag> on the plain server
let ben;
const anaName = `ana_${TAG}`;
const benName = `ben_${TAG}`;
const hello = `hello from ana ${TAG}`;
const reply = `hi ana, ben here ${TAG}`;
let helloId;
let replyId;

test("two users chat both ways; the sender's message goes sending, sent, delivered, read", async () => {
  ana = await openApp(plain);
  ben = await openApp(plain);
  await register(ana.page, anaName);
  await register(ben.page, benName);
  // Over WebSocket (CSP's 'self' lets the page open it), where each event
  // is a task of its own and so each status shows.
  await onWebSocket(ana.page);
  await onWebSocket(ben.page);
  assert.ok(ana.websockets.some((u) => u.startsWith(`ws://${HOST}:${plain.port}/socket.io/`)), ana.websockets);
  await recordStatuses(ana.page);
  await recordStatuses(ben.page);

  await send(ana.page, hello);
  await item(ben.page, hello).filter({ hasText: anaName }).waitFor({ timeout: WAIT });
  await ownStatus(ana.page, hello, "read");
  assert.deepEqual(await ana.page.evaluate((t) => window.statusLog[t], hello), ["sending", "sent", "delivered", "read"]);

  await send(ben.page, reply);
  await item(ana.page, reply).filter({ hasText: benName }).waitFor({ timeout: WAIT });
  await ownStatus(ben.page, reply, "read");
  assert.deepEqual(await ben.page.evaluate((t) => window.statusLog[t], reply), ["sending", "sent", "delivered", "read"]);
  // Others' messages carry no status word.
  assert.doesNotMatch(await item(ben.page, hello).textContent(), /\b(?:sending|sent|delivered|read|failed)\b/);

  // Each page said it read the other's message, never its own.
  helloId = await item(ana.page, hello).getAttribute("data-id");
  replyId = await item(ben.page, reply).getAttribute("data-id");
  assert.ok(ben.reads.flat().includes(helloId));
  assert.ok(!ben.reads.flat().includes(replyId), "ben never reads his own");
  assert.ok(ana.reads.flat().includes(replyId));
  assert.ok(!ana.reads.flat().includes(helloId), "ana never reads her own");
});

test("typing shows at the other user while one types, and goes away when they stop", async () => {
  const anaTyping = typing(ben.page).filter({ hasText: `${anaName} is typing` });
  // Keystroke by keystroke, then idle: one "typing", one "stopped" (after
  // 3 s idle, well before the 10 s the server would wait).
  const typed = () => ana.sent.filter(([name]) => name === "chat:typing").map(([, d]) => d.isTyping);
  const before = typed().length;
  await ana.page.getByLabel("Message", { exact: true }).pressSequentially("I am wri", { delay: 30 });
  await anaTyping.waitFor({ timeout: WAIT });
  let since = Date.now();
  await anaTyping.waitFor({ state: "detached", timeout: WAIT });
  assert.ok(Date.now() - since < 9000, `gone after ${Date.now() - since} ms`);
  assert.deepEqual(typed().slice(before), [true, false], "a bounded rate, not one per keystroke");
  // Stopping by sending: at once.
  await ana.page.getByLabel("Message", { exact: true }).fill("I am writing ag");
  await anaTyping.waitFor({ timeout: WAIT });
  since = Date.now();
  await ana.page.getByRole("button", { name: "Send", exact: true }).click();
  await anaTyping.waitFor({ state: "detached", timeout: WAIT });
  assert.ok(Date.now() - since < 2900, `gone after ${Date.now() - since} ms, before the idle stop`);
  // One's own typing is not shown to oneself.
  assert.equal((await typing(ana.page).textContent()).trim(), "");
});

test("a message's text is shown as text, never as HTML", async () => {
  const text = `<b>x</b> <img src=x> & ${TAG}`;
  await send(ana.page, text);
  const shown = item(ben.page, `<b>x</b>`);
  await shown.waitFor({ timeout: WAIT });
  assert.equal(await shown.locator("p").textContent(), text);
  assert.equal(await messageList(ben.page).locator("b, img").count(), 0, "no element made from the text");
});

test("a second chat: joined by name, its own history; general shows general's; the tab keeps its chats", async () => {
  const team = `team-${TAG}`;
  const inTeam = `only in the team chat ${TAG}`;
  await joinChat(ana.page, team);
  await joinChat(ben.page, team);
  await send(ana.page, inTeam);
  await item(ben.page, inTeam).waitFor({ timeout: WAIT });
  await ownStatus(ana.page, inTeam, "delivered|read");

  await openChat(ben.page, "general");
  await item(ben.page, hello).waitFor({ timeout: WAIT });
  assert.equal(await item(ben.page, inTeam).count(), 0, "general does not show the team's messages");
  await openChat(ben.page, team);
  await item(ben.page, inTeam).waitFor({ timeout: WAIT });
  assert.equal(await item(ben.page, hello).count(), 0, "the team chat does not show general's");

  // A reload keeps the login and the chats joined (sessionStorage), and joins
  // them again on the new connection: new messages there still arrive.
  await ben.page.reload();
  await connected(ben.page);
  // General's history again: Ana's message is read again (this page load
  // has not said so), Ben's own, on screen with it, is not.
  await item(ben.page, reply).waitFor({ timeout: WAIT });
  await until("ben reading ana's message again", () => ben.reads.at(-1).includes(helloId));
  assert.ok(!ben.reads.at(-1).includes(replyId), "never one's own, from the history either");
  await openChat(ben.page, team);
  await item(ben.page, inTeam).waitFor({ timeout: WAIT });
  const afterReload = `team, after ben's reload ${TAG}`;
  await send(ana.page, afterReload);
  await item(ben.page, afterReload).waitFor({ timeout: WAIT });
  assert.equal(await item(ben.page, afterReload).count(), 1);

  // Leaving: the chat goes from the list, and general is shown.
  await ben.page.getByRole("button", { name: `Leave ${team}`, exact: true }).click();
  await chatList(ben.page).getByRole("button", { name: team, exact: true }).waitFor({ state: "detached" });
  await ben.page.getByRole("heading", { name: "general", exact: true }).waitFor();
  await openChat(ana.page, "general");
});

test("scrolling the list to its top loads older messages, in order, once each, keeping the view still", async () => {
  const chat = `hist-${TAG}`;
  const sent = await seed(plain, `seed_${TAG}`, chat, 45);
  await joinChat(ana.page, chat);
  const list = messageList(ana.page);
  // The newest page first.
  await item(ana.page, sent.at(-1)).waitFor({ timeout: WAIT });
  await until("the first page", async () => (await texts(ana.page)).length === 30);
  assert.deepEqual(await texts(ana.page), sent.slice(-30));
  let shown = 30;
  while (shown < sent.length) {
    // Scroll to the top; note where the first message shown is.
    const first = (await texts(ana.page))[0];
    const before = await list.evaluate((ul) => {
      ul.scrollTop = 0;
      return ul.firstElementChild.getBoundingClientRect().top - ul.getBoundingClientRect().top;
    });
    await until("older messages", async () => (await texts(ana.page)).length > shown);
    shown = (await texts(ana.page)).length;
    // The message that was at the top is where it was: older ones came in above it.
    const after = await item(ana.page, first).evaluate(
      (li) => li.getBoundingClientRect().top - li.parentElement.getBoundingClientRect().top,
    );
    assert.ok(Math.abs(after - before) <= 1, `the view moved from ${before} to ${after}`);
  }
  assert.deepEqual(await texts(ana.page), sent, "all 45, in order, once each");
  await openChat(ana.page, "general");
});

test("a tab on HTTP long-polling only chats the same", async () => {
  const carl = await openApp(plain, { query: "?transports=polling" });
  // Any WebSocket it tried would be refused (and counted).
  const tried = [];
  await carl.context.routeWebSocket(/.*/, (ws) => {
    tried.push(ws.url());
    ws.close();
  });
  const carlName = `carl_${TAG}`;
  await register(carl.page, carlName);
  await recordStatuses(carl.page);
  const fromCarl = `carl on polling ${TAG}`;
  await send(carl.page, fromCarl);
  await item(ana.page, fromCarl).filter({ hasText: carlName }).waitFor({ timeout: WAIT });
  await ownStatus(carl.page, fromCarl, "read");
  const log = await carl.page.evaluate((t) => window.statusLog[t], fromCarl);
  // Several events may come in one polling response, so a status may pass
  // within one task: the order is what holds.
  assert.equal(log[0], "sending");
  assert.equal(log.at(-1), "read");
  assert.deepEqual(log, [...log].sort((a, b) => rank(a) - rank(b)), log.join(" "));
  const toCarl = `ana to carl ${TAG}`;
  await send(ana.page, toCarl);
  await item(carl.page, toCarl).waitFor({ timeout: WAIT });
  await ownStatus(ana.page, toCarl, "read");
  assert.deepEqual(carl.websockets, [], "no WebSocket opened");
  assert.deepEqual(tried, []);
  assert.equal(await connection(carl.page).getAttribute("data-transport"), "polling");
  await carl.context.close();
});

// ---- offline and back -----------------------------------------------------------

// Ana goes offline in a joined chat while Ben writes there, and writes one
// herself; back online, she has Ben's messages once each and in order, her
// own can be retried, and the chat still reaches her live. Without
// recovery, her catch-up from the history is held until a message sent
// after her return has reached her live: the history then has it too, and
// it must show once.
async function offlineAndBack(server, name, { recovered }) {
  const a = await openApp(server);
  const b = await openApp(server);
  const aName = `ana_${name}_${TAG}`;
  const room = `room-${name}-${TAG}`;
  await register(a.page, aName);
  await register(b.page, `ben_${name}_${TAG}`);
  await onWebSocket(a.page);
  await joinChat(a.page, room);
  await joinChat(b.page, room);
  const first = `before the drop ${name} ${TAG}`;
  await send(b.page, first);
  await item(a.page, first).waitFor({ timeout: WAIT });

  let release;
  const gate = new Promise((resolve) => (release = resolve));
  let held;
  const catchUpAsked = new Promise((resolve) => (held = resolve));
  await a.context.route(/\/messages\?.*afterId=/, async (route) => {
    held();
    await gate;
    // Fetched from here, where the browser's host name does not resolve.
    const url = new URL(route.request().url());
    await route.fulfill({ response: await route.fetch({ url: `${server.url}${url.pathname}${url.search}` }) });
  });

  await a.context.setOffline(true);
  await connection(a.page).filter({ hasText: /^(?:offline|reconnecting)$/ }).waitFor({ timeout: WAIT });
  const mine = `written offline ${name} ${TAG}`;
  await send(a.page, mine);
  await ownStatus(a.page, mine, "failed");
  const away = [1, 2, 3].map((i) => `while ana is away ${i} ${name} ${TAG}`);
  for (const t of away) {
    await send(b.page, t);
    await ownStatus(b.page, t, "sent|delivered");
  }
  a.history.length = 0;
  await a.context.setOffline(false);
  await connected(a.page);
  if (!recovered) await catchUpAsked;
  // Live again (in the room: joined again when the connection is new).
  const live = `after ana is back ${name} ${TAG}`;
  await send(b.page, live);
  await item(a.page, live).waitFor({ timeout: WAIT });
  release();
  for (const t of away) await item(a.page, t).waitFor({ timeout: WAIT });
  const shown = await texts(a.page);
  assert.deepEqual(
    shown.filter((t) => t.startsWith("while ana is away") || t === live),
    [...away, live],
    "once each, in order",
  );
  assert.equal(shown.filter((t) => t === first).length, 1);

  await item(a.page, mine).getByRole("button", { name: "Retry", exact: true }).click();
  await ownStatus(a.page, mine, "sent|delivered|read");
  await item(b.page, mine).waitFor({ timeout: WAIT });
  assert.equal(await item(b.page, mine).count(), 1);
  await Promise.all([a.context.close(), b.context.close()]);
  return a.history.filter((u) => u.includes("afterId="));
}

test("offline and back with connection state recovery: the missed events arrive, no catch-up needed", async () => {
  const catchUps = await offlineAndBack(recovering, "rec", { recovered: true });
  assert.deepEqual(catchUps, [], "recovered: nothing read from the history");
});

test("offline and back without recovery: caught up from the history, chats joined again", async () => {
  const catchUps = await offlineAndBack(plain, "fresh", { recovered: false });
  assert.ok(catchUps.length >= 1, "GET /messages?afterId= after reconnecting");
});

// ---- logging in and out -----------------------------------------------------------

test("REST errors are shown; log out forgets the session", async () => {
  const app = await openApp(plain);
  const { page } = app;
  const alert = page.getByRole("alert");
  await logIn(page, anaName, "Register");
  await alert.filter({ hasText: "Username already taken" }).waitFor({ timeout: WAIT });
  await page.getByLabel("Username", { exact: true }).fill(anaName);
  await page.getByLabel("Password", { exact: true }).fill("wrong-password");
  await page.getByRole("button", { name: "Log in", exact: true }).click();
  await alert.filter({ hasText: "Invalid username or password" }).waitFor({ timeout: WAIT });
  await logIn(page, anaName, "Log in");
  await connected(page);
  await item(page, hello).waitFor({ timeout: WAIT });
  await page.getByRole("button", { name: "Log out", exact: true }).click();
  await page.getByLabel("Username", { exact: true }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.reload();
  await page.getByLabel("Username", { exact: true }).waitFor();
  assert.equal(await connection(page).isVisible(), false);
  await app.context.close();
});

// ---- screenshots --------------------------------------------------------------------

test("screenshots at a desktop's and a phone's width", async () => {
  // Plain names look better in the README; the store is this run's own.
  const a = await openApp(recovering);
  const b = await openApp(recovering);
  await register(a.page, "ana");
  await register(b.page, "ben");
  await joinChat(a.page, "design");
  await openChat(a.page, "general");
  const lines = [
    [b, "Morning! Is the release still on for 10:00?"],
    [a, "Yes, the migration ran clean on staging."],
    [b, "Great. I'll keep an eye on the dashboards."],
    [a, "Thanks! I'll post here once it's out."],
  ];
  for (const [who, text] of lines) {
    await send(who.page, text);
    await item(a.page, text).waitFor({ timeout: WAIT });
    await item(b.page, text).waitFor({ timeout: WAIT });
  }
  await ownStatus(a.page, lines[3][1], "read");
  await b.page.getByLabel("Message", { exact: true }).fill("Sounds");
  await typing(a.page).filter({ hasText: "ben is typing" }).waitFor({ timeout: WAIT });
  await a.page.screenshot({ path: path.join(SHOTS, "app-desktop.png") });

  await a.page.setViewportSize({ width: 390, height: 844 });
  await b.page.getByLabel("Message", { exact: true }).fill("Sounds good");
  await typing(a.page).filter({ hasText: "ben is typing" }).waitFor({ timeout: WAIT });
  // Usable at a phone's width: nothing wider than the screen, the field and
  // its button on it.
  assert.ok(await a.page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
  for (const control of [
    a.page.getByLabel("Message", { exact: true }),
    a.page.getByRole("button", { name: "Send", exact: true }),
    a.page.getByLabel("Chat", { exact: true }),
  ]) {
    const box = await control.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 390 && box.y + box.height <= 844, JSON.stringify(box));
  }
  await a.page.screenshot({ path: path.join(SHOTS, "app-phone.png") });
  await Promise.all([a.context.close(), b.context.close()]);
});

// ---- over every page --------------------------------------------------------------

test("no request left chatwire, no policy was violated, no script failed, each id was read once", async () => {
  await Promise.all([ana?.context.close(), ben?.context.close()]);
  for (const app of apps) {
    assert.deepEqual(app.outside, [], "no request leaves chatwire");
    assert.deepEqual(app.errors, [], "no script error or policy violation");
    for (const ids of app.reads) assert.equal(new Set(ids).size, ids.length, `each id read once: ${ids}`);
  }
});
