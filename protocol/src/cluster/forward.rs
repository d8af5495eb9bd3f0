//! No sticky sessions, without IO: in a cluster an Engine.IO session id
//! starts with the name of the node that holds the session, and a polling
//! request that reaches another node goes to the holder over the cluster's
//! bus and its answer comes back the same way, answered as if it had
//! arrived there.
//!
//! A WebSocket upgrade that reaches another node is relayed: that node
//! keeps the client's connection and carries its frames to the holder over
//! the bus, and the holder's frames (and close) back, so the session is
//! upgraded as if the connection had reached the holder.
//!
//! What goes between the two nodes is words of the bus's vocabulary
//! ([`Word::Request`] to [`Word::WsClose`]), each to the inbox of the node
//! it is for ([`Word::topic`]), which runs it here ([`crate::Node`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bus::{Entry, WireFrame, Word};
use crate::deadlines::Deadlines;
use crate::host::{ConnId, Frame, HttpResponse, Method, RequestId};

/// What separates a node's name from the rest of a session id.
pub const SEPARATOR: char = '.';

/// How long a forwarded request waits for its answer (a long-poll is held
/// at most a ping interval) before it is answered as for an unknown
/// session: the node that held it is gone.
pub const FORWARD_WAIT: Duration = Duration::from_secs(60);

/// The node a session id names, if it names one.
pub fn owner(sid: &str) -> Option<&str> {
    sid.split_once(SEPARATOR).map(|(node, _)| node)
}

/// The node other than `node` that holds the session an Engine.IO query
/// names, if it names one: where a request with that query belongs.
pub fn elsewhere<'q>(node: &str, query: &'q str) -> Option<&'q str> {
    let q = crate::eio::parse_query(query).ok()?;
    let holder = owner(q.sid?)?;
    (holder != node).then_some(holder)
}

/// What a node does with a word between two nodes that is for it
/// ([`Forwarding::take`]).
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// Run a polling request another node forwarded, under this number.
    Http {
        req: RequestId,
        method: Method,
        query: String,
        authorization: Option<String>,
        body: String,
    },
    /// The answer to one of this node's requests: for its host.
    Answer {
        req: RequestId,
        response: HttpResponse,
    },
    /// A request run here for another node lost its client.
    Aborted(RequestId),
    /// A WebSocket of another node's, relayed here as this connection.
    WsOpen {
        conn: ConnId,
        query: String,
        authorization: Option<String>,
    },
    /// A frame from the client of a connection relayed here.
    Frame { conn: ConnId, frame: Frame },
    /// The client of a connection relayed here went away.
    WsClosed(ConnId),
    /// A frame the holder writes to a connection this node relays.
    WsFrame { conn: ConnId, frame: Frame },
    /// The holder closes a connection this node relays.
    WsClose { conn: ConnId, code: u16 },
}

/// The content types the engine answers with, by name.
fn content_type(name: &str) -> &'static str {
    match name {
        "application/json" => "application/json",
        "text/html" => "text/html",
        _ => "text/plain; charset=UTF-8",
    }
}

/// The host's request numbers and the ones a node gives the requests it
/// runs for other nodes live apart: these have the top bit set.
const THEIRS: u64 = 1 << 63;

/// A node's forwarding state.
#[derive(Debug)]
pub(crate) struct Forwarding {
    pub(crate) node: String,
    /// This node's requests sent to another node: when each gives up, and
    /// the node it went to.
    sent: HashMap<RequestId, (Instant, String)>,
    deadlines: Deadlines<RequestId>,
    /// Requests run here for other nodes: ours -> (their node, their number).
    running: HashMap<RequestId, (String, u64)>,
    next: u64,
    /// This node's WebSocket connections relayed to the node holding their
    /// session.
    relays: HashMap<ConnId, String>,
    /// Connections of other nodes relayed here: ours -> (their node, their
    /// connection), and back.
    hosted: HashMap<ConnId, (String, u64)>,
    hosts: HashMap<(String, u64), ConnId>,
}

impl Forwarding {
    pub(crate) fn new(node: String) -> Self {
        Forwarding {
            node,
            sent: HashMap::new(),
            deadlines: Deadlines::new(),
            running: HashMap::new(),
            next: 0,
            relays: HashMap::new(),
            hosted: HashMap::new(),
            hosts: HashMap::new(),
        }
    }

    /// The node a polling request should go to, when it is another one.
    pub(crate) fn elsewhere<'q>(&self, query: &'q str) -> Option<&'q str> {
        elsewhere(&self.node, query)
    }

    /// Sends request `req` to `to`: the message to publish.
    #[allow(clippy::too_many_arguments)] // one request's parts
    pub(crate) fn send(
        &mut self,
        now: Instant,
        to: &str,
        req: RequestId,
        method: Method,
        query: &str,
        authorization: Option<&str>,
        body: &str,
    ) -> Entry {
        let until = now + FORWARD_WAIT;
        self.sent.insert(req, (until, to.to_owned()));
        self.deadlines.push(until, req);
        Word::Request {
            to: to.to_owned(),
            from: self.node.clone(),
            req: req.0,
            get: method == Method::Get,
            query: query.to_owned(),
            authorization: authorization.map(str::to_owned),
            body: body.to_owned(),
        }
        .entry(true)
    }

    /// The host's client of `req` went away: the message to publish, if
    /// `req` was sent elsewhere.
    pub(crate) fn aborted(&mut self, req: RequestId) -> Option<Entry> {
        let (_, to) = self.sent.remove(&req)?;
        Some(
            Word::Aborted {
                to,
                from: self.node.clone(),
                req: req.0,
            }
            .entry(true),
        )
    }

    /// Whether `req` was sent elsewhere and still waits.
    #[cfg(test)]
    pub(crate) fn is_sent(&self, req: RequestId) -> bool {
        self.sent.contains_key(&req)
    }

    /// A request run here for another node that will not be answered (its
    /// client went away): forgotten.
    pub(crate) fn forget(&mut self, ours: RequestId) {
        self.running.remove(&ours);
    }

    /// A request from another node to run here: the number it runs under.
    pub(crate) fn run(&mut self, from: String, req: u64) -> RequestId {
        self.next += 1;
        let ours = RequestId(THEIRS | self.next);
        self.running.insert(ours, (from, req));
        ours
    }

    /// The number another node's aborted request runs under here.
    pub(crate) fn running_as(&self, from: &str, req: u64) -> Option<RequestId> {
        self.running
            .iter()
            .find(|(_, (f, r))| f == from && *r == req)
            .map(|(ours, _)| *ours)
    }

    /// The engine answered a request: if it ran for another node, the
    /// message that carries the answer back (and the request is done).
    pub(crate) fn answered(&mut self, req: RequestId, response: &HttpResponse) -> Option<Entry> {
        let (to, theirs) = self.running.remove(&req)?;
        Some(
            Word::Response {
                to,
                req: theirs,
                status: response.status,
                content_type: response.content_type.to_owned(),
                body: String::from_utf8_lossy(&response.body).into_owned(),
            }
            .entry(true),
        )
    }

    /// An answer from another node to this node's request `req`: the
    /// response for the host, if it still waits.
    pub(crate) fn response(
        &mut self,
        req: u64,
        status: u16,
        content_type_name: &str,
        body: String,
    ) -> Option<(RequestId, HttpResponse)> {
        let req = RequestId(req);
        self.sent.remove(&req)?;
        Some((
            req,
            HttpResponse {
                status,
                content_type: content_type(content_type_name),
                body: Bytes::from(body),
            },
        ))
    }

    /// A WebSocket of this node's for `to`'s session: relayed from now on;
    /// the message that opens it there.
    pub(crate) fn relay(
        &mut self,
        conn: ConnId,
        to: &str,
        query: &str,
        authorization: Option<&str>,
    ) -> Entry {
        self.relays.insert(conn, to.to_owned());
        Word::WsOpen {
            to: to.to_owned(),
            from: self.node.clone(),
            conn: conn.0,
            query: query.to_owned(),
            authorization: authorization.map(str::to_owned),
        }
        .entry(true)
    }

    /// A frame from the client of a relayed connection: the message that
    /// carries it to the holder.
    pub(crate) fn relayed_in(&self, conn: ConnId, frame: &crate::host::Frame) -> Option<Entry> {
        let to = self.relays.get(&conn)?;
        Some(
            Word::WsIn {
                to: to.clone(),
                from: self.node.clone(),
                conn: conn.0,
                frame: WireFrame::of(frame),
            }
            .entry(true),
        )
    }

    /// The client of a relayed connection went away: the message that
    /// tells the holder.
    pub(crate) fn relay_gone(&mut self, conn: ConnId) -> Option<Entry> {
        let to = self.relays.remove(&conn)?;
        Some(
            Word::WsGone {
                to,
                from: self.node.clone(),
                conn: conn.0,
            }
            .entry(true),
        )
    }

    /// Every connection this node relays, let go (a draining node closes
    /// them): each with the message that tells its holder.
    pub(crate) fn relays_gone(&mut self) -> Vec<(ConnId, Entry)> {
        let conns: Vec<ConnId> = self.relays.keys().copied().collect();
        conns
            .into_iter()
            .filter_map(|conn| Some((conn, self.relay_gone(conn)?)))
            .collect()
    }

    /// Whether this node relays any connection.
    pub(crate) fn relaying(&self) -> bool {
        !self.relays.is_empty()
    }

    /// Whether this node relays `conn`.
    pub(crate) fn relays(&self, conn: ConnId) -> bool {
        self.relays.contains_key(&conn)
    }

    /// The holder closed a relayed connection.
    pub(crate) fn relay_closed(&mut self, conn: ConnId) -> bool {
        self.relays.remove(&conn).is_some()
    }

    /// Another node's connection relayed here: the connection it is here.
    pub(crate) fn host(&mut self, from: String, conn: u64) -> ConnId {
        self.next += 1;
        let ours = ConnId(THEIRS | self.next);
        self.hosts.insert((from.clone(), conn), ours);
        self.hosted.insert(ours, (from, conn));
        ours
    }

    /// The connection here of another node's relayed connection.
    pub(crate) fn hosted_as(&self, from: &str, conn: u64) -> Option<ConnId> {
        self.hosts.get(&(from.to_owned(), conn)).copied()
    }

    /// A frame the engine writes to a connection: if it is relayed here,
    /// the message that carries it to the relaying node.
    pub(crate) fn hosted_out(&self, conn: ConnId, frame: &crate::host::Frame) -> Option<Entry> {
        let (to, theirs) = self.hosted.get(&conn)?;
        Some(
            Word::WsOut {
                to: to.clone(),
                conn: *theirs,
                frame: WireFrame::of(frame),
            }
            .entry(true),
        )
    }

    /// The engine closes a connection: if it is relayed here, the message
    /// that closes it at the relaying node (and it is forgotten here).
    pub(crate) fn hosted_close(&mut self, conn: ConnId, code: u16) -> Option<Entry> {
        let (to, theirs) = self.hosted.remove(&conn)?;
        self.hosts.remove(&(to.clone(), theirs));
        Some(
            Word::WsClose {
                to,
                conn: theirs,
                code,
            }
            .entry(true),
        )
    }

    /// A relayed connection's client went away: forgotten here.
    pub(crate) fn unhost(&mut self, ours: ConnId) {
        if let Some(k) = self.hosted.remove(&ours) {
            self.hosts.remove(&k);
        }
    }

    /// A word between two nodes read from the bus: what this node is to do
    /// with it, if it is for this node and still means something here (an
    /// answer to a request no longer waiting, a frame for a connection
    /// gone, a word for another node: nothing).
    pub(crate) fn take(&mut self, word: Word) -> Option<Forwarded> {
        if word.forward_to() != Some(self.node.as_str()) {
            return None;
        }
        Some(match word {
            Word::Request {
                from,
                req,
                get,
                query,
                authorization,
                body,
                ..
            } => Forwarded::Http {
                req: self.run(from, req),
                method: if get { Method::Get } else { Method::Post },
                query,
                authorization,
                body,
            },
            Word::Response {
                req,
                status,
                content_type,
                body,
                ..
            } => {
                let (req, response) = self.response(req, status, &content_type, body)?;
                Forwarded::Answer { req, response }
            }
            Word::Aborted { from, req, .. } => {
                let ours = self.running_as(&from, req)?;
                self.forget(ours);
                Forwarded::Aborted(ours)
            }
            Word::WsOpen {
                from,
                conn,
                query,
                authorization,
                ..
            } => Forwarded::WsOpen {
                conn: self.host(from, conn),
                query,
                authorization,
            },
            Word::WsIn {
                from, conn, frame, ..
            } => Forwarded::Frame {
                conn: self.hosted_as(&from, conn)?,
                frame: frame.frame()?,
            },
            Word::WsGone { from, conn, .. } => {
                let ours = self.hosted_as(&from, conn)?;
                self.unhost(ours);
                Forwarded::WsClosed(ours)
            }
            Word::WsOut { conn, frame, .. } => {
                let conn = ConnId(conn);
                if !self.relays(conn) {
                    return None;
                }
                Forwarded::WsFrame {
                    conn,
                    frame: frame.frame()?,
                }
            }
            Word::WsClose { conn, code, .. } => {
                let conn = ConnId(conn);
                if !self.relay_closed(conn) {
                    return None;
                }
                Forwarded::WsClose { conn, code }
            }
            _ => return None,
        })
    }

    /// Requests sent elsewhere that no answer came back for in time.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<RequestId> {
        let mut out = Vec::new();
        while let Some((t, req)) = self.deadlines.pop_due(now) {
            if self.sent.get(&req).is_some_and(|(until, _)| *until == t) {
                self.sent.remove(&req);
                out.push(req);
            }
        }
        out
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let sent = &self.sent;
        self.deadlines
            .next(|t, req| sent.get(req).is_some_and(|(until, _)| *until == t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_names_its_node() {
        assert_eq!(owner("ab12.XyZ"), Some("ab12"));
        assert_eq!(owner("XyZ"), None);
        let f = Forwarding::new("me".into());
        assert_eq!(
            f.elsewhere("EIO=4&transport=polling&sid=you.abc"),
            Some("you")
        );
        assert_eq!(f.elsewhere("EIO=4&transport=polling&sid=me.abc"), None);
        assert_eq!(f.elsewhere("EIO=4&transport=polling"), None);
        assert_eq!(f.elsewhere("EIO=4&transport=polling&sid=plain"), None);
    }

    #[test]
    fn a_word_between_two_nodes_is_taken_only_by_the_one_it_is_for_and_only_once() {
        let mut f = Forwarding::new("me".into());
        let request = |to: &str| Word::Request {
            to: to.into(),
            from: "you".into(),
            req: 7,
            get: true,
            query: "q".into(),
            authorization: None,
            body: String::new(),
        };
        assert!(f.take(request("other")).is_none());
        let Some(Forwarded::Http { req, method, .. }) = f.take(request("me")) else {
            panic!("a request for this node runs here");
        };
        assert_eq!(method, Method::Get);
        assert_eq!(f.running_as("you", 7), Some(req));
        // Its client went away: forgotten, and only once.
        let aborted = Word::Aborted {
            to: "me".into(),
            from: "you".into(),
            req: 7,
        };
        assert!(matches!(f.take(aborted.clone()), Some(Forwarded::Aborted(r)) if r == req));
        assert!(f.take(aborted).is_none());
        // An answer to a request this node never sent, a frame for a
        // connection it does not relay: nothing.
        let answer = Word::Response {
            to: "me".into(),
            req: 1,
            status: 200,
            content_type: "text/plain".into(),
            body: String::new(),
        };
        assert!(f.take(answer).is_none());
        let out = Word::WsOut {
            to: "me".into(),
            conn: 3,
            frame: WireFrame::Text("x".into()),
        };
        assert!(f.take(out.clone()).is_none());
        f.relay(ConnId(3), "you", "q", None);
        assert!(matches!(
            f.take(out),
            Some(Forwarded::WsFrame {
                conn: ConnId(3),
                ..
            })
        ));
    }

    #[test]
    fn a_request_sent_elsewhere_is_answered_once_or_given_up() {
        let now = Instant::now();
        let mut f = Forwarding::new("me".into());
        f.send(now, "you", RequestId(1), Method::Get, "q", None, "");
        f.send(now, "you", RequestId(2), Method::Get, "q", None, "");
        let (req, r) = f.response(1, 200, "text/html", "ok".into()).unwrap();
        assert_eq!(
            (req, r.status, r.content_type),
            (RequestId(1), 200, "text/html")
        );
        assert!(f.response(1, 200, "text/html", "ok".into()).is_none());
        assert!(
            f.expire(now + FORWARD_WAIT - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(f.expire(now + FORWARD_WAIT), vec![RequestId(2)]);
        assert!(!f.is_sent(RequestId(2)));
        assert_eq!(f.poll_timeout(), None);
    }
}
