//! Connection state recovery, in Socket.IO's own protocol: what a socket
//! that lost its transport needs to come back as itself.
//!
//! With recovery on, the CONNECT reply carries a private id (`pid`) next to
//! the `sid`, and every event the server emits without asking for an ack
//! (a room's broadcast, or an emit to one socket) carries an offset as its
//! last argument and is kept in a [`Log`] for the window. A socket whose
//! transport ends leaves a [`Kept`] session behind (its sid, pid, rooms and
//! what the application knew of it). A client that connects again within
//! the window with `{pid, offset}` in its CONNECT auth gets the same sid
//! and pid, its rooms, and every logged event after its offset that would
//! have reached it, in order, once. Past the window, or with an offset the
//! log no longer holds, it connects as new.
//!
//! The log is bounded by the window and by a byte budget; the kept
//! sessions by the window and by a count. What falls out of either makes a
//! recovery fail (a fresh connection), never skip an event silently.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::id::SocketId;

/// The recovery settings: off unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a socket's session is kept after its transport ends, and
    /// how long each event is kept for it.
    pub window: Duration,
    /// The most bytes of events the log holds; the oldest go first.
    pub max_log_bytes: usize,
    /// The most sessions kept at once; the oldest go first.
    pub max_sessions: usize,
}

impl RecoveryConfig {
    /// How much of the bus's past a node of a cluster reads when it starts:
    /// the window, and the time within which every live session's state
    /// goes on the bus again, so that it learns of every session that may
    /// still come back.
    pub fn past_to_read(&self) -> Duration {
        self.window + republish_every(self.window)
    }

    /// Recovery within `window`, with the default bounds.
    pub fn new(window: Duration) -> Self {
        RecoveryConfig {
            window,
            max_log_bytes: 64 << 20,
            max_sessions: 100_000,
        }
    }
}

/// Who a logged event was for.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A room's members but the sockets with these sids.
    Room { room: String, except: Vec<String> },
    /// The one socket with this sid.
    Socket(String),
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    nsp: String,
    target: Target,
    /// The packet as sent, offset included.
    text: Bytes,
    attachments: Vec<Bytes>,
    /// In a cluster: the bus message it came in (its node and number),
    /// which is its offset on every node.
    global: Option<(String, u64)>,
}

impl Entry {
    fn size(&self) -> usize {
        let target = match &self.target {
            Target::Room { room, except } => {
                room.len() + except.iter().map(String::len).sum::<usize>()
            }
            Target::Socket(sid) => sid.len(),
        };
        // What the entry's own fields and allocations take, roughly.
        128 + self.nsp.len()
            + target
            + self.text.len()
            + self.attachments.iter().map(Bytes::len).sum::<usize>()
    }

    fn reaches(&self, nsp: &str, sid: &str, rooms: &HashSet<String>) -> bool {
        self.nsp == nsp
            && match &self.target {
                Target::Room { room, except } => {
                    rooms.contains(room) && !except.iter().any(|e| e == sid)
                }
                Target::Socket(s) => s == sid,
            }
    }
}

/// The events sent with an offset, oldest first. Offsets are consecutive
/// numbers, so the entry of offset `o` is found by arithmetic.
#[derive(Debug)]
pub(crate) struct Log {
    config: RecoveryConfig,
    entries: VecDeque<Entry>,
    /// The offset of the front entry (of the next one when empty).
    first: u64,
    bytes: usize,
    /// The local offset of each entry that came over the bus, by its
    /// global one.
    globals: HashMap<(String, u64), u64>,
}

/// The offset a client sees: the entry's global one in a cluster
/// (`<node>:<number>`, the same on every node), else its number here.
fn offset_text(local: u64, global: Option<&(String, u64)>) -> String {
    match global {
        Some((node, seq)) => format!("{node}:{seq}"),
        None => local.to_string(),
    }
}

/// Puts `,"<offset>"` before the closing `]` of an encoded event.
fn with_offset(text: &[u8], offset: &str) -> Bytes {
    let (body, close) = text.split_at(text.len().saturating_sub(1));
    debug_assert_eq!(close, b"]", "an event's data is an array");
    let mut out = BytesMut::with_capacity(text.len() + 24);
    out.put_slice(body);
    out.put_slice(b",\"");
    out.put_slice(offset.as_bytes());
    out.put_slice(b"\"]");
    out.freeze()
}

impl Log {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        Log {
            config,
            entries: VecDeque::new(),
            first: 1,
            bytes: 0,
            globals: HashMap::new(),
        }
    }

    /// The offset the next event gets.
    pub(crate) fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Logs an encoded event for `target`; returns it with its offset added.
    pub(crate) fn push(
        &mut self,
        now: Instant,
        nsp: &str,
        target: Target,
        text: &[u8],
        attachments: &[Bytes],
    ) -> Bytes {
        self.push_global(now, nsp, target, text, attachments, None)
    }

    /// [`Log::push`] for an event that came over the bus as `global`.
    pub(crate) fn push_global(
        &mut self,
        now: Instant,
        nsp: &str,
        target: Target,
        text: &[u8],
        attachments: &[Bytes],
        global: Option<(String, u64)>,
    ) -> Bytes {
        let local = self.next();
        let text = with_offset(text, &offset_text(local, global.as_ref()));
        if let Some(g) = &global {
            self.globals.insert(g.clone(), local);
        }
        let entry = Entry {
            at: now,
            nsp: nsp.to_owned(),
            target,
            text: text.clone(),
            attachments: attachments.to_vec(),
            global,
        };
        self.bytes += entry.size();
        self.entries.push_back(entry);
        self.expire(now);
        text
    }

    /// Drops what is older than the window, then the oldest while over the
    /// byte budget.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            // Due at the end of its window, as its deadline says.
            let old = front.at + self.config.window <= now;
            if !old && self.bytes <= self.config.max_log_bytes {
                break;
            }
            self.bytes -= front.size();
            if let Some(g) = &front.global {
                self.globals.remove(g);
            }
            self.entries.pop_front();
            self.first += 1;
        }
    }

    /// Forgets every logged event (the bus lost some this node never read,
    /// so what it holds may have holes): no replay starts before what is
    /// logged next.
    pub(crate) fn lose_all(&mut self) {
        self.first = self.next();
        self.entries.clear();
        self.globals.clear();
        self.bytes = 0;
    }

    /// Where a replay after the event of offset `offset` (as a client saw
    /// it) starts; `None` for an offset this log never gave or no longer
    /// holds.
    pub(crate) fn after(&self, offset: &str) -> Option<u64> {
        let local = match offset.rsplit_once(':') {
            Some((node, seq)) => *self.globals.get(&(node.to_owned(), seq.parse().ok()?))?,
            None => offset.parse::<u64>().ok()?,
        };
        local.checked_add(1)
    }

    /// When the oldest entry runs out.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.at + self.config.window)
    }

    /// Every logged event from offset `from` on that reaches socket `sid`
    /// (in `nsp`, with `rooms`), in order; `None` if the log no longer
    /// holds all of them or `from` is in its future.
    pub(crate) fn since(
        &self,
        from: u64,
        nsp: &str,
        sid: &str,
        rooms: &HashSet<String>,
    ) -> Option<Vec<(Bytes, Vec<Bytes>)>> {
        if from < self.first || from > self.next() {
            return None;
        }
        let skip = usize::try_from(from - self.first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .filter(|e| e.reaches(nsp, sid, rooms))
                .map(|e| (e.text.clone(), e.attachments.clone()))
                .collect(),
        )
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A socket's session, kept after its transport ended.
#[derive(Debug)]
pub(crate) struct Kept<D> {
    pub(crate) sid: String,
    pub(crate) nsp: String,
    pub(crate) rooms: HashSet<String>,
    /// What the application knew of it.
    pub(crate) data: D,
    /// Where its replay starts when the client names no offset: the log's
    /// next offset when it connected (it had seen nothing logged since).
    pub(crate) from: u64,
    until: Instant,
    /// The socket it was (what the application may still name it by).
    socket: SocketId,
}

/// A live socket's recovery identity.
#[derive(Debug)]
pub(crate) struct Live<D> {
    pub(crate) pid: String,
    pub(crate) data: D,
    pub(crate) from: u64,
    /// In a cluster: what the application knew of it, as the other nodes
    /// compare it.
    pub(crate) json: Option<serde_json::Value>,
    /// In a cluster: when its state last went on the bus.
    pub(crate) published: Option<Instant>,
}

/// How often a live session's state goes on the bus again, for a recovery
/// window of `window`: every half window, so that the last window and a
/// half of the bus (what a starting node reads) holds every session that
/// may still come back, however long ago it connected.
pub(crate) fn republish_every(window: Duration) -> Duration {
    (window / 2).max(crate::cluster::ALIVE_EVERY)
}

/// The sessions of sockets that may come back, and the pids of those
/// still connected.
#[derive(Debug)]
pub(crate) struct Sessions<D> {
    pub(crate) config: RecoveryConfig,
    kept: HashMap<String, Kept<D>>,
    /// Pids in the order they were kept (their expiry order, the window
    /// being one length); a pid recovered since is stale here.
    order: VecDeque<(Instant, String)>,
    pub(crate) live: HashMap<SocketId, Live<D>>,
    pub(crate) live_pids: HashMap<String, SocketId>,
    /// The pid of each kept session by the socket it was: an answer the
    /// application sends a socket after its transport ended (a `chat:ack`
    /// whose store write finished late) is logged for it to come back to.
    gone: HashMap<SocketId, String>,
}

impl<D> Sessions<D> {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        Sessions {
            config,
            kept: HashMap::new(),
            order: VecDeque::new(),
            live: HashMap::new(),
            live_pids: HashMap::new(),
            gone: HashMap::new(),
        }
    }

    /// A socket connected (or came back) with `pid`.
    pub(crate) fn connected(&mut self, socket: SocketId, live: Live<D>) {
        self.live_pids.insert(live.pid.clone(), socket);
        self.live.insert(socket, live);
    }

    /// A socket left for good: nothing is kept.
    pub(crate) fn forget(&mut self, socket: SocketId) -> Option<Live<D>> {
        let live = self.live.remove(&socket)?;
        self.live_pids.remove(&live.pid);
        Some(live)
    }

    /// A socket lost its transport: its session is kept for the window.
    pub(crate) fn keep(
        &mut self,
        now: Instant,
        socket: SocketId,
        sid: String,
        nsp: String,
        rooms: HashSet<String>,
    ) {
        let Some(live) = self.forget(socket) else {
            return;
        };
        let until = now + self.config.window;
        self.order.push_back((until, live.pid.clone()));
        self.gone.insert(socket, live.pid.clone());
        self.kept.insert(
            live.pid,
            Kept {
                sid,
                nsp,
                rooms,
                data: live.data,
                from: live.from,
                until,
                socket,
            },
        );
        while self.kept.len() > self.config.max_sessions {
            let Some((_, pid)) = self.order.pop_front() else {
                break;
            };
            self.remove(&pid);
        }
    }

    fn remove(&mut self, pid: &str) -> Option<Kept<D>> {
        let kept = self.kept.remove(pid)?;
        self.gone.remove(&kept.socket);
        Some(kept)
    }

    /// The namespace and sid of a socket whose session is kept.
    pub(crate) fn gone(&self, socket: SocketId) -> Option<(&str, &str)> {
        let kept = self.kept.get(self.gone.get(&socket)?)?;
        Some((&kept.nsp, &kept.sid))
    }

    /// The kept session of `pid`, if it has not run out.
    pub(crate) fn get(&self, now: Instant, pid: &str) -> Option<&Kept<D>> {
        self.kept.get(pid).filter(|k| now < k.until)
    }

    /// Takes the kept session of `pid`, if it has not run out.
    pub(crate) fn take(&mut self, now: Instant, pid: &str) -> Option<Kept<D>> {
        self.get(now, pid)?;
        self.remove(pid)
    }

    /// Drops the sessions whose window ended.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((until, _)) = self.order.front() {
            if *until > now {
                break;
            }
            let (until, pid) = self.order.pop_front().expect("just seen");
            if self.kept.get(&pid).is_some_and(|k| k.until == until) {
                self.remove(&pid);
            }
        }
    }

    /// When the oldest kept session runs out.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.order.front().map(|(until, _)| *until)
    }

    /// How many sessions are kept.
    pub(crate) fn kept(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn offsets_go_before_the_closing_bracket() {
        assert_eq!(&with_offset(br#"42["a",1]"#, "7")[..], br#"42["a",1,"7"]"#);
        assert_eq!(
            &with_offset(br#"42/x,["a"]"#, "n:12")[..],
            br#"42/x,["a","n:12"]"#
        );
    }

    #[test]
    fn the_log_replays_what_reached_a_socket_after_its_offset() {
        let now = Instant::now();
        let mut log = Log::new(RecoveryConfig::new(Duration::from_secs(60)));
        let room = |r: &str, except: &[&str]| Target::Room {
            room: r.into(),
            except: except.iter().map(|s| s.to_string()).collect(),
        };
        let a = log.push(now, "/", room("r", &[]), br#"42["a"]"#, &[]);
        assert_eq!(&a[..], br#"42["a","1"]"#);
        log.push(now, "/", room("other", &[]), br#"42["b"]"#, &[]);
        log.push(now, "/", room("r", &["me"]), br#"42["c"]"#, &[]);
        log.push(now, "/x", room("r", &[]), br#"42/x,["d"]"#, &[]);
        log.push(now, "/", Target::Socket("me".into()), br#"42["e"]"#, &[]);
        log.push(now, "/", Target::Socket("you".into()), br#"42["f"]"#, &[]);
        let got = |from| {
            log.since(from, "/", "me", &rooms(&["r"]))
                .map(|v| v.into_iter().map(|(t, _)| t).collect::<Vec<_>>())
        };
        assert_eq!(
            got(1).unwrap(),
            vec![
                Bytes::from_static(br#"42["a","1"]"#),
                Bytes::from_static(br#"42["e","5"]"#)
            ]
        );
        assert_eq!(got(2).unwrap(), vec![Bytes::from_static(br#"42["e","5"]"#)]);
        assert_eq!(got(7).unwrap(), Vec::<Bytes>::new());
        // An offset from the future is unknown.
        assert_eq!(got(8), None);
    }

    #[test]
    fn the_log_forgets_by_age_and_by_size_and_then_refuses_old_offsets() {
        let now = Instant::now();
        let mut config = RecoveryConfig::new(Duration::from_secs(10));
        config.max_log_bytes = 1000;
        let mut log = Log::new(config);
        let t = |s: &str| Target::Socket(s.into());
        log.push(now, "/", t("me"), br#"42["a"]"#, &[]);
        log.push(
            now + Duration::from_secs(5),
            "/",
            t("me"),
            br#"42["b"]"#,
            &[],
        );
        log.expire(now + Duration::from_secs(11));
        assert_eq!(log.len(), 1);
        assert_eq!(log.since(1, "/", "me", &rooms(&[])), None);
        assert_eq!(log.since(2, "/", "me", &rooms(&[])).unwrap().len(), 1);
        // Far over the byte budget: only what fits stays.
        let big = format!(r#"42["{}"]"#, "x".repeat(600));
        for _ in 0..5 {
            log.push(
                now + Duration::from_secs(6),
                "/",
                t("me"),
                big.as_bytes(),
                &[],
            );
        }
        assert_eq!(log.len(), 1);
        assert!(log.bytes <= 1000);
        assert_eq!(log.since(6, "/", "me", &rooms(&[])), None);
        assert_eq!(log.since(7, "/", "me", &rooms(&[])).unwrap().len(), 1);
    }

    #[test]
    fn sessions_are_kept_for_the_window_and_within_the_count() {
        let now = Instant::now();
        let mut config = RecoveryConfig::new(Duration::from_secs(10));
        config.max_sessions = 2;
        let mut s: Sessions<u32> = Sessions::new(config);
        for i in 0..3u64 {
            s.connected(
                SocketId::new(i),
                Live {
                    pid: format!("p{i}"),
                    data: i as u32,
                    from: 1,
                    json: None,
                    published: None,
                },
            );
            s.keep(
                now,
                SocketId::new(i),
                format!("s{i}"),
                "/".into(),
                rooms(&[]),
            );
        }
        // The oldest went to make room.
        assert_eq!(s.kept(), 2);
        assert!(s.take(now, "p0").is_none());
        assert_eq!(s.take(now, "p1").unwrap().sid, "s1");
        // Taken once only.
        assert!(s.take(now, "p1").is_none());
        // Past its window it is gone.
        assert!(s.take(now + Duration::from_secs(11), "p2").is_none());
        s.connected(
            SocketId::new(9),
            Live {
                pid: "p9".into(),
                data: 9,
                from: 1,
                json: None,
                published: None,
            },
        );
        s.keep(now, SocketId::new(9), "s9".into(), "/".into(), rooms(&[]));
        assert_eq!(s.gone(SocketId::new(9)), Some(("/", "s9")));
        s.expire(now + Duration::from_secs(11));
        assert_eq!(s.kept(), 0);
        assert_eq!(s.gone(SocketId::new(9)), None);
        assert!(s.live.is_empty() && s.live_pids.is_empty() && s.gone.is_empty());
    }

    /// What a deadline names is gone once that deadline is handled: a
    /// host woken at exactly the deadline must not be woken again for it
    /// (the fuzzer found the node spinning on such a deadline).
    #[test]
    fn a_deadline_handled_at_its_instant_is_spent() {
        let now = Instant::now();
        let window = Duration::from_secs(10);
        let mut log = Log::new(RecoveryConfig::new(window));
        log.push(now, "/", Target::Socket("me".into()), br#"42["a"]"#, &[]);
        let due = log.poll_timeout().unwrap();
        assert_eq!(due, now + window);
        log.expire(due);
        assert_eq!(log.poll_timeout(), None);

        let mut s: Sessions<()> = Sessions::new(RecoveryConfig::new(window));
        s.connected(
            SocketId::new(1),
            Live {
                pid: "p".into(),
                data: (),
                from: 1,
                json: None,
                published: None,
            },
        );
        s.keep(now, SocketId::new(1), "s".into(), "/".into(), rooms(&[]));
        let due = s.poll_timeout().unwrap();
        assert!(s.get(due, "p").is_none());
        s.expire(due);
        assert_eq!((s.poll_timeout(), s.kept()), (None, 0));
    }
}
