// Three chatwire instances as one chat (REDIS_URL, one MongoDB-wire store at
// $MONGODB_TEST_URL, Debian's redis-server started here: one server, or with
// REDIS_KIND=redis-cluster a three-primary Redis Cluster) behind a
// round-robin balancer written here (each HTTP request to the next
// instance, no affinity), with the official socket.io-client over polling,
// WebSocket and the upgrade (README, "Running a cluster").
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomUUID } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { after, afterEach, before, describe, it } from "node:test";
import { io } from "socket.io-client";
import { Chat, register, startChatwire } from "../lib/chat.mjs";
import { TIMEOUT, sleep, withTimeout } from "../lib/util.mjs";

let redis;
let env;
let instances = [];
let balancer;
let open = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// A redis-server without persistence on `port` (more `args` added); its process.
async function startRedisServer(port, args = []) {
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...args],
    { stdio: "ignore" },
  );
  child.once("error", (e) => {
    throw new Error(`redis-server did not start (scripts/test.sh installs Debian's): ${e.message}`);
  });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const c = net.connect(port, "127.0.0.1", () => {
        c.end();
        resolve(true);
      });
      c.once("error", () => resolve(false));
    });
    if (up) return child;
    await sleep(50);
  }
  throw new Error("redis-server did not start");
}

async function startRedis() {
  const port = await freePort();
  const child = await startRedisServer(port);
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill("SIGKILL") };
}

// Three primaries, no replicas, made one cluster by redis-cli; the URL names
// one node (chatwire finds the others).
async function startRedisCluster() {
  const dir = mkdtempSync(path.join(tmpdir(), "chatwire-redis-cluster-"));
  // A node's cluster bus listens 10000 above its port: that one must be a
  // port too.
  const ports = [];
  while (ports.length < 3) {
    const port = await freePort();
    if (port + 10000 <= 65535) ports.push(port);
  }
  const children = [];
  for (const port of ports) {
    children.push(
      await startRedisServer(port, [
        "--cluster-enabled", "yes", "--cluster-config-file", `nodes-${port}.conf`,
        "--cluster-node-timeout", "2000", "--dir", dir,
      ]),
    );
  }
  const nodes = ports.map((p) => `127.0.0.1:${p}`);
  const made = spawnSync("redis-cli", ["--cluster", "create", ...nodes, "--cluster-replicas", "0", "--cluster-yes"], {
    encoding: "utf8",
  });
  assert.equal(made.status, 0, made.stderr || made.stdout);
  for (let i = 0; i < 300; i++) {
    const ok = ports.every((p) =>
      spawnSync("redis-cli", ["-p", String(p), "CLUSTER", "INFO"], { encoding: "utf8" }).stdout.includes("cluster_state:ok"),
    );
    if (ok) {
      return {
        url: `redis://127.0.0.1:${ports[0]}`,
        stop: () => {
          for (const c of children) c.kill("SIGKILL");
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    await sleep(100);
  }
  throw new Error("the Redis Cluster did not become ok");
}

function sharedStoreUrl() {
  const base = process.env.MONGODB_TEST_URL;
  if (!base) throw new Error("the cluster tests need MONGODB_TEST_URL (scripts/test.sh starts SecantusDB)");
  const [head, query] = base.split("?");
  const [scheme, rest] = head.split("://");
  const url = `${scheme}://${rest.split("/")[0]}/cluster_js_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  return query ? `${url}?${query}` : url;
}

// The balancer: every request to the next instance in turn; a WebSocket
// picks its instance with its upgrade request, then bytes go both ways.
// It records which instances each Engine.IO session's requests reached.
function startBalancer(ports) {
  let turn = 0;
  const reached = new Map();
  const next = (url) => {
    const port = ports[turn++ % ports.length];
    const sid = new URL(url, "http://x").searchParams.get("sid");
    if (sid) reached.set(sid, (reached.get(sid) ?? new Set()).add(port));
    return port;
  };
  const server = http.createServer((req, res) => {
    const port = next(req.url);
    const up = http.request(
      { host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      },
    );
    up.once("error", () => res.destroy());
    req.pipe(up);
  });
  server.on("upgrade", (req, socket, head) => {
    const port = next(req.url);
    const up = net.connect(port, "127.0.0.1", () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    const end = () => {
      up.destroy();
      socket.destroy();
    };
    up.once("error", end);
    socket.once("error", end);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({ url: `http://127.0.0.1:${port}`, reached, close: () => server.close() });
    });
  });
}

before(async () => {
  redis = process.env.REDIS_KIND === "redis-cluster" ? await startRedisCluster() : await startRedis();
  // Connection state recovery on too: it works on the instance that held
  // the socket.
  env = { REDIS_URL: redis.url, DATABASE_URL: sharedStoreUrl(), RECOVERY_WINDOW_MS: "60000" };
  instances = await Promise.all([0, 1, 2].map(() => startChatwire(env)));
  balancer = await startBalancer(instances.map((s) => s.port));
});

afterEach(() => {
  for (const c of open) c.close();
  open = [];
});

after(async () => {
  balancer?.close();
  await Promise.all(instances.map((s) => s.stop()));
  redis?.stop();
});

// Resolves once `done()` holds (checked every 20 ms), or fails naming `what`.
function until(done, what) {
  return withTimeout((async () => { while (!done()) await sleep(20); })(), what);
}

const MODES = { polling: ["polling"], websocket: ["websocket"], upgrade: ["polling", "websocket"] };

// What each instance's bus holds back (from /metrics), for a failure to say.
async function busState() {
  const wanted = ["chatwire_bus_held_places", "chatwire_bus_outbox", "chatwire_bus_subscriptions"];
  return Promise.all(
    instances.map(async (s) => {
      try {
        const text = await (await fetch(`${s.url}/metrics`)).text();
        return text.split("\n").filter((l) => wanted.some((w) => l.startsWith(w + " "))).join(", ");
      } catch (e) {
        return `metrics: ${e.message}`;
      }
    }),
  );
}

for (const [mode, transports] of Object.entries(MODES)) {
  describe(`a cluster behind a round-robin balancer, socket.io-client over ${mode}`, () => {
    it("is one chat, with no sticky sessions", async () => {
      try {
        await oneChat(mode, transports);
      } catch (e) {
        e.message += `; the instances' bus: ${JSON.stringify(await busState())}`;
        throw e;
      }
    });
  });
}

// Two clients through the balancer, over `transports`, chat both ways.
async function oneChat(mode, transports) {
  const [u, w] = await Promise.all([register(instances[0]), register(instances[1])]);
  const a = new Chat(balancer, "polling", { auth: { token: u.token }, transports });
  const b = new Chat(balancer, "polling", { auth: { token: w.token }, transports });
  open.push(a, b);
  await Promise.all([a.connected(), b.connected()]);
  if (mode === "upgrade") {
    // The upgrade reached any instance: relayed to the holder, it goes through.
    for (const c of [a, b]) {
      if (c.socket.io.engine.transport.name !== "websocket") {
        await withTimeout(new Promise((resolve) => c.socket.io.engine.once("upgrade", resolve)), "upgrade");
      }
      assert.equal(c.socket.io.engine.transport.name, "websocket");
    }
  }
  for (let k = 0; k < 5; k++) {
    const ack = await a.call("chat:send", { text: `a${k}` });
    assert.equal((await b.next("chat:new-message")).id, ack.id);
    assert.deepEqual(await a.next("chat:delivered"), { messageId: ack.id });
    const back = await b.call("chat:send", { text: `b${k}` });
    assert.equal((await a.next("chat:new-message")).id, back.id);
  }
  const typing = await b.call("chat:typing", { isTyping: true });
  assert.equal((await a.next("chat:typing")).userId, typing.userId);
  if (mode === "polling") {
    // Each client's session was served through more than one instance.
    const spread = [a, b].map((c) => balancer.reached.get(c.socket.io.engine.id)?.size ?? 0);
    assert.ok(spread.every((n) => n > 1), `instances reached: ${spread}`);
  }
}

// A recovering client `a` on instance `holder` (its `chat:new-message`
// texts and offsets in `got`) and a sender `b` on instance `sender`, once
// `a` got b's message "before".
async function recoveringPair(holder, sender) {
  const [u, w] = await Promise.all([register(holder), register(sender)]);
  const a = io(holder.url, { forceNew: true, reconnection: false, transports: ["websocket"], auth: { token: u.token } });
  const got = [];
  a.on("chat:new-message", (m, offset) => got.push([m.text, offset]));
  open.push({ close: () => a.disconnect() });
  await withTimeout(new Promise((resolve) => a.once("connect", resolve)), "connect");
  const b = new Chat(sender, "websocket", { auth: { token: w.token } });
  open.push(b);
  await b.connected();
  await b.call("chat:send", { text: "before" });
  await until(() => got.length >= 1, "before");
  return { a, b, w, got, id: a.id };
}

// `a` connects again (to `url` if given, as behind a balancer); resolves
// once it is connected.
async function reconnect(a, url) {
  if (url) a.io.uri = url;
  const back = new Promise((resolve, reject) => {
    a.once("connect", resolve);
    a.once("connect_error", reject);
  });
  a.connect();
  await withTimeout(back, "reconnect", TIMEOUT);
}

describe("connection state recovery in a cluster", () => {
  it("brings a socket back on its instance with what other instances sent meanwhile", async () => {
    const { a, b, got, id } = await recoveringPair(instances[0], instances[1]);
    const gone = new Promise((resolve) => a.once("disconnect", resolve));
    a.io.engine.close();
    await withTimeout(gone, "disconnect");
    await b.call("chat:send", { text: "missed 1" });
    await b.call("chat:send", { text: "missed 2" });
    await reconnect(a);
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    await until(() => got.length >= 3, "the missed messages");
    await sleep(200);
    assert.deepEqual(got.map(([t]) => t), ["before", "missed 1", "missed 2"]);
  });
});

describe("connection state recovery when an instance dies", () => {
  // It kills one of the three instances (the test after it, all of them).
  it("brings a socket back on another instance, with every event it missed, once", async () => {
    const { a, b, got, id } = await recoveringPair(instances[2], instances[0]);
    const gone = new Promise((resolve) => a.once("disconnect", resolve));
    instances[2].child.kill("SIGKILL");
    await withTimeout(gone, "disconnect");
    await b.call("chat:send", { text: "missed 1" });
    await b.call("chat:send", { text: "missed 2" });
    // Back through another instance, as a client behind a balancer would be.
    await reconnect(a, instances[1].url);
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    await until(() => got.length >= 3, "the missed messages");
    const after = await b.call("chat:send", { text: "after" });
    await until(() => got.length >= 4, "after");
    await sleep(200);
    assert.deepEqual(got.map(([t]) => t), ["before", "missed 1", "missed 2", "after"]);
    assert.ok(after.id);
    // Offsets name bus messages, the same on every instance, and never repeat.
    assert.equal(new Set(got.map(([, o]) => o)).size, 4);
  });
});

// Resolves once GET /ready answers 200 (the instance has read the bus's past).
function ready(server) {
  const ok = () => new Promise((resolve) => {
    http.get(`${server.url}/ready`, (r) => {
      r.resume();
      resolve(r.statusCode === 200);
    }).once("error", () => resolve(false));
  });
  return withTimeout((async () => { while (!(await ok())) await sleep(50); })(), "ready", TIMEOUT);
}

describe("connection state recovery after every instance restarted", () => {
  // Last in this file: it kills every instance and starts three new ones.
  it("brings a socket back on a new instance, with every event it missed, once", async () => {
    const { a, b, w, got, id } = await recoveringPair(instances[0], instances[1]);
    const gone = new Promise((resolve) => a.once("disconnect", resolve));
    a.io.engine.close();
    await withTimeout(gone, "disconnect");
    const missed = [await b.call("chat:send", { text: "missed 1" }), await b.call("chat:send", { text: "missed 2" })];
    // Every instance dies at once, right after the acks (an acked message's
    // event is on the stream by then); three new processes take their places.
    for (const s of instances) s.child.kill("SIGKILL");
    await Promise.all(instances.map((s) => s.stop()));
    instances = await Promise.all([0, 1, 2].map(() => startChatwire(env)));
    await Promise.all(instances.map(ready));
    await reconnect(a, instances[2].url);
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    await until(() => got.length >= 3, "the missed messages");
    await sleep(200);
    assert.deepEqual(got.map(([t]) => t), ["before", "missed 1", "missed 2"]);
    // The messages are the stored ones, and the chats are hers again.
    const after = new Chat(instances[0], "websocket", { auth: { token: w.token } });
    open.push(after);
    await after.connected();
    const sent = await after.call("chat:send", { text: "after" });
    await until(() => got.length >= 4, "after");
    assert.deepEqual(got.map(([t]) => t), ["before", "missed 1", "missed 2", "after"]);
    assert.ok(missed.every((m) => m.id) && sent.id);
  });
});
