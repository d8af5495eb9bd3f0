// Helpers for the chatwire e2e tests with socket.io-client: a chatwire
// server, users, tokens (HMAC JWTs built here, no dependency), and a client
// that records the chat events.
import { createHmac, randomUUID } from "node:crypto";
import { io } from "socket.io-client";
import { chatwireBin, startServer } from "./server.mjs";
import { TIMEOUT, sleep, withTimeout } from "./util.mjs";

export const JWT_SECRET = "e2e-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
export const PASSWORD = "secret-pw";
export const HEX24 = /^[0-9a-f]{24}$/;
export const QUIET = 400;
const CHAT_EVENTS = ["chat:new-message", "chat:ack", "chat:typing", "chat:delivered", "chat:read", "error"];

// The store a test chatwire uses: in memory, or with E2E_CHAT_STORE=mongo a
// fresh database on the MongoDB-wire server at $MONGODB_TEST_URL.
export function chatStoreUrl() {
  if ((process.env.E2E_CHAT_STORE ?? "memory") !== "mongo") return "memory:";
  const base = process.env.MONGODB_TEST_URL;
  if (!base) throw new Error("E2E_CHAT_STORE=mongo needs MONGODB_TEST_URL");
  const [head, query] = base.split("?");
  const [scheme, rest] = head.split("://");
  const url = `${scheme}://${rest.split("/")[0]}/e2e_${randomUUID().replaceAll("-", "").slice(0, 16)}`;
  return query ? `${url}?${query}` : url;
}

// A chatwire on its store (`chatStoreUrl`) with fast bcrypt.
export function startChatwire(env = {}) {
  return startServer([], {
    bin: chatwireBin(),
    env: {
      DATABASE_URL: chatStoreUrl(),
      JWT_SECRET,
      JWT_ALGORITHM: "HS256",
      BCRYPT_COST: "4",
      // CHATWIRE_LOG (a RUST_LOG filter) makes the servers say more.
      RUST_LOG: process.env.CHATWIRE_LOG ?? "warn",
      // The suites register many users from one address: no login throttles.
      AUTH_RATE_PER_MINUTE: "1000000",
      AUTH_BURST: "1000000",
      LOGIN_FAILURES_PER_HOUR: "1000000",
      LOGIN_FAILURE_BURST: "1000000",
      ...env,
    },
  });
}

export const unique = (prefix = "u") => `${prefix}_${randomUUID().replaceAll("-", "").slice(0, 12)}`;

// ------------------------------------------------------------------ tokens

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");

export function mint(sub, username, { expIn = 3600, alg = "HS256", secret = JWT_SECRET } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64({ alg, typ: "JWT" })}.${b64({ sub, username, iat: now, exp: now + expIn })}`;
  const hash = { HS256: "sha256", HS384: "sha384", HS512: "sha512" }[alg];
  const sig = createHmac(hash, secret).update(head).digest("base64url");
  return `${head}.${sig}`;
}

export function noneToken(sub, username) {
  const now = Math.floor(Date.now() / 1000);
  return `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub, username, iat: now, exp: now + 3600 })}.`;
}

export function tampered(token) {
  const [h, p, s] = token.split(".");
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  claims.username = "mallory";
  return `${h}.${b64(claims)}.${s}`;
}

// ------------------------------------------------------------------ REST

export async function register(server, username = unique()) {
  const r = await fetch(`${server.url}/register`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  const body = await r.json();
  if (r.status !== 201) throw new Error(`register ${username}: ${r.status} ${JSON.stringify(body)}`);
  return { username, token: body.access_token, id: body.user.id };
}

export async function messages(server, token, params = {}) {
  const q = new URLSearchParams(params).toString();
  const r = await fetch(`${server.url}/messages${q ? `?${q}` : ""}`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`/messages: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

// ------------------------------------------------------------------ Socket.IO

// A socket.io-client socket with one queue per chat event.
export class Chat {
  constructor(server, transport, opts = {}) {
    this.queues = Object.fromEntries(CHAT_EVENTS.map((e) => [e, []]));
    this.waiters = Object.fromEntries(CHAT_EVENTS.map((e) => [e, []]));
    this.socket = io(server.url, {
      forceNew: true,
      reconnection: false,
      timeout: TIMEOUT,
      transports: [transport],
      ...opts,
    });
    for (const event of CHAT_EVENTS) {
      this.socket.on(event, (data) => {
        const waiter = this.waiters[event].shift();
        if (waiter) waiter(data);
        else this.queues[event].push(data);
      });
    }
  }

  // resolves on connect, rejects with the connect_error
  connected() {
    return withTimeout(
      new Promise((resolve, reject) => {
        this.socket.once("connect", () => resolve(this));
        this.socket.once("connect_error", reject);
      }),
      "connect",
    );
  }

  // the connect_error's Error
  async refused() {
    try {
      await this.connected();
    } catch (err) {
      this.socket.close();
      return err;
    }
    this.socket.close();
    throw new Error("connected, but a refusal was expected");
  }

  next(event, ms = TIMEOUT) {
    if (this.queues[event].length) return Promise.resolve(this.queues[event].shift());
    return withTimeout(new Promise((resolve) => this.waiters[event].push(resolve)), `${event}`, ms);
  }

  // asserts that no `event` arrives within `ms`
  async none(event, ms = QUIET) {
    await sleep(ms);
    if (this.queues[event].length) {
      throw new Error(`unexpected ${event}: ${JSON.stringify(this.queues[event][0])}`);
    }
  }

  call(event, data, ms = TIMEOUT) {
    return this.socket.timeout(ms).emitWithAck(event, data);
  }

  close() {
    this.socket.disconnect();
  }
}
