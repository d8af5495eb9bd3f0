// The client side of scripts/container-test.sh, against a chatwire in a
// container (its URL given, its JWT_SECRET the e2e one from lib/chat.mjs):
//
//   node container/drive.mjs send  URL STATE   register a user over REST, send a
//                                              message with socket.io-client over
//                                              WebSocket, check its ack (callback
//                                              and chat:ack event), save to STATE
//   node container/drive.mjs check URL STATE   the same user's token finds the
//                                              message through GET /messages
//
// Exits non-zero, with the reason, when anything differs.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { Chat, HEX24, messages, register, unique } from "../lib/chat.mjs";

const [mode, url, statePath] = process.argv.slice(2);
if (!["send", "check"].includes(mode) || !url || !statePath) {
  console.error("usage: drive.mjs send|check URL STATE");
  process.exit(2);
}
const server = { url };

async function send() {
  const user = await register(server, unique("box"));
  const chatId = unique("c");
  const text = `from the container test ${unique("t")}`;
  const chat = new Chat(server, "websocket", { auth: { token: user.token } });
  try {
    await chat.connected();
    assert.equal(chat.socket.io.engine.transport.name, "websocket");
    assert.deepEqual(await chat.call("chat:join", { chatId }), { chatId });
    const ack = await chat.call("chat:send", { text, tempId: "ct-1", chatId });
    assert.deepEqual(Object.keys(ack).sort(), ["id", "tempId", "timestamp"], JSON.stringify(ack));
    assert.equal(ack.tempId, "ct-1");
    assert.match(ack.id, HEX24);
    assert.deepEqual(await chat.next("chat:ack"), ack);
    // read back before the restart too: the same process has it
    const [stored] = await messages(server, user.token, { chatId });
    assert.equal(stored?.id, ack.id);
    writeFileSync(statePath, JSON.stringify({ user, chatId, text, ack }));
    console.log(`sent ${ack.id} as ${user.username}, acked`);
  } finally {
    chat.close();
  }
}

async function check() {
  const { user, chatId, text, ack } = JSON.parse(readFileSync(statePath, "utf8"));
  const found = await messages(server, user.token, { chatId });
  assert.equal(found.length, 1, JSON.stringify(found));
  const [m] = found;
  assert.equal(m.id, ack.id);
  assert.equal(m.text, text);
  assert.equal(m.chatId, chatId);
  assert.equal(m.authorId, user.id);
  assert.equal(m.author, user.username);
  assert.equal(m.timestamp, ack.timestamp);
  console.log(`found ${m.id} after the restart, with the first container's token`);
}

try {
  await (mode === "send" ? send() : check());
  process.exit(0);
} catch (err) {
  console.error(`drive.mjs ${mode}: ${err.stack ?? err}`);
  process.exit(1);
}
