// End-to-end tests with the official socket.io-client, over HTTP long-polling
// only, WebSocket only, and the default (long-polling upgraded to WebSocket).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { io } from "socket.io-client";
import { startServer } from "../lib/server.mjs";
import { TIMEOUT, withTimeout } from "../lib/util.mjs";

const MODES = {
  polling: ["polling"],
  websocket: ["websocket"],
  upgrade: undefined, // the client's default: polling first, then the upgrade
};
const BIN1 = Buffer.from([1, 2, 3]);
const BIN2 = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const RECORDED = new Set(["auth", "message-back", "call-result"]);

let server;
const sockets = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const s of sockets) s.disconnect();
  await server?.stop();
});

// Binary arrives as Buffer in Node; accept any binary view, compare as Buffer.
function norm(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(norm);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, norm(v)]));
  }
  return value;
}

// Records the events the server sends, in order.
class Recorder {
  constructor(socket) {
    this.queue = [];
    this.waiters = [];
    socket.onAny((event, ...args) => {
      if (!RECORDED.has(event)) return;
      const item = { event, args: norm(args) };
      const waiter = this.waiters.shift();
      if (waiter) waiter(item);
      else this.queue.push(item);
    });
  }

  async next(name) {
    const item =
      this.queue.shift() ??
      (await withTimeout(new Promise((resolve) => this.waiters.push(resolve)), `event ${name}`));
    assert.equal(item.event, name, `expected ${name}, got ${item.event} ${JSON.stringify(item.args)}`);
    return item.args;
  }

  empty() {
    return this.queue.length === 0;
  }
}

function open(mode, { ns = "", auth } = {}) {
  const opts = { forceNew: true, reconnection: false, timeout: TIMEOUT };
  if (MODES[mode]) opts.transports = MODES[mode];
  if (auth !== undefined) opts.auth = auth;
  const socket = io(server.url + ns, opts);
  sockets.push(socket);
  const events = new Recorder(socket);
  const upgraded =
    mode === "upgrade"
      ? new Promise((resolve) => socket.io.engine.once("upgrade", (t) => resolve(t.name)))
      : null;
  return { socket, events, upgraded };
}

function waitConnect(socket) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    }),
    "connect",
  );
}

async function connect(mode, options) {
  const c = open(mode, options);
  await waitConnect(c.socket);
  assert.equal(c.socket.connected, true);
  if (mode === "upgrade") {
    assert.equal(await withTimeout(c.upgraded, "the upgrade"), "websocket");
    assert.equal(c.socket.io.engine.transport.name, "websocket");
  } else {
    assert.equal(c.socket.io.engine.transport.name, mode);
  }
  return c;
}

async function sessionGone(engineId) {
  const url = `${server.url}/socket.io/?EIO=4&transport=polling&sid=${engineId}`;
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    const res = await fetch(url);
    await res.arrayBuffer();
    if (res.status === 400) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

for (const mode of Object.keys(MODES)) {
  describe(`socket.io-client over ${mode}`, () => {
    it("connects with auth, echoed by the server's auth event", async () => {
      const auth = { token: "abc", n: 1, nested: { ok: true } };
      const { socket, events } = await connect(mode, { auth });
      assert.deepEqual(await events.next("auth"), [auth]);
      assert.equal(typeof socket.id, "string");
      socket.disconnect();
    });

    it("connects without auth: auth event carries {}", async () => {
      const { socket, events } = await connect(mode);
      assert.deepEqual(await events.next("auth"), [{}]);
      socket.disconnect();
    });

    it("emits and receives (message / message-back)", async () => {
      const { socket, events } = await connect(mode);
      await events.next("auth");
      const args = [1, "2", { 3: [true, null] }, 4.5, ["x", { y: "z" }]];
      socket.emit("message", ...args);
      assert.deepEqual(await events.next("message-back"), args);
      socket.emit("message", "héllo 😀");
      assert.deepEqual(await events.next("message-back"), ["héllo 😀"]);
      for (let i = 0; i < 20; i++) socket.emit("message", i);
      const got = [];
      for (let i = 0; i < 20; i++) got.push((await events.next("message-back"))[0]);
      assert.deepEqual(got, [...Array(20).keys()]);
      socket.disconnect();
    });

    it("gets acks from the server (client -> server)", async () => {
      const { socket, events } = await connect(mode);
      await events.next("auth");
      assert.equal(await withTimeout(socket.emitWithAck("message-with-ack", "single"), "ack"), "single");
      const multi = await withTimeout(
        new Promise((resolve) => socket.emit("message-with-ack", 1, "2", { 3: [false] }, (...a) => resolve(a))),
        "ack",
      );
      assert.deepEqual(multi, [1, "2", { 3: [false] }]);
      const many = await withTimeout(
        Promise.all([0, 1, 2, 3, 4].map((i) => socket.emitWithAck("message-with-ack", { i }))),
        "acks",
      );
      assert.deepEqual(many, [0, 1, 2, 3, 4].map((i) => ({ i })));
      socket.disconnect();
    });

    it("answers the server's ack requests (server -> client)", async () => {
      const c = open(mode);
      const received = new Promise((resolve) => {
        c.socket.on("call-back", (...args) => {
          const ack = args.pop();
          assert.equal(typeof ack, "function", "call-back must carry an ack request");
          resolve(args);
          ack("acked", { k: [1, 2] }, 3);
        });
      });
      await waitConnect(c.socket);
      await c.events.next("auth");
      c.socket.emit("call-me", "a", 2, { b: null });
      assert.deepEqual(await withTimeout(received, "call-back"), ["a", 2, { b: null }]);
      assert.deepEqual(await c.events.next("call-result"), ["acked", { k: [1, 2] }, 3]);
      c.socket.disconnect();
    });

    it("carries binary both ways: events, client acks, server acks", async () => {
      const c = open(mode);
      c.socket.on("call-back", (...args) => args.pop()(Buffer.from([0xff, 0, 0x61]), { nested: BIN1 }));
      await waitConnect(c.socket);
      await c.events.next("auth");

      c.socket.emit("message", BIN1, "text", { bin: BIN2, list: [BIN1, 1] });
      const back = await c.events.next("message-back");
      assert.ok(Buffer.isBuffer(back[0]));
      assert.deepEqual(back, [BIN1, "text", { bin: BIN2, list: [BIN1, 1] }]);

      const acked = await withTimeout(
        new Promise((resolve) => c.socket.emit("message-with-ack", BIN2, 7, (...a) => resolve(norm(a)))),
        "binary ack",
      );
      assert.deepEqual(acked, [BIN2, 7]);

      c.socket.emit("call-me", BIN1);
      assert.deepEqual(await c.events.next("call-result"), [Buffer.from([0xff, 0, 0x61]), { nested: BIN1 }]);
      c.socket.disconnect();
    });

    it("works on the custom namespace", async () => {
      const { socket, events } = await connect(mode, { ns: "/custom", auth: { token: "custom" } });
      assert.deepEqual(await events.next("auth"), [{ token: "custom" }]);
      socket.emit("message", "on custom", BIN1);
      assert.deepEqual(await events.next("message-back"), ["on custom", BIN1]);
      const acked = await withTimeout(
        new Promise((resolve) => socket.emit("message-with-ack", "ack", 1, (...a) => resolve(a))),
        "ack",
      );
      assert.deepEqual(acked, ["ack", 1]);
      socket.disconnect();
    });

    it("gets connect_error 'Invalid namespace' for an unknown namespace", async () => {
      const { socket } = open(mode, { ns: "/random" });
      const err = await withTimeout(
        new Promise((resolve, reject) => {
          socket.once("connect_error", resolve);
          socket.once("connect", () => reject(new Error("connected to an unknown namespace")));
        }),
        "connect_error",
      );
      assert.equal(err.message, "Invalid namespace");
      assert.equal(socket.connected, false);
      socket.disconnect();
    });

    it("disconnects (the server sees it) and reconnects", async () => {
      const { socket, events } = await connect(mode, { auth: { round: 1 } });
      assert.deepEqual(await events.next("auth"), [{ round: 1 }]);
      const engineId = socket.io.engine.id;
      assert.equal(typeof engineId, "string");
      const reason = new Promise((resolve) => socket.once("disconnect", resolve));
      socket.disconnect();
      assert.equal(socket.connected, false);
      assert.equal(await withTimeout(reason, "disconnect"), "io client disconnect");
      assert.ok(await sessionGone(engineId), "the server kept the session after the client disconnected");

      socket.auth = { round: 2 };
      socket.connect();
      await waitConnect(socket);
      assert.equal(socket.connected, true);
      assert.notEqual(socket.io.engine.id, engineId);
      assert.deepEqual(await events.next("auth"), [{ round: 2 }]);
      socket.emit("message", "again");
      assert.deepEqual(await events.next("message-back"), ["again"]);
      assert.equal(await withTimeout(socket.emitWithAck("message-with-ack", "again"), "ack"), "again");
      socket.disconnect();
    });

    it("keeps two clients independent", async () => {
      const a = await connect(mode, { auth: { who: "a" } });
      const b = await connect(mode, { auth: { who: "b" } });
      assert.deepEqual(await a.events.next("auth"), [{ who: "a" }]);
      assert.deepEqual(await b.events.next("auth"), [{ who: "b" }]);
      a.socket.emit("message", "from a");
      b.socket.emit("message", "from b");
      assert.deepEqual(await a.events.next("message-back"), ["from a"]);
      assert.deepEqual(await b.events.next("message-back"), ["from b"]);
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(a.events.empty(), "message-back must go to the sender only");
      a.socket.disconnect();
      b.socket.disconnect();
    });

    it("outlives many heartbeats (pingInterval 300 ms, pingTimeout 200 ms)", async () => {
      const { socket, events } = await connect(mode);
      await events.next("auth");
      let closed = false;
      socket.on("disconnect", () => (closed = true));
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(closed, false);
      assert.equal(socket.connected, true);
      socket.emit("message", "after heartbeats");
      assert.deepEqual(await events.next("message-back"), ["after heartbeats"]);
      socket.disconnect();
    });

    if (mode === "upgrade") {
      it("delivers events emitted while the upgrade is under way", async () => {
        const c = open(mode);
        c.socket.on("connect", () => {
          for (let i = 0; i < 10; i++) c.socket.emit("message", i, BIN1);
        });
        await waitConnect(c.socket);
        await c.events.next("auth");
        for (let i = 0; i < 10; i++) assert.deepEqual(await c.events.next("message-back"), [i, BIN1]);
        assert.equal(await withTimeout(c.upgraded, "the upgrade"), "websocket");
        c.socket.emit("message", "after");
        assert.deepEqual(await c.events.next("message-back"), ["after"]);
        c.socket.disconnect();
      });
    }
  });
}

describe("server process", () => {
  it("is still running after all scenarios", () => {
    assert.ok(server.alive());
  });
});
