// Connection state recovery with the official socket.io-client, over
// WebSocket and over HTTP long-polling: on with RECOVERY_WINDOW_MS, off by
// default (docs/API.md, "Connection state recovery").
import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { io } from "socket.io-client";
import { mint, register, startChatwire, unique } from "../lib/chat.mjs";
import { TIMEOUT, sleep, withTimeout } from "../lib/util.mjs";

const WINDOW_MS = 2000;
let on;
let off;
let open = [];

before(async () => {
  [on, off] = await Promise.all([
    startChatwire({ RECOVERY_WINDOW_MS: String(WINDOW_MS) }),
    startChatwire(),
  ]);
});

afterEach(() => {
  for (const s of open) s.disconnect();
  open = [];
});

after(async () => {
  await Promise.all([on?.stop(), off?.stop()]);
});

// A socket.io-client socket that reconnects only when told to, and records
// every event with all its arguments.
class Client {
  constructor(server, transport, token) {
    this.events = [];
    this.waiters = [];
    this.socket = io(server.url, {
      forceNew: true,
      reconnection: false,
      timeout: TIMEOUT,
      transports: [transport],
      auth: { token },
    });
    open.push(this.socket);
    this.socket.onAny((event, ...args) => {
      this.events.push([event, ...args]);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  connected() {
    return withTimeout(
      new Promise((resolve, reject) => {
        this.socket.once("connect", resolve);
        this.socket.once("connect_error", reject);
      }),
      "connect",
    );
  }

  // Waits until `n` events named `event` have arrived; returns them all.
  async got(event, n) {
    const of = () => this.events.filter((e) => e[0] === event);
    await withTimeout(
      (async () => {
        while (of().length < n) await new Promise((resolve) => this.waiters.push(resolve));
      })(),
      `${n} ${event}`,
    );
    return of();
  }

  call(event, data) {
    return this.socket.timeout(TIMEOUT).emitWithAck(event, data);
  }

  // Loses the transport the way a dropped network does for the client (no
  // Socket.IO DISCONNECT is sent) and waits until the client knows it.
  async drop() {
    const gone = new Promise((resolve) => this.socket.once("disconnect", resolve));
    this.socket.io.engine.close();
    await withTimeout(gone, "disconnect");
  }

  // Connects again as socket.io-client's own reconnection does.
  reconnect() {
    const back = this.connected();
    this.socket.connect();
    return back;
  }
}

const texts = (events) => events.map((e) => e[1].text);

for (const transport of ["websocket", "polling"]) {
  describe(`connection state recovery over ${transport}`, () => {
    it("brings a dropped socket back with its id, its chats and every event it missed, once, in order", async () => {
      const [u, w] = await Promise.all([register(on), register(on)]);
      const a = new Client(on, transport, u.token);
      const b = new Client(on, transport, w.token);
      await Promise.all([a.connected(), b.connected()]);
      const room = unique("room");
      await a.call("chat:join", { chatId: room });
      await b.call("chat:join", { chatId: room });

      await b.call("chat:send", { text: "m1" });
      const [first] = await a.got("chat:new-message", 1);
      // A recoverable event carries its offset as an extra last argument.
      assert.equal(first.length, 3);
      assert.equal(typeof first[2], "string");
      const id = a.socket.id;

      await a.drop();
      // Missed while away: messages in general and in the joined chat, a
      // typing indicator, and what only this user's sockets hear.
      await b.call("chat:send", { text: "m2" });
      await b.call("chat:typing", { chatId: room, isTyping: true });
      await b.call("chat:send", { text: "m3", chatId: room });
      await b.call("chat:send", { text: "m4" });

      await a.reconnect();
      assert.equal(a.socket.recovered, true);
      assert.equal(a.socket.id, id);
      const all = await a.got("chat:new-message", 4);
      assert.deepEqual(texts(all), ["m1", "m2", "m3", "m4"]);
      assert.deepEqual(
        all.slice(1).map((e) => e[1].chatId),
        ["general", room, "general"],
      );
      const typing = await a.got("chat:typing", 1);
      assert.equal(typing[0][1].userId, w.id);
      // Offsets only grow, so nothing came twice.
      const offsets = all.map((e) => BigInt(e[2]));
      assert.deepEqual([...offsets].sort((x, y) => (x < y ? -1 : 1)), offsets);

      // Back in the joined chat: the next message there reaches it.
      await b.call("chat:send", { text: "m5", chatId: room });
      assert.deepEqual(texts(await a.got("chat:new-message", 5)).at(-1), "m5");
      await sleep(200);
      assert.equal(a.events.filter((e) => e[0] === "chat:new-message").length, 5);

      // Its own sends still work, and are delivered as before.
      const ack = await a.call("chat:send", { text: "from a", chatId: room });
      const [delivered] = await a.got("chat:delivered", 1);
      assert.equal(delivered[1].messageId, ack.id);
    });

    it("connects as new past the window, with another user's token, or with an offset it never sent", async () => {
      const [u, w] = await Promise.all([register(on), register(on)]);

      const late = new Client(on, transport, u.token);
      await late.connected();
      const lateId = late.socket.id;
      await late.drop();
      await sleep(WINDOW_MS + 500);
      await late.reconnect();
      assert.equal(late.socket.recovered, false);
      assert.notEqual(late.socket.id, lateId);

      // The token is checked on recovery: another user's is not this socket's.
      const stolen = new Client(on, transport, u.token);
      await stolen.connected();
      const stolenId = stolen.socket.id;
      await stolen.drop();
      stolen.socket.auth = { token: w.token };
      await stolen.reconnect();
      assert.equal(stolen.socket.recovered, false);
      assert.notEqual(stolen.socket.id, stolenId);

      // An expired token is refused outright.
      const expired = new Client(on, transport, u.token);
      await expired.connected();
      await expired.drop();
      expired.socket.auth = { token: mint(u.id, u.username, { expIn: -30 }) };
      await assert.rejects(expired.reconnect(), /Token expired/);

      // An offset from the future.
      const bad = new Client(on, transport, u.token);
      await bad.connected();
      const badId = bad.socket.id;
      await bad.drop();
      bad.socket._lastOffset = "999999999";
      await bad.reconnect();
      assert.equal(bad.socket.recovered, false);
      assert.notEqual(bad.socket.id, badId);
    });

    it("is off by default: no offset on events, and a reconnection is a new socket", async () => {
      const [u, w] = await Promise.all([register(off), register(off)]);
      const a = new Client(off, transport, u.token);
      const b = new Client(off, transport, w.token);
      await Promise.all([a.connected(), b.connected()]);
      await b.call("chat:send", { text: "plain" });
      const [event] = await a.got("chat:new-message", 1);
      assert.equal(event.length, 2);
      const id = a.socket.id;
      await a.drop();
      await b.call("chat:send", { text: "missed" });
      await a.reconnect();
      // socket.io-client leaves `recovered` undefined when the server sends no pid.
      assert.ok(!a.socket.recovered);
      assert.notEqual(a.socket.id, id);
      await sleep(300);
      assert.deepEqual(texts(a.events.filter((e) => e[0] === "chat:new-message")), ["plain"]);
    });
  });
}
