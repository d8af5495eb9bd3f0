//! The edge of the server, what every accepted connection passes through
//! before hyper sees it: the cap on open connections (past it a client is
//! answered 503 at once, never left waiting in the backlog), a lingering
//! close, and the timer that gives hyper its header timeout.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use crate::{BoxFuture, Runtime};

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends after our answer, so that closing does not reset the
/// connection under a client that has not read the answer yet (a 413 sent
/// before the body arrived).
const LINGER: Duration = Duration::from_secs(2);

/// The most bytes discarded while lingering.
const LINGER_BYTES: usize = 4 << 20;

/// The answer to a connection past the cap.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 33\r\n\r\n\
{\"detail\":\"Too many connections\"}";

/// The limits an operator sets on the edge.
#[derive(Debug, Clone, Copy)]
pub struct EdgeConfig {
    /// The most connections open at once (HTTP and WebSocket alike).
    pub max_connections: usize,
    /// How long a request's header may take to arrive, counted from the
    /// connection's start or from the end of the previous response: this
    /// bounds both slowly sent headers and idle keep-alive connections.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
    /// The largest request line and headers, together, in bytes (431 past it).
    pub max_header_bytes: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            max_connections: default_max_connections(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 16 << 10,
        }
    }
}

/// The process's open-file limit (from `/proc/self/limits`) less a tenth
/// of it, and at least 64, for the store, the runtime and the logs: the cap
/// is met before `accept` fails for want of descriptors. 10,000 where that
/// limit cannot be read.
pub fn default_max_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        })
        .map_or(10_000, |n| n.saturating_sub((n / 10).max(64)).max(16))
}

/// An address or a network (`10.0.0.0/8`, `::1`), as `TRUSTED_PROXIES` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| match a.to_canonical() {
            IpAddr::V4(v) => (u128::from(v.to_bits()), 32u32),
            IpAddr::V6(v) => (v.to_bits(), 128u32),
        };
        let ((net, len), (ip, ip_len)) = (bits(self.addr), bits(ip));
        // The same family, and the same first `prefix` bits.
        len == ip_len
            && (net ^ ip)
                .checked_shr(len - u32::from(self.prefix))
                .unwrap_or(0)
                == 0
    }
}

/// The client's address: the TCP peer's, unless the peer is a proxy
/// `trusted` lists; then the nearest address in `X-Forwarded-For` that is
/// not one of those proxies (addresses further left were written by the
/// client itself and prove nothing).
pub(crate) fn client_addr(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut last = peer;
    for hop in forwarded_for.unwrap_or("").rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        let ip = ip.to_canonical();
        if !is_trusted(ip) {
            return Some(ip);
        }
        last = ip;
    }
    Some(last)
}

/// The server's open connections (HTTP ones, and WebSockets once
/// upgraded: the socket keeps the connection's [`ConnSlot`]), counted
/// against the cap and so that a shutdown can wait for them to end; and
/// the signal that tells them to finish (an HTTP connection then ends after
/// the request it serves).
#[derive(Debug, Clone)]
pub(crate) struct Connections {
    open: Arc<AtomicUsize>,
    max: usize,
    finish: async_channel::Sender<()>,
    finishing: async_channel::Receiver<()>,
}

/// One open connection's place under the cap, given back when dropped: a
/// WebSocket's socket keeps it for as long as the connection lives.
#[derive(Debug)]
pub struct ConnSlot(Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connections {
    pub(crate) fn new(max: usize) -> Self {
        // Nothing is ever sent: closing the channel is the signal.
        let (finish, finishing) = async_channel::bounded(1);
        Connections {
            open: Arc::default(),
            max,
            finish,
            finishing,
        }
    }

    /// The most connections allowed at once.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// How many connections are open.
    pub(crate) fn live(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Tells every HTTP connection, open or still to come, to finish.
    pub(crate) fn finish(&self) {
        self.finish.close();
    }

    /// Completes once [`Connections::finish`] was called.
    pub(crate) fn finishing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let finishing = self.finishing.clone();
        async move {
            let _ = finishing.recv().await;
        }
    }

    /// A place for one more connection, if the cap allows it.
    pub(crate) fn try_open(&self) -> Option<ConnSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        taken.ok().map(|_| ConnSlot(self.open.clone()))
    }
}

/// Answers a connection past the cap with 503 and closes it.
pub(crate) async fn refuse<I: hyper::rt::Write + Unpin>(mut io: I) {
    let mut sent = 0;
    while sent < TOO_MANY.len() {
        match std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, &TOO_MANY[sent..])).await {
            Ok(0) | Err(_) => return,
            Ok(n) => sent += n,
        }
    }
    let _ = std::future::poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
}

/// An accepted connection as hyper gets it: the runtime's connection, its
/// place under the cap, a close that lingers, and a `101` that may wait for
/// the first WebSocket frame ([`Held`]). A runtime takes its socket back
/// out of an upgraded one with [`Edge::into_parts`].
pub struct Edge<I, R> {
    io: I,
    slot: ConnSlot,
    rt: R,
    closing: Closing,
    held: Held,
}

/// A connection's `101 Switching Protocols`, kept back to go out in one
/// write with the first WebSocket frame: a new Engine.IO session over
/// WebSocket gets its open packet at once, so the client gets both in one
/// segment (one write and one read fewer per connection, and one wake-up
/// of the client). Only when the route arms it ([`Held::arm`]) before
/// answering `101`, and only while the write it holds is that answer; the
/// route takes the bytes ([`Held::take`]) once the upgrade is done, and
/// they go out first on the WebSocket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Held(Arc<std::sync::Mutex<Option<Vec<u8>>>>);

impl Held {
    fn cell(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next write on the connection, if it is a `101`, is kept.
    pub(crate) fn arm(&self) {
        *self.cell() = Some(Vec::new());
    }

    /// What was kept (nothing if nothing was), disarmed.
    pub(crate) fn take(&self) -> Option<bytes::Bytes> {
        self.cell()
            .take()
            .filter(|b| !b.is_empty())
            .map(bytes::Bytes::from)
    }

    /// Keeps `bufs` if armed and they are (the rest of) a `101`; their
    /// length if kept.
    fn keep(&self, bufs: &[io::IoSlice<'_>]) -> Option<usize> {
        let mut cell = self.cell();
        let kept = cell.as_mut()?;
        let first = bufs.iter().find(|b| !b.is_empty())?;
        if kept.is_empty() && !first.starts_with(b"HTTP/1.1 101 ") {
            // Not the answer it was armed for: written as it comes.
            *cell = None;
            return None;
        }
        let n = bufs.iter().map(|b| b.len()).sum();
        for b in bufs {
            kept.extend_from_slice(b);
        }
        Some(n)
    }
}

enum Closing {
    Open,
    Lingering {
        until: BoxFuture<()>,
        discarded: usize,
    },
    Closed,
}

impl<I: std::fmt::Debug, R> std::fmt::Debug for Edge<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("io", &self.io)
            .finish_non_exhaustive()
    }
}

impl<I, R> Edge<I, R> {
    pub(crate) fn new(io: I, slot: ConnSlot, rt: R, held: Held) -> Self {
        Edge {
            io,
            slot,
            rt,
            closing: Closing::Open,
            held,
        }
    }

    /// The runtime's connection and its place under the cap.
    pub fn into_parts(self) -> (I, ConnSlot) {
        (self.io, self.slot)
    }
}

impl<I: hyper::rt::Read + Unpin, R: Unpin> hyper::rt::Read for Edge<I, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Read + hyper::rt::Write + Unpin, R: Runtime + Unpin> hyper::rt::Write
    for Edge<I, R>
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(n) = self.held.keep(&[io::IoSlice::new(buf)]) {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(n) = self.held.keep(bufs) {
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Sends our FIN, then reads and discards what the client still sends
    /// until it closes its side, for at most [`LINGER`] or [`LINGER_BYTES`].
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.closing {
                Closing::Open => {
                    let shut = ready!(Pin::new(&mut this.io).poll_shutdown(cx));
                    if shut.is_err() {
                        this.closing = Closing::Closed;
                        return Poll::Ready(shut);
                    }
                    this.closing = Closing::Lingering {
                        until: this.rt.sleep_until(Instant::now() + LINGER),
                        discarded: 0,
                    };
                }
                Closing::Lingering { until, discarded } => {
                    if until.as_mut().poll(cx).is_ready() || *discarded > LINGER_BYTES {
                        this.closing = Closing::Closed;
                        continue;
                    }
                    let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
                    let mut buf = hyper::rt::ReadBuf::uninit(&mut scratch);
                    match ready!(Pin::new(&mut this.io).poll_read(cx, buf.unfilled())) {
                        Ok(()) if !buf.filled().is_empty() => *discarded += buf.filled().len(),
                        // EOF or an error: the client is done.
                        _ => this.closing = Closing::Closed,
                    }
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// hyper's timer on a [`Runtime`]: what its header timeout runs on.
#[derive(Debug, Clone)]
pub(crate) struct RtTimer<R>(pub(crate) R);

/// A runtime's sleep as hyper wants it (`Sync` too: the future sits behind
/// a mutex that is never contended, since only `poll` touches it).
struct RtSleep(std::sync::Mutex<BoxFuture<()>>);

impl std::future::Future for RtSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let fut = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        fut.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for RtSleep {}

impl<R: Runtime> hyper::rt::Timer for RtTimer<R> {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(RtSleep(std::sync::Mutex::new(self.0.sleep_until(deadline))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(held: &Held, parts: &[&[u8]]) -> Option<usize> {
        let bufs: Vec<_> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        held.keep(&bufs)
    }

    #[test]
    fn an_armed_hold_keeps_a_101_until_taken_and_nothing_else() {
        let head: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n";
        // Not armed: every write goes out.
        let held = Held::default();
        assert_eq!(keep(&held, &[head]), None);
        assert_eq!(held.take(), None);

        // Armed: the 101 is kept, in as many writes as it comes, then taken once.
        held.arm();
        assert_eq!(keep(&held, &[&head[..20], b""]), Some(20));
        assert_eq!(
            keep(&held, &[&head[20..], b"\r\n"]),
            Some(head.len() - 20 + 2)
        );
        let mut whole = head.to_vec();
        whole.extend_from_slice(b"\r\n");
        assert_eq!(held.take().as_deref(), Some(&whole[..]));
        assert_eq!(held.take(), None, "taken once");
        assert_eq!(keep(&held, &[head]), None, "disarmed by the take");

        // Armed, but the answer is not a 101 (a refusal): it goes out, and
        // the hold is off for what follows.
        held.arm();
        assert_eq!(keep(&held, &[b"HTTP/1.1 400 Bad Request\r\n"]), None);
        assert_eq!(keep(&held, &[head]), None);
        assert_eq!(held.take(), None);

        // Armed, taken before anything was written (the upgrade failed):
        // nothing to send, and nothing held afterwards.
        held.arm();
        assert_eq!(held.take(), None);
        assert_eq!(keep(&held, &[head]), None);
    }

    #[test]
    fn the_cap_counts_open_connections_and_frees_them_on_drop() {
        let conns = Connections::new(2);
        let a = conns.try_open().expect("room for the first");
        let b = conns.try_open().expect("room for the second");
        assert!(conns.try_open().is_none(), "the third is over the cap");
        drop(a);
        let c = conns.try_open().expect("a place was freed");
        assert!(conns.try_open().is_none());
        drop((b, c));
        assert_eq!(conns.open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_refusal_is_a_whole_json_answer() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["detail"], "Too many connections");
    }

    #[test]
    fn networks_and_the_client_behind_trusted_proxies() {
        let nets: Vec<Cidr> = ["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(nets[0].contains(ip("10.200.3.4")));
        assert!(!nets[0].contains(ip("11.0.0.1")));
        assert!(nets[1].contains(ip("127.0.0.1")) && !nets[1].contains(ip("127.0.0.2")));
        assert!(nets[2].contains(ip("::1")));
        assert!(nets[3].contains(ip("fd12::5")) && !nets[3].contains(ip("fe80::1")));
        assert!(
            nets[0].contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped addresses are IPv4"
        );
        for bad in ["10.0.0.0/33", "nonsense", "::1/129", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        // Untrusted peer: XFF is ignored.
        let xff = Some("1.1.1.1, 2.2.2.2");
        assert_eq!(
            client_addr(Some(ip("9.9.9.9")), xff, &nets),
            Some(ip("9.9.9.9"))
        );
        // Trusted peer: the nearest untrusted hop.
        assert_eq!(
            client_addr(
                Some(ip("127.0.0.1")),
                Some("1.1.1.1, 2.2.2.2, 10.0.0.5"),
                &nets
            ),
            Some(ip("2.2.2.2"))
        );
        // Every hop trusted: the leftmost; garbage stops the walk.
        assert_eq!(
            client_addr(Some(ip("127.0.0.1")), Some("10.0.0.9, 10.0.0.5"), &nets),
            Some(ip("10.0.0.9"))
        );
        assert_eq!(
            client_addr(Some(ip("127.0.0.1")), Some("1.1.1.1, junk"), &nets),
            Some(ip("127.0.0.1"))
        );
        assert_eq!(client_addr(None, xff, &nets), None);
    }

    #[test]
    fn the_default_cap_stays_under_the_open_file_limit() {
        let n = default_max_connections();
        assert!(n >= 16);
    }
}
