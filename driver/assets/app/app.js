// The chatwire web chat: log in, chats, messages with their delivery state,
// typing, read receipts, history, and catching up after a reconnect. Plain
// DOM and the official socket.io-client (the global `io`), no framework and
// no build step. Every piece of data reaches the page through textContent,
// never as HTML.

const PAGE = 30; // messages per history page, scrolling back
const CATCH_UP_PAGE = 100; // the most GET /messages gives at once
const ACK_TIMEOUT_MS = 10000;
// The server shows a typing user for 10 s after their last isTyping: true,
// so repeating it every 2.5 s while the user types keeps them shown, and
// 3 s without a keystroke ends it.
const TYPING_REPEAT_MS = 2500;
const TYPING_IDLE_MS = 3000;
const TYPING_SHOWN_MS = 10000;
const READ_BATCH_MS = 150;
const READ_MAX_IDS = 500;
const CHAT_ID = /^[A-Za-z0-9_.:-]{1,64}$/;
// Statuses only move forward; a failed send is as far as one being sent.
const RANK = { sending: 0, failed: 0, sent: 1, delivered: 2, read: 3 };
const SESSION_KEY = "chatwire.session";
const CHATS_KEY = "chatwire.chats";

const $ = (id) => document.getElementById(id);
const view = {
  connection: $("connection"),
  me: $("me"),
  logout: $("logout"),
  notice: $("notice"),
  loginView: $("login-view"),
  loginForm: $("login-form"),
  username: $("username"),
  password: $("password"),
  chatView: $("chat-view"),
  chats: $("chats"),
  joinForm: $("join-form"),
  chatName: $("chat-name"),
  title: $("chat-title"),
  messages: $("messages"),
  typing: $("typing"),
  sendForm: $("send-form"),
  message: $("message"),
};

// ---- state ---------------------------------------------------------------

let session = null; // {token, user: {id, username}}
let socket = null;
let current = "general";
// chat id -> {id, list (entries in display order), loaded, loading, complete,
// queue, loadingOlder, typing (user id -> {author, timer}), unread}
const chats = new Map();
// A message on the page: {id?, tempId?, chatId, author, authorId, text,
// timestamp, status?, seq, el}. Own messages have a status; ones still
// waiting for their ack have a tempId and no id yet.
const byId = new Map(); // message id -> entry, every chat: dedupes everything
const pending = new Map(); // tempId -> own entry not acknowledged yet
const early = new Map(); // message id -> status heard before its ack
let seq = 0; // creation order of the entries still without an id
// Fresh (not recovered) connections so far: a history load that saw one
// happen meanwhile may have missed what was sent in between.
let connects = 0;

// ---- helpers -------------------------------------------------------------

function notify(text) {
  view.notice.textContent = text ?? "";
}

function own(entry) {
  return entry.authorId === session?.user.id;
}

function newTempId() {
  // crypto.randomUUID needs a secure context; the page may be served over
  // plain HTTP on a LAN address.
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A REST call; rejects with the server's {"detail"} as the message.
async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (session) headers.Authorization = `Bearer ${session.token}`;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new Error("The server cannot be reached");
  }
  const data = await res.json().catch(() => null);
  if (res.ok) return data;
  const detail = typeof data?.detail === "string" ? data.detail : `${res.status} ${res.statusText}`;
  if (res.status === 401 && session) {
    logOut("Your session has ended; log in again.");
  }
  const retry = res.headers.get("Retry-After");
  throw new Error(retry ? `${detail} (try again in ${retry} s)` : detail);
}

// ---- logging in and out ----------------------------------------------------

view.loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const register = event.submitter?.value === "register";
  const username = view.username.value.trim();
  const password = view.password.value;
  notify("");
  try {
    const res = await api(register ? "/register" : "/login", {
      method: "POST",
      body: { username, password },
    });
    session = { token: res.access_token, user: res.user };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    view.password.value = "";
    start();
  } catch (err) {
    notify(err.message);
  }
});

view.logout.addEventListener("click", () => logOut(""));

function logOut(why) {
  stopTyping();
  socket?.disconnect();
  socket = null;
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  sessionStorage.removeItem(CHATS_KEY);
  chats.clear();
  current = "general";
  byId.clear();
  pending.clear();
  early.clear();
  readQueue.clear();
  readSent.clear();
  onScreen.clear();
  view.messages.replaceChildren();
  view.chats.replaceChildren();
  view.chatView.hidden = true;
  view.logout.hidden = true;
  view.connection.hidden = true;
  view.me.textContent = "";
  view.loginView.hidden = false;
  notify(why);
  view.username.focus();
}

function start() {
  view.loginView.hidden = true;
  view.chatView.hidden = false;
  view.logout.hidden = false;
  view.connection.hidden = false;
  view.me.textContent = session.user.username;
  addChat("general");
  for (const id of JSON.parse(sessionStorage.getItem(CHATS_KEY) ?? "[]")) addChat(id);
  connect();
  showConnection();
  openChat("general");
  view.message.focus();
}

// ---- the connection ---------------------------------------------------------

function connect() {
  const options = { auth: { token: session.token } };
  // ?transports=polling (or websocket) picks the transports; by default
  // socket.io-client starts with polling and upgrades to WebSocket.
  const asked = new URLSearchParams(location.search).get("transports");
  if (asked) {
    const transports = asked.split(",").filter((t) => t === "polling" || t === "websocket");
    if (transports.length) options.transports = transports;
  }
  socket = io(options);
  socket.on("connect", onConnect);
  socket.on("disconnect", onDisconnect);
  socket.on("connect_error", onConnectError);
  socket.io.on("reconnect_attempt", showConnection);
  // With connection state recovery on, every event carries its offset as an
  // extra last argument: the handlers take only the first.
  socket.on("chat:new-message", (m) => onMessage(m));
  socket.on("chat:ack", (ack) => onAck(ack));
  socket.on("chat:delivered", ({ messageId }) => raise(messageId, "delivered"));
  socket.on("chat:read", ({ messageIds, userId }) => {
    if (userId === session.user.id) return; // our own reads, from another tab
    for (const id of messageIds) raise(id, "read");
  });
  socket.on("chat:typing", (t) => onTyping(t));
  socket.on("error", (e) => onServerError(e));
}

function showConnection() {
  const connected = socket?.connected;
  view.connection.textContent = !navigator.onLine ? "offline" : connected ? "connected" : "reconnecting";
  view.connection.dataset.transport = connected ? socket.io.engine.transport.name : "";
}
window.addEventListener("online", showConnection);
window.addEventListener("offline", showConnection);

async function onConnect() {
  socket.io.engine.once("upgrade", showConnection);
  showConnection();
  flushReads(); // those seen while the connection was down
  // A recovered connection gets every event it missed, in order, and is
  // still in its chats: nothing to do.
  if (socket.recovered) return;
  connects += 1;
  for (const chat of chats.values()) clearTyping(chat);
  showTyping();
  // A fresh connection is in `general` only. Join the others first, then
  // read what was missed: a message sent in between is then either in the
  // history or live (and deduped by id if both).
  await Promise.all(
    [...chats.values()].map(async (chat) => {
      if (chat.id !== "general") {
        try {
          const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat:join", { chatId: chat.id });
          if (ack?.error) throw new Error(ack.error.message);
        } catch (err) {
          notify(`Could not rejoin ${chat.id}: ${err.message}`);
          return;
        }
      }
      if (chat.loaded) inOrder(chat, () => catchUp(chat));
    }),
  );
}

function onDisconnect(reason) {
  // The ack callbacks of sends under way have failed already (socket.io-client
  // calls them with an error); a server that let go of this socket on purpose
  // is asked again, since socket.io-client does not reconnect then.
  if (reason === "io server disconnect") socket.connect();
  stopTyping();
  showConnection();
}

function onConnectError(err) {
  // Not active: the server refused the CONNECT (the token), rather than the
  // network failing, and socket.io-client will not try again.
  if (!socket.active) {
    logOut(err.message === "Token expired" ? "Your session expired; log in again." : `Refused: ${err.message}`);
    return;
  }
  showConnection();
}

// ---- chats ------------------------------------------------------------------

function addChat(id) {
  if (chats.has(id)) return chats.get(id);
  const chat = {
    id,
    list: [],
    loaded: false,
    loading: false,
    complete: false,
    queue: Promise.resolve(),
    loadingOlder: false,
    typing: new Map(),
    unread: false,
  };
  chats.set(id, chat);
  renderChats();
  return chat;
}

function saveChats() {
  const joined = [...chats.keys()].filter((id) => id !== "general");
  sessionStorage.setItem(CHATS_KEY, JSON.stringify(joined));
}

function renderChats() {
  const items = [...chats.values()].map((chat) => {
    const li = document.createElement("li");
    const pick = li.appendChild(document.createElement("button"));
    pick.type = "button";
    pick.className = "chat-name";
    pick.textContent = chat.id;
    if (chat.id === current) pick.setAttribute("aria-current", "true");
    if (chat.unread) pick.classList.add("unread");
    pick.addEventListener("click", () => openChat(chat.id));
    if (chat.id !== "general") {
      const leave = li.appendChild(document.createElement("button"));
      leave.type = "button";
      leave.className = "leave";
      leave.textContent = "×";
      leave.setAttribute("aria-label", `Leave ${chat.id}`);
      leave.title = `Leave ${chat.id}`;
      leave.addEventListener("click", () => leaveChat(chat.id));
    }
    return li;
  });
  view.chats.replaceChildren(...items);
}

function openChat(id) {
  const chat = chats.get(id);
  if (current !== id) stopTyping();
  current = id;
  chat.unread = false;
  view.title.textContent = id;
  renderChats();
  view.messages.replaceChildren(...chat.list.map((e) => e.el));
  scrollToEnd();
  showTyping();
  if (!chat.loaded) inOrder(chat, () => loadLatest(chat));
}

view.joinForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = view.chatName.value.trim();
  if (!CHAT_ID.test(id)) {
    notify("A chat's name is 1 to 64 letters, digits or _ . : -");
    return;
  }
  if (chats.has(id)) {
    view.chatName.value = "";
    openChat(id);
    return;
  }
  if (!socket?.connected) {
    notify("Not connected: join once the connection is back.");
    return;
  }
  try {
    const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat:join", { chatId: id });
    if (ack?.error) throw new Error(ack.error.message);
  } catch (err) {
    notify(`Could not join ${id}: ${err.message}`);
    return;
  }
  notify("");
  view.chatName.value = "";
  addChat(id);
  saveChats();
  openChat(id);
});

function leaveChat(id) {
  const chat = chats.get(id);
  if (!chat) return;
  if (socket?.connected) socket.emit("chat:leave", { chatId: id });
  clearTyping(chat);
  for (const e of chat.list) {
    if (e.id) byId.delete(e.id);
    if (e.tempId) pending.delete(e.tempId);
  }
  chats.delete(id);
  saveChats();
  if (current === id) openChat("general");
  else renderChats();
}

// ---- messages -----------------------------------------------------------------

// Confirmed messages in the server's order (timestamp, then id); those
// still waiting for their ack after them, in the order they were written.
function order(a, b) {
  if (!a.id !== !b.id) return a.id ? -1 : 1;
  if (!a.id) return a.seq - b.seq;
  return a.timestamp - b.timestamp || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function fromServer(m) {
  return {
    id: m.id,
    chatId: m.chatId ?? "general",
    author: m.author,
    authorId: m.authorId,
    text: m.text,
    timestamp: m.timestamp,
    status: m.status ?? "sent",
  };
}

// Adds entries to a chat, skipping the ids it has; shows them if it is the
// open chat. `keep` is how the list's scroll position is kept: "end" (stay
// at the bottom if it was there) or "top" (older messages above: the ones
// on screen stay where they are).
function addEntries(chat, entries, keep = "end") {
  const added = [];
  if (chats.get(chat.id) !== chat) return added; // left, or logged out, meanwhile
  for (const e of entries) {
    if (e.id) {
      const had = byId.get(e.id);
      if (had) {
        // A message seen live and in the history, or again after a
        // reconnect: once, with the furthest status heard.
        if (own(had)) raise(had.id, e.status);
        continue;
      }
      byId.set(e.id, e);
      if (own(e) && early.has(e.id)) {
        e.status = maxStatus(e.status, early.get(e.id));
        early.delete(e.id);
      }
    }
    e.el = messageElement(e);
    added.push(e);
  }
  if (!added.length) return added;
  chat.list.push(...added);
  chat.list.sort(order);
  if (chat.id === current) renderList(keep);
  return added;
}

function renderList(keep) {
  const entries = chats.get(current)?.list;
  if (!entries) return;
  const list = view.messages;
  const fromBottom = list.scrollHeight - list.scrollTop;
  const atEnd = fromBottom - list.clientHeight < 40;
  // Move the elements into the order of the list, touching only those that
  // are out of place.
  entries.forEach((e, i) => {
    if (list.children[i] !== e.el) list.insertBefore(e.el, list.children[i] ?? null);
  });
  while (list.children.length > entries.length) list.lastElementChild.remove();
  if (keep === "top") list.scrollTop = list.scrollHeight - fromBottom;
  else if (atEnd) scrollToEnd();
}

function scrollToEnd() {
  view.messages.scrollTop = view.messages.scrollHeight;
}

function messageElement(e) {
  const li = document.createElement("li");
  li.className = own(e) ? "message own" : "message";
  const meta = li.appendChild(document.createElement("div"));
  meta.className = "meta";
  const author = meta.appendChild(document.createElement("span"));
  author.className = "author";
  author.textContent = e.author;
  meta.append(" ");
  meta.appendChild(document.createElement("time"));
  // The spaces keep the words apart in the item's text (a screen reader's,
  // a search's); they do not show between the blocks.
  li.append(" ");
  const text = li.appendChild(document.createElement("p"));
  text.className = "text";
  text.textContent = e.text;
  if (own(e)) {
    li.append(" ");
    const state = li.appendChild(document.createElement("div"));
    state.className = "state";
    state.appendChild(document.createElement("span")).className = "status";
  } else if (e.id) {
    watchRead(e, li);
  }
  e.el = li;
  updateElement(e);
  return li;
}

// Shows what may change after an entry is made: its id, time and status.
function updateElement(e) {
  const li = e.el;
  if (e.id) li.dataset.id = e.id;
  const time = li.querySelector("time");
  const at = new Date(e.timestamp);
  time.dateTime = at.toISOString();
  time.title = at.toLocaleString();
  const clock = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const today = at.toDateString() === new Date().toDateString();
  time.textContent = today ? clock : `${at.toLocaleDateString()} ${clock}`;
  if (!own(e)) return;
  li.querySelector(".status").textContent = e.status;
  li.dataset.status = e.status;
  // A Retry button only while the send has failed.
  const state = li.querySelector(".state");
  const retry = state.querySelector("button");
  if (e.status === "failed" && !retry) {
    state.append(" ");
    const button = state.appendChild(document.createElement("button"));
    button.type = "button";
    button.textContent = "Retry";
    button.addEventListener("click", () => emitSend(e));
  } else if (e.status !== "failed" && retry) {
    state.replaceChildren(state.firstChild);
  }
}

function setStatus(e, status, why) {
  e.status = status;
  if (e.el) {
    e.el.title = why ?? "";
    updateElement(e);
  }
}

function maxStatus(a, b) {
  return (RANK[b] ?? -1) > (RANK[a] ?? -1) ? b : a;
}

// Moves an own message's status forward. An id not known yet may be that of
// a send whose ack is still on its way: its status is kept for the ack, as
// long as some ack is awaited (so that others' reads of messages this tab
// never loaded do not pile up).
function raise(id, status) {
  const e = byId.get(id);
  if (!e) {
    if (pending.size && RANK[status] > (RANK[early.get(id)] ?? -1)) early.set(id, status);
    return;
  }
  if (own(e) && RANK[status] > RANK[e.status]) setStatus(e, status);
}

function onMessage(m) {
  const chat = chats.get(m.chatId ?? "general");
  if (!chat) return; // a chat this tab left
  // A chat whose history was never loaded gets its messages when opened;
  // keeping this one alone would leave a gap before it.
  if (chat.loaded || chat.loading) addEntries(chat, [fromServer(m)]);
  const from = chat.typing.get(m.authorId);
  if (from) {
    clearTimeout(from.timer);
    chat.typing.delete(m.authorId);
    showTyping();
  }
  if (chat.id !== current && m.authorId !== session.user.id && !chat.unread) {
    chat.unread = true;
    renderChats();
  }
}

// ---- sending ----------------------------------------------------------------

view.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendTyped();
});

view.message.addEventListener("keydown", (event) => {
  // Enter sends, Shift+Enter starts a new line.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendTyped();
  }
});

function sendTyped() {
  const text = view.message.value;
  if (!text.trim()) return;
  view.message.value = "";
  stopTyping();
  const e = {
    tempId: newTempId(),
    chatId: current,
    author: session.user.username,
    authorId: session.user.id,
    text,
    timestamp: Date.now(),
    status: "sending",
    seq: ++seq,
  };
  pending.set(e.tempId, e);
  addEntries(chats.get(current), [e]);
  scrollToEnd();
  emitSend(e);
}

// Sends (or sends again, with the same tempId: the server stores a message
// once per tempId and answers a repeat with the first ack).
function emitSend(e) {
  setStatus(e, "sending");
  if (!socket?.connected) {
    // socket.io-client would hold the event until it reconnects; the user
    // is told now instead, and retries.
    setStatus(e, "failed", "Not connected");
    return;
  }
  socket
    .timeout(ACK_TIMEOUT_MS)
    .emit("chat:send", { text: e.text, tempId: e.tempId, chatId: e.chatId }, (err, ack) => {
      if (!err && ack && !ack.error) onAck(ack);
      else if (pending.get(e.tempId) === e && e.status === "sending") {
        setStatus(e, "failed", ack?.error?.message ?? err?.message);
      }
    });
}

// The ack arrives twice (the callback, and the chat:ack event, which a
// recovered connection also replays): the first one counts.
function onAck({ tempId, id, timestamp }) {
  const e = pending.get(tempId);
  if (!e) return;
  pending.delete(tempId);
  const status = maxStatus("sent", early.get(id));
  if (!pending.size) early.clear();
  const chat = chats.get(e.chatId);
  if (!chat) return;
  chat.list.splice(chat.list.indexOf(e), 1);
  if (byId.has(id)) {
    // Already here from the history (stored before a reconnect): once.
    raise(id, "sent");
    if (chat.id === current) renderList("end");
    return;
  }
  Object.assign(e, { id, timestamp, status });
  byId.set(id, e);
  e.el.title = "";
  updateElement(e);
  chat.list.push(e);
  chat.list.sort(order);
  if (chat.id === current) renderList("end");
}

function onServerError({ message, code, tempId } = {}) {
  const e = tempId && pending.get(tempId);
  if (e) setStatus(e, "failed", message);
  else notify(code ? `${message} (${code})` : message);
}

// ---- history ------------------------------------------------------------------

// History calls of one chat run one after the other, so that each reads the
// list the previous one left.
function inOrder(chat, work) {
  // After a log out (a 401 among them) there is nothing left to say.
  chat.queue = chat.queue.then(work).catch((err) => session && notify(err.message));
  return chat.queue;
}

function history(chat, params) {
  return api(`/messages?${new URLSearchParams({ chatId: chat.id, ...params })}`);
}

// The newest page, when a chat is first opened.
async function loadLatest(chat) {
  if (chat.loaded) return;
  const connectsBefore = connects;
  chat.loading = true;
  try {
    const page = await history(chat, { limit: PAGE });
    chat.complete = page.length < PAGE;
    chat.loaded = true;
    addEntries(chat, page.map(fromServer));
  } finally {
    chat.loading = false;
  }
  if (chat.id === current) scrollToEnd();
  // A fresh connection came while the page was on its way: what was sent
  // between the two may be in neither.
  if (connectsBefore !== connects) await catchUp(chat);
  fillScreen(chat);
}

// The page before the first message shown, when the list is scrolled to
// its top.
async function loadOlder(chat) {
  const first = chat.list.find((e) => e.id);
  if (!chat.loaded || chat.complete || !first) return;
  const page = await history(chat, { beforeId: first.id, limit: PAGE });
  chat.complete = page.length < PAGE;
  addEntries(chat, page.map(fromServer), "top");
  fillScreen(chat);
}

// A list too short to scroll can never be scrolled to its top: load on
// until it scrolls or there is nothing older.
function fillScreen(chat) {
  const list = view.messages;
  if (chat.id === current && !chat.complete && list.scrollHeight <= list.clientHeight) {
    inOrder(chat, () => loadOlder(chat));
  }
}

// Everything after the last message this chat has, page by page (after a
// reconnect that did not recover).
async function catchUp(chat) {
  for (;;) {
    const last = chat.list.findLast((e) => e.id);
    if (!last) {
      chat.loaded = false;
      return loadLatest(chat);
    }
    const page = await history(chat, { afterId: last.id, limit: CATCH_UP_PAGE });
    addEntries(chat, page.map(fromServer));
    if (page.length < CATCH_UP_PAGE) return;
  }
}

view.messages.addEventListener("scroll", () => {
  const chat = chats.get(current);
  if (view.messages.scrollTop > 40 || !chat || chat.loadingOlder || chat.complete) return;
  chat.loadingOlder = true;
  inOrder(chat, () => loadOlder(chat)).finally(() => {
    chat.loadingOlder = false;
  });
});

// ---- typing -------------------------------------------------------------------

let typingIn = null; // the chat this tab told it types in
let typingSentAt = 0;
let typingIdle = 0;

view.message.addEventListener("input", () => {
  if (!view.message.value.trim()) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (typingIn !== current || now - typingSentAt >= TYPING_REPEAT_MS) {
    if (socket?.connected) {
      socket.emit("chat:typing", { chatId: current, isTyping: true });
      typingIn = current;
      typingSentAt = now;
    }
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
});

function stopTyping() {
  clearTimeout(typingIdle);
  if (typingIn && socket?.connected) socket.emit("chat:typing", { chatId: typingIn, isTyping: false });
  typingIn = null;
  typingSentAt = 0;
}

function onTyping({ userId, author, chatId, isTyping }) {
  const chat = chats.get(chatId ?? "general");
  if (!chat || userId === session.user.id) return;
  clearTimeout(chat.typing.get(userId)?.timer);
  if (isTyping) {
    // Shown until told otherwise, or until the server's own timeout would
    // have ended it (a stop that got lost).
    const timer = setTimeout(() => {
      chat.typing.delete(userId);
      showTyping();
    }, TYPING_SHOWN_MS);
    chat.typing.set(userId, { author, timer });
  } else {
    chat.typing.delete(userId);
  }
  showTyping();
}

function clearTyping(chat) {
  for (const t of chat.typing.values()) clearTimeout(t.timer);
  chat.typing.clear();
}

function showTyping() {
  const chat = chats.get(current);
  const who = chat ? [...chat.typing.values()].map((t) => `${t.author} is typing`) : [];
  view.typing.textContent = who.join(", ");
}

// ---- read receipts ------------------------------------------------------------

// Others' messages are read once they are on screen (at least 24 px of
// them inside the list) while the tab is visible; each id is sent once.
const onScreen = new Set();
const readQueue = new Set();
const readSent = new Set();
let readTimer = 0;
const sightings = new IntersectionObserver(
  (changes) => {
    for (const c of changes) {
      const id = c.target.dataset.id;
      if (c.isIntersecting) onScreen.add(id);
      else onScreen.delete(id);
    }
    queueReads();
  },
  { root: view.messages, rootMargin: "-24px 0px" },
);

function watchRead(e, li) {
  if (!readSent.has(e.id)) sightings.observe(li);
}

function queueReads() {
  if (document.visibilityState !== "visible") return;
  for (const id of onScreen) {
    const e = byId.get(id);
    if (!readSent.has(id) && e?.el.isConnected && e.chatId === current) readQueue.add(id);
  }
  if (readQueue.size && !readTimer) readTimer = setTimeout(flushReads, READ_BATCH_MS);
}
document.addEventListener("visibilitychange", queueReads);

function flushReads() {
  readTimer = 0;
  if (!socket?.connected || !readQueue.size) return; // sent on the next connect
  const ids = [...readQueue].slice(0, READ_MAX_IDS);
  for (const id of ids) {
    readQueue.delete(id);
    readSent.add(id);
    onScreen.delete(id);
    const el = byId.get(id)?.el;
    if (el) sightings.unobserve(el);
  }
  socket.emit("chat:read", { messageIds: ids });
  if (readQueue.size) readTimer = setTimeout(flushReads, READ_BATCH_MS);
}

// ---- start --------------------------------------------------------------------

try {
  session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
} catch {
  session = null;
}
if (session?.token && session.user) start();
else view.username.focus();
