// chatwire's Socket.IO chat with the official socket.io-client, over
// WebSocket and over HTTP long-polling (docs/API.md, "Socket.IO").
import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import {
  Chat,
  HEX24,
  messages,
  mint,
  noneToken,
  register,
  startChatwire,
  tampered,
  unique,
} from "../lib/chat.mjs";

let server;
let open = [];

before(async () => {
  server = await startChatwire();
});

afterEach(() => {
  for (const c of open) c.close();
  open = [];
});

after(async () => {
  await server?.stop();
});

it("chat works after the upgrade from polling to WebSocket", async () => {
  const [u, w] = await Promise.all([register(server), register(server)]);
  const opts = (user) => ({ auth: { token: user.token }, transports: ["polling", "websocket"] });
  const a = new Chat(server, "polling", opts(u));
  const b = new Chat(server, "polling", opts(w));
  open.push(a, b);
  await Promise.all([a.connected(), b.connected()]);
  for (const c of [a, b]) {
    if (c.socket.io.engine.transport.name !== "websocket") {
      await new Promise((resolve) => c.socket.io.engine.once("upgrade", resolve));
    }
    assert.equal(c.socket.io.engine.transport.name, "websocket");
  }
  const ack = await a.call("chat:send", { text: "upgraded" });
  assert.equal((await b.next("chat:new-message")).id, ack.id);
  assert.deepEqual(await a.next("chat:delivered"), { messageId: ack.id });
});

const MESSAGE_KEYS = ["author", "authorId", "chatId", "id", "status", "text", "timestamp", "type"];

for (const transport of ["websocket", "polling"]) {
  // a connected client (auth payload unless opts say otherwise)
  async function connect(user, opts = {}) {
    const c = new Chat(server, transport, user ? { auth: { token: user.token }, ...opts } : opts);
    open.push(c);
    await c.connected();
    assert.equal(c.socket.io.engine.transport.name, transport);
    return c;
  }

  function refused(opts) {
    const c = new Chat(server, transport, opts);
    open.push(c);
    return c.refused();
  }

  async function identity(c) {
    const ack = await c.call("chat:typing", { chatId: unique("who"), isTyping: false });
    return [ack.userId, ack.author];
  }

  function assertRefused(ack, err, tempId) {
    assert.deepEqual(Object.keys(ack), ["error"]);
    assert.deepEqual(Object.keys(ack.error).sort(), ["code", "message"]);
    assert.equal(ack.error.code, "invalid");
    assert.equal(typeof ack.error.message, "string");
    assert.equal(err.code, "invalid");
    assert.equal(typeof err.message, "string");
    if (tempId !== undefined) assert.equal(err.tempId, tempId);
  }

  describe(`chatwire with socket.io-client over ${transport}`, () => {
    it("connects with the token in the auth payload", async () => {
      const u = await register(server);
      const c = await connect(u);
      assert.deepEqual(await identity(c), [u.id, u.username]);
    });

    it("refuses missing, tampered, alg:none, foreign and expired tokens", async () => {
      const u = await register(server);
      const cases = [
        ["missing", {}, "Unauthorized"],
        ["empty auth", { auth: {} }, "Unauthorized"],
        ["garbage", { auth: { token: "a.b.c" } }, "Unauthorized"],
        ["tampered", { auth: { token: tampered(u.token) } }, "Unauthorized"],
        ["alg none", { auth: { token: noneToken(u.id, u.username) } }, "Unauthorized"],
        ["wrong secret", { auth: { token: mint(u.id, u.username, { secret: "y".repeat(40) }) } }, "Unauthorized"],
        ["HS512", { auth: { token: mint(u.id, u.username, { alg: "HS512" }) } }, "Unauthorized"],
        ["expired", { auth: { token: mint(u.id, u.username, { expIn: -30 }) } }, "Token expired"],
        ["expired in header", { extraHeaders: { Authorization: `Bearer ${mint(u.id, u.username, { expIn: -30 })}` } },
          "Token expired"],
      ];
      for (const [name, opts, message] of cases) {
        const err = await refused(opts);
        assert.equal(err.message, message, name);
      }
    });

    it("takes the token from an Authorization header, and from the query", async () => {
      const u = await register(server);
      const byHeader = await connect(null, { extraHeaders: { Authorization: `Bearer ${u.token}` } });
      assert.deepEqual(await identity(byHeader), [u.id, u.username]);
      const byQuery = await connect(null, { query: { token: u.token } });
      assert.deepEqual(await identity(byQuery), [u.id, u.username]);
    });

    it("prefers the auth payload, then the header, then the query", async () => {
      const [a, b, q] = await Promise.all([register(server), register(server), register(server)]);
      const all = await connect(a, { extraHeaders: { Authorization: `Bearer ${b.token}` }, query: { token: q.token } });
      assert.deepEqual(await identity(all), [a.id, a.username]);
      const headerQuery = await connect(null, {
        extraHeaders: { Authorization: `Bearer ${b.token}` },
        query: { token: q.token },
      });
      assert.deepEqual(await identity(headerQuery), [b.id, b.username]);
    });

    describe("two users, two tabs each", () => {
      let ana, bob, a1, a2, b1, b2, chatId;
      before(async () => {
        [ana, bob] = await Promise.all([register(server), register(server)]);
      });
      async function tabs() {
        [a1, a2, b1, b2] = [await connect(ana), await connect(ana), await connect(bob), await connect(bob)];
        chatId = unique("c");
        for (const s of [a1, a2, b1, b2]) assert.deepEqual(await s.call("chat:join", { chatId }), { chatId });
      }

      it("chat:send -> ack to the sender, new-message to the 3 others, delivered to the sender", async () => {
        await tabs();
        const ack = await a1.call("chat:send", {
          text: "hi 😀", tempId: "t-1", chatId, author: "mallory", authorId: bob.id, status: "read",
        });
        assert.deepEqual(Object.keys(ack).sort(), ["id", "tempId", "timestamp"]);
        assert.equal(ack.tempId, "t-1");
        assert.match(ack.id, HEX24);
        assert.equal(typeof ack.timestamp, "number");
        assert.deepEqual(await a1.next("chat:ack"), ack);
        const expected = {
          id: ack.id, chatId, author: ana.username, authorId: ana.id, text: "hi 😀",
          timestamp: ack.timestamp, status: "sent", type: "text",
        };
        for (const s of [a2, b1, b2]) {
          const m = await s.next("chat:new-message");
          assert.deepEqual(Object.keys(m).sort(), MESSAGE_KEYS);
          assert.deepEqual(m, expected);
        }
        assert.deepEqual(await a1.next("chat:delivered"), { messageId: ack.id });
        await a1.none("chat:new-message");
        for (const s of [a2, b1, b2]) {
          await s.none("chat:ack", 20);
          await s.none("chat:delivered", 20);
        }
        const [stored] = await messages(server, ana.token, { chatId });
        assert.deepEqual({ ...stored, status: "sent" }, expected);
        assert.equal(stored.status, "delivered");
      });

      it("chat:join / chat:leave: a socket outside the chat gets nothing of it", async () => {
        await tabs();
        const room = unique("room");
        assert.deepEqual(await a1.call("chat:join", { chatId: room }), { chatId: room });
        assert.deepEqual(await b1.call("chat:join", { chatId: room }), { chatId: room });
        const ack = await a1.call("chat:send", { text: "in room", chatId: room });
        assert.equal((await b1.next("chat:new-message")).id, ack.id);
        assert.deepEqual(await a1.next("chat:delivered"), { messageId: ack.id });
        await a1.call("chat:typing", { chatId: room, isTyping: true });
        assert.equal((await b1.next("chat:typing")).chatId, room);
        await b1.call("chat:read", { messageIds: [ack.id] });
        assert.deepEqual(await a1.next("chat:read"), { messageIds: [ack.id], userId: bob.id });
        for (const s of [a2, b2]) {
          await s.none("chat:new-message", 100);
          await s.none("chat:typing", 20);
          await s.none("chat:read", 20);
        }
        assert.deepEqual(await b1.call("chat:leave", { chatId: room }), { chatId: room });
        await a1.call("chat:send", { text: "after leave", chatId: room });
        for (const s of [a2, b1, b2]) await s.none("chat:new-message", 100);
        await a1.none("chat:delivered", 100);
        const statuses = (await messages(server, ana.token, { chatId: room })).map((m) => m.status);
        assert.deepEqual(statuses, ["read", "sent"]);
      });

      it("chat:typing carries the token's identity to the other sockets", async () => {
        await tabs();
        const ack = await a1.call("chat:typing", { chatId, isTyping: true, userId: bob.id, author: "mallory" });
        const expected = { userId: ana.id, author: ana.username, chatId, isTyping: true };
        assert.deepEqual(ack, expected);
        for (const s of [a2, b1, b2]) assert.deepEqual(await s.next("chat:typing"), expected);
        await a1.none("chat:typing");
      });

      it("chat:read reaches the others and /messages shows read", async () => {
        await tabs();
        const ids = [];
        for (let i = 0; i < 3; i++) ids.push((await a1.call("chat:send", { text: `r${i}`, chatId })).id);
        const ack = await b1.call("chat:read", { messageIds: ids });
        assert.deepEqual(ack, { messageIds: ids, userId: bob.id });
        for (const s of [a1, a2, b2]) assert.deepEqual(await s.next("chat:read"), { messageIds: ids, userId: bob.id });
        await b1.none("chat:read");
        const statuses = (await messages(server, ana.token, { chatId })).map((m) => m.status);
        assert.deepEqual(statuses, ["read", "read", "read"]);
      });

      it("the same tempId twice: same ack, one broadcast, one stored message", async () => {
        await tabs();
        const first = await a1.call("chat:send", { text: "once", tempId: "retry", chatId });
        const again = await a1.call("chat:send", { text: "once", tempId: "retry", chatId });
        assert.deepEqual(again, first);
        assert.deepEqual(await a2.call("chat:send", { text: "once", tempId: "retry", chatId }), first);
        assert.equal((await b1.next("chat:new-message")).id, first.id);
        await b1.none("chat:new-message", 500);
        const stored = await messages(server, ana.token, { chatId });
        assert.deepEqual(stored.map((m) => [m.id, m.timestamp]), [[first.id, first.timestamp]]);
      });
    });

    it("refuses invalid chat:send payloads with error + ack, stores nothing, stays connected", async () => {
      const [u, w] = await Promise.all([register(server), register(server)]);
      const c = await connect(u);
      const watcher = await connect(w);
      const cases = [
        ["empty text", { text: "", tempId: "v1" }],
        ["whitespace only", { text: " \t\n ", tempId: "v2" }],
        ["4001 chars", { text: "x".repeat(4001), tempId: "v3" }],
        ["4001 emoji", { text: "😀".repeat(4001), tempId: "v4" }],
        ["no text", { tempId: "v5" }],
        ["text not a string", { text: 7, tempId: "v6" }],
        ["tempId 65", { text: "ok", tempId: "t".repeat(65) }],
        ["type 33", { text: "ok", tempId: "v7", type: "y".repeat(33) }],
        ["empty chatId", { text: "ok", tempId: "v8", chatId: "" }],
        ["chatId with space", { text: "ok", tempId: "v9", chatId: "a b" }],
        ["chatId 65", { text: "ok", tempId: "v10", chatId: "c".repeat(65) }],
        ["string payload", "just text"],
        ["number payload", 42],
        ["array payload", [{ text: "hi" }]],
      ];
      for (const [name, payload] of cases) {
        const ack = await c.call("chat:send", payload);
        const err = await c.next("error");
        const tempId = typeof payload === "object" && !Array.isArray(payload) && payload.tempId?.length <= 64
          ? payload.tempId : undefined;
        assert.doesNotThrow(() => assertRefused(ack, err, tempId), name);
        assertRefused(ack, err, tempId);
      }
      await c.none("chat:ack", 20);
      await watcher.none("chat:new-message", 200);
      const mine = (await messages(server, u.token, { limit: 100 })).filter((m) => m.authorId === u.id);
      assert.deepEqual(mine, []);
      assert.ok(c.socket.connected);
      const ok = await c.call("chat:send", { text: "still here" });
      assert.match(ok.id, HEX24);
    });

    it("accepts the edges: 4000 emoji, tempId 64, type 32, chatId 64", async () => {
      const [u, w] = await Promise.all([register(server), register(server)]);
      const c = await connect(u);
      const watcher = await connect(w);
      const chatId = `Az09_.:-${unique("")}${"k".repeat(64)}`.slice(0, 64);
      await watcher.call("chat:join", { chatId });
      const payloads = [
        { text: "😀".repeat(4000), tempId: "e1", chatId },
        { text: "x", tempId: "e".repeat(64), chatId, type: "z".repeat(32) },
      ];
      for (const p of payloads) {
        const ack = await c.call("chat:send", p);
        assert.equal(ack.error, undefined, JSON.stringify(ack));
        const m = await watcher.next("chat:new-message");
        assert.equal(m.text, p.text);
        assert.equal(m.type, p.type ?? "text");
      }
      assert.equal((await messages(server, u.token, { chatId })).length, 2);
    });

    it("refuses chat:read with 0, 501 or malformed ids", async () => {
      const u = await register(server);
      const c = await connect(u);
      for (const messageIds of [[], Array(501).fill("0".repeat(24)), ["nothex"], "0".repeat(24), null]) {
        const ack = await c.call("chat:read", { messageIds });
        assertRefused(ack, await c.next("error"));
      }
      assertRefused(await c.call("chat:read", "not an object"), await c.next("error"));
      assert.ok(c.socket.connected);
    });

    it("rate limit: 60 sends at once -> the burst of 40 (plus refill) accepted, the rest rate_limited", async () => {
      const u = await register(server);
      const c = await connect(u);
      const acks = await Promise.all(
        Array.from({ length: 60 }, (_, i) => c.call("chat:send", { text: `b${i}`, tempId: `b${i}` }, 10000)),
      );
      const accepted = acks.filter((a) => !a.error);
      const limited = acks.filter((a) => a.error);
      assert.ok(accepted.length >= 40 && accepted.length <= 50, `${accepted.length} accepted`);
      for (const a of limited) assert.equal(a.error.code, "rate_limited");
      for (let i = 0; i < limited.length; i++) assert.equal((await c.next("error")).code, "rate_limited");
      const mine = (await messages(server, u.token, { limit: 100 })).filter((m) => m.authorId === u.id);
      assert.equal(mine.length, accepted.length);
      assert.ok(c.socket.connected);
    });
  });
}
