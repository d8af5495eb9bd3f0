//! The hyper service: the Engine.IO paths go to their node tasks (HTTP
//! long-polling, and WebSocket upgrades handed to the pump); every other
//! path goes to the REST routes of `protocol::http`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use protocol::http::{Effect, EffectResult, Rest, Step};
use protocol::ids::IdGenerator;
use protocol::store::Store;
use protocol::{ConnId, Method, RequestId};

use crate::Runtime;
use crate::docs::ApiDocs;
use crate::edge::{Cidr, Connections, EdgeConfig, Held};
use crate::metrics::{self, Metrics};
use crate::node_task::{Command, NodeHandle, NodeReader};
use crate::web::WebApp;
use crate::ws::WsConn;

/// Where each request goes; cheap to clone, one per connection.
pub struct Routes<R> {
    rt: R,
    engines: Arc<Vec<(String, NodeHandle)>>,
    rest: Option<Arc<RestHost>>,
    docs: Option<ApiDocs>,
    web: Option<WebApp>,
    cors: Arc<Vec<String>>,
    max_payload: usize,
    edge: EdgeConfig,
    /// The TCP peer of the connection these routes serve.
    peer: Option<SocketAddr>,
    /// Where that connection's `101` may wait for the first WebSocket frame.
    held: Held,
    trusted_proxies: Arc<Vec<Cidr>>,
    bcrypt_max: usize,
    echo: Option<Arc<str>>,
    metrics: Option<Arc<Metrics>>,
    /// Every connection these routes serve.
    pub(crate) connections: Connections,
}

impl<R: Clone> Clone for Routes<R> {
    fn clone(&self) -> Self {
        Routes {
            rt: self.rt.clone(),
            engines: self.engines.clone(),
            rest: self.rest.clone(),
            docs: self.docs.clone(),
            web: self.web,
            cors: self.cors.clone(),
            max_payload: self.max_payload,
            edge: self.edge,
            peer: self.peer,
            held: self.held.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            bcrypt_max: self.bcrypt_max,
            echo: self.echo.clone(),
            metrics: self.metrics.clone(),
            connections: self.connections.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Routes<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field(
                "engines",
                &self.engines.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What the REST routes need from the host.
struct RestHost {
    /// The routes (their throttles change with each attempt) and the ids
    /// they draw, locked only while the core runs, never across an await.
    core: Mutex<(Rest, Box<dyn IdGenerator>)>,
    store: Arc<dyn Store>,
    /// bcrypt checks under way or waiting for a thread.
    bcrypt: Arc<AtomicUsize>,
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type Resp = Response<Full<Bytes>>;

/// Four bcrypt checks per core may be under way or waiting: at cost 12
/// (a quarter second each) that is a second of waiting at most.
pub fn default_bcrypt_max() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The largest message the echo endpoint takes: Autobahn's biggest cases
/// send 16 MiB.
const ECHO_MAX: usize = 32 << 20;

impl<R: Runtime> Routes<R> {
    /// Routes with no paths yet. `max_payload` bounds what is read of an
    /// Engine.IO request; `cors` lists allowed origins (`*` for any).
    pub fn new(rt: R, max_payload: usize, cors: Vec<String>) -> Self {
        Routes {
            rt,
            engines: Arc::new(Vec::new()),
            rest: None,
            docs: None,
            web: None,
            cors: Arc::new(cors),
            max_payload,
            edge: EdgeConfig::default(),
            peer: None,
            held: Held::default(),
            trusted_proxies: Arc::default(),
            bcrypt_max: default_bcrypt_max(),
            echo: None,
            metrics: None,
            connections: Connections::new(EdgeConfig::default().max_connections),
        }
    }

    /// Sets the limits of the edge: connections, timeouts, header size.
    pub fn edge(mut self, edge: EdgeConfig) -> Self {
        self.edge = edge;
        self.connections = Connections::new(edge.max_connections);
        self
    }

    /// The limits of the edge.
    pub fn edge_config(&self) -> &EdgeConfig {
        &self.edge
    }

    /// Trusts `X-Forwarded-For` from these proxies (and only from them).
    pub fn trusted_proxies(mut self, proxies: Vec<Cidr>) -> Self {
        self.trusted_proxies = Arc::new(proxies);
        self
    }

    /// At most `max` bcrypt checks under way or waiting at once; more are
    /// answered 503 with `Retry-After` at once.
    pub fn bcrypt_max_pending(mut self, max: usize) -> Self {
        self.bcrypt_max = max.max(1);
        self
    }

    /// These routes for one connection, from `peer`.
    pub(crate) fn for_conn(mut self, peer: SocketAddr, held: Held) -> Self {
        self.peer = Some(peer);
        self.held = held;
        self
    }

    /// Serves a WebSocket echo at `path` (for conformance tests of the
    /// framing: Autobahn's cases), taking messages of up to `ECHO_MAX` bytes.
    pub fn ws_echo(mut self, path: &str) -> Self {
        self.echo = Some(path.into());
        self
    }

    /// Counts requests into `metrics` and serves them at `GET /metrics`.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Serves Engine.IO at `path` (such as `/socket.io/`) with a node task.
    pub fn engine(mut self, path: &str, node: NodeHandle) -> Self {
        Arc::make_mut(&mut self.engines).push((path.trim_end_matches('/').to_owned(), node));
        self
    }

    /// Serves the REST routes for every other path, their time read from
    /// the host's clock at each request (as the node reads it with each
    /// batch of inputs, so a token expires at the same instant over REST
    /// and Socket.IO).
    pub fn rest(mut self, rest: Rest, store: Arc<dyn Store>, ids: Box<dyn IdGenerator>) -> Self {
        self.rest = Some(Arc::new(RestHost {
            core: Mutex::new((rest, ids)),
            store,
            bcrypt: Arc::default(),
        }));
        self
    }

    /// Serves the API documents and their viewers (`/openapi.json`,
    /// `/asyncapi.json`, `/docs`, `/redoc`) ahead of the REST routes.
    pub fn docs(mut self, docs: ApiDocs) -> Self {
        self.docs = Some(docs);
        self
    }

    /// Serves the web chat page (`/app` and its files) ahead of the REST
    /// routes.
    pub fn web(mut self, web: WebApp) -> Self {
        self.web = Some(web);
        self
    }

    /// What `Access-Control-Allow-Origin` answers `origin`: `*` when any
    /// origin is allowed (never the origin itself: a reflected origin with
    /// credentials would let every site act as the user), the origin when
    /// it is on the list, nothing otherwise.
    fn cors_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any_origin() {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        self.cors
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
            .then(|| origin.clone())
    }

    fn any_origin(&self) -> bool {
        self.cors.iter().any(|o| o == "*")
    }

    /// Answers one request.
    pub async fn handle(self, req: Request<Incoming>) -> Result<Resp, Infallible> {
        if header_bytes(&req) > self.edge.max_header_bytes {
            // Node's limit and answer, in our error shape.
            let mut r = json(
                431,
                Bytes::from_static(br#"{"detail":"Request header fields too large"}"#),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
        let sent_origin = req.headers().get(header::ORIGIN);
        let origin = self.cors_origin(sent_origin);
        let path = req.uri().path().trim_end_matches('/');
        let engine = self
            .engines
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, n)| n.clone());
        let mut resp = if req.method() == http::Method::OPTIONS {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        } else if let Some(node) = engine {
            if sent_origin.is_some() && origin.is_none() && !same_origin(&req) {
                // A browser page from an origin not on the list: refused
                // before it reaches a session, as python-engineio does.
                tracing::debug!("Engine.IO request from an origin not on CORS_ORIGINS refused");
                return Ok(json(
                    400,
                    Bytes::from_static(br#"{"code":3,"message":"Not an accepted origin"}"#),
                ));
            }
            self.engine_request(node, req).await
        } else if let Some(r) = self
            .docs
            .as_ref()
            .and_then(|d| d.answer(req.method(), req.uri().path()))
            .or_else(|| {
                self.web
                    .and_then(|w| w.answer(req.method(), req.uri().path()))
            })
        {
            r
        } else if self.echo.as_deref() == Some(req.uri().path()) {
            self.echo_request(req)
        } else if path == metrics::METRICS_PATH
            && let Some(m) = self.metrics.clone()
        {
            self.scrape(&m, req.method()).await
        } else if let Some(rest) = self.rest.clone() {
            self.rest_request(&rest, req).await
        } else {
            json(404, Bytes::from_static(br#"{"detail":"Not Found"}"#))
        };
        if let Some(o) = origin {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            if !self.any_origin() {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
        Ok(resp)
    }

    /// Answers one request, counting it (by route and status class) and
    /// logging it at debug: method, route, status, duration; never the
    /// path's ids, the query, or a header.
    pub async fn observed(self, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path();
        let engine = self
            .engines
            .iter()
            .any(|(p, _)| p == path.trim_end_matches('/'));
        let route = metrics::route_label(path, engine);
        let m = self.metrics.clone();
        let span = tracing::debug_span!("http", method = %method, route);
        let Ok(resp) = tracing::Instrument::instrument(self.handle(req), span).await;
        let status = resp.status().as_u16();
        if let Some(m) = m {
            m.http_request(route, status);
        }
        tracing::debug!(
            method = %method,
            route = %route,
            status,
            ms = %format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
            "http request"
        );
        Ok(resp)
    }

    /// `GET /metrics`: the nodes' counters and the driver's, as OpenMetrics text.
    async fn scrape(&self, m: &Metrics, method: &http::Method) -> Resp {
        if method != http::Method::GET && method != http::Method::HEAD {
            return json(
                405,
                Bytes::from_static(br#"{"detail":"Method Not Allowed"}"#),
            );
        }
        let mut nodes = Vec::with_capacity(self.engines.len());
        for (_, node) in self.engines.iter() {
            nodes.extend(node.snapshot().await);
        }
        let mut r = Response::new(Full::new(Bytes::from(m.render(&nodes))));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    }

    async fn engine_request(&self, node: NodeHandle, mut req: Request<Incoming>) -> Resp {
        let query = req.uri().query().unwrap_or("").to_owned();
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if is_upgrade(&req) {
            let fresh = match protocol::eio::parse_query(&query) {
                Ok(q) => q.sid.is_none(),
                Err(e) => return json(400, Bytes::from(e.body())),
            };
            let (switching, upgrade) = match accept_upgrade(&mut req) {
                Ok(accepted) => accepted,
                Err(e) => {
                    let body = protocol::eio::RequestError::BadRequest.body();
                    return refuse_upgrade(e, Bytes::from(body));
                }
            };
            // A new session's open packet follows the 101 at once: both go
            // out in one write. (An upgrade of a polling session waits for
            // the client's probe, which waits for the 101.)
            let held = fresh.then(|| self.held.clone());
            if let Some(h) = &held {
                h.arm();
            }
            let rt = self.rt.clone();
            let max = self.max_payload;
            self.rt.spawn(Box::pin(async move {
                let Ok(io) = upgrade.await else { return };
                let head = held.and_then(|h| h.take());
                let (socket, read) = match rt.socket(io) {
                    Ok(s) => s,
                    Err(_) => {
                        tracing::error!("an upgraded connection that is not the runtime's socket");
                        return;
                    }
                };
                let conn = ConnId(node.next_id());
                let ws = Arc::new(WsConn::new(Box::new(socket)));
                node.send(Command::WsOpen {
                    conn,
                    query,
                    authorization,
                    ws: ws.clone(),
                    head,
                })
                .await;
                let read = BytesMut::from(read);
                crate::ws::pump(rt, ws, read, max, NodeReader { node, conn }).await;
            }));
            return switching;
        }
        let method = match *req.method() {
            http::Method::GET => Method::Get,
            http::Method::POST => Method::Post,
            _ => Method::Other,
        };
        // A body over maxPayload is read to one byte past it, for the core
        // to answer 413 and close the session.
        let read = read_body(
            &self.rt,
            req.into_body(),
            self.max_payload,
            &self.edge,
            false,
        );
        let Ok(body) = read.await else {
            return json(
                400,
                Bytes::from(protocol::eio::RequestError::BadRequest.body()),
            );
        };
        let id = RequestId(node.next_id());
        let (tx, rx) = futures_channel::oneshot::channel();
        node.send(Command::Http {
            req: id,
            method,
            query,
            authorization,
            body,
            reply: tx,
        })
        .await;
        let guard = AbortGuard {
            node: &node,
            req: id,
            done: false,
        };
        let r = rx.await;
        guard.disarm();
        match r {
            Ok(r) => {
                let mut resp = Response::new(Full::new(r.body));
                *resp.status_mut() =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(r.content_type),
                );
                resp
            }
            Err(_) => json(
                503,
                Bytes::from_static(br#"{"detail":"Server shutting down"}"#),
            ),
        }
    }

    fn echo_request(&self, mut req: Request<Incoming>) -> Resp {
        let (switching, upgrade) = match accept_upgrade(&mut req) {
            Ok(accepted) => accepted,
            Err(e) => {
                let detail = serde_json::json!({ "detail": e.to_string() }).to_string();
                return refuse_upgrade(e, Bytes::from(detail));
            }
        };
        let rt = self.rt.clone();
        self.rt.spawn(Box::pin(async move {
            let Ok(io) = upgrade.await else { return };
            let Ok((socket, read)) = rt.socket(io) else {
                return;
            };
            let ws = Arc::new(WsConn::new(Box::new(socket)));
            crate::ws::echo(rt, ws, BytesMut::from(read), ECHO_MAX).await;
        }));
        switching
    }

    async fn rest_request(&self, host: &RestHost, req: Request<Incoming>) -> Resp {
        let (parts, body) = req.into_parts();
        let limit = protocol::http::MAX_BODY_BYTES;
        let body = match read_body(&self.rt, body, limit, &self.edge, true).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                let mut r = json(
                    413,
                    Bytes::from_static(br#"{"detail":"Request body too large"}"#),
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            Err(BodyError::TimedOut) => {
                let mut r = json(
                    408,
                    Bytes::from_static(br#"{"detail":"The request body took too long"}"#),
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            Err(BodyError::Unreadable) => {
                return json(
                    400,
                    Bytes::from_static(br#"{"detail":"Could not read the request body"}"#),
                );
            }
        };
        let header = |h: header::HeaderName| parts.headers.get(h).and_then(|v| v.to_str().ok());
        let peer = crate::edge::client_addr(
            self.peer.map(|a| a.ip()),
            header(header::HeaderName::from_static("x-forwarded-for")),
            &self.trusted_proxies,
        );
        let request = protocol::http::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            content_type: header(header::CONTENT_TYPE),
            authorization: header(header::AUTHORIZATION),
            body: &body,
            peer,
        };
        let mut step = {
            let mut core = host.core.lock().unwrap_or_else(|p| p.into_inner());
            let (rest, ids) = &mut *core;
            rest.handle(&request, unix_ms(), &mut **ids)
        };
        loop {
            match step {
                Step::Respond(r) => {
                    if let Some(why) = r.auth_failure {
                        tracing::debug!(via = %"rest", reason = %why.as_str(), "auth failure");
                        if let Some(m) = &self.metrics {
                            m.rest_auth_failure(why);
                        }
                    }
                    let mut resp = json(r.status, r.body);
                    if let Some(allow) = r.allow {
                        resp.headers_mut()
                            .insert(header::ALLOW, HeaderValue::from_static(allow));
                    }
                    if let Some(secs) = r.retry_after {
                        resp.headers_mut()
                            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                    }
                    return resp;
                }
                Step::Run(effect, pending) => {
                    let result = self.run_effect(host, effect).await;
                    let mut core = host.core.lock().unwrap_or_else(|p| p.into_inner());
                    let (rest, ids) = &mut *core;
                    step = rest.resume(pending, result, unix_ms(), &mut **ids);
                }
            }
        }
    }

    async fn run_effect(&self, host: &RestHost, effect: Effect) -> EffectResult {
        match effect {
            Effect::Store(c) => {
                let histogram = self.metrics.as_ref().map(|m| m.histogram(&c).clone());
                EffectResult::Store(crate::storage::run(&*host.store, c, histogram).await)
            }
            Effect::HashPassword { password, cost } => {
                let Some(_turn) = BcryptTurn::take(&host.bcrypt, self.bcrypt_max) else {
                    return EffectResult::Busy;
                };
                let r = self
                    .blocking(move || bcrypt::hash(password, cost).map_err(|e| e.to_string()))
                    .await;
                EffectResult::Hashed(r.unwrap_or_else(|| Err("hashing task failed".into())))
            }
            Effect::VerifyPassword { password, hash } => {
                let Some(_turn) = BcryptTurn::take(&host.bcrypt, self.bcrypt_max) else {
                    return EffectResult::Busy;
                };
                let r = self
                    .blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                    .await;
                EffectResult::Verified(r.unwrap_or(false))
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.rt.spawn_blocking(Box::new(move || {
            let _ = tx.send(f());
        }));
        rx.await.ok()
    }
}

/// One bcrypt check's place in the bounded pool (`BCRYPT_MAX_PENDING`): a
/// request past the bound is answered 503 at once instead of queueing for
/// threads, so a burst of logins cannot stall everyone else's for seconds.
struct BcryptTurn(Arc<AtomicUsize>);

impl BcryptTurn {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<BcryptTurn> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| BcryptTurn(count.clone()))
    }
}

impl Drop for BcryptTurn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells the node a parked request's client went away, unless it was answered.
struct AbortGuard<'a> {
    node: &'a NodeHandle,
    req: RequestId,
    done: bool,
}

impl AbortGuard<'_> {
    fn disarm(mut self) {
        self.done = true;
    }
}

impl Drop for AbortGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.node.tx.try_send(Command::HttpAborted(self.req));
        }
    }
}

/// Checks an opening handshake (RFC 6455 §4.2.1, `protocol::ws`); the 101
/// answer and the upgrade to wait for, or why it is refused.
fn accept_upgrade<B>(
    req: &mut Request<B>,
) -> Result<(Resp, hyper::upgrade::OnUpgrade), protocol::ws::HandshakeError> {
    let headers = req.headers();
    let connection: Vec<&[u8]> = headers
        .get_all(header::CONNECTION)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let key = headers.get(header::SEC_WEBSOCKET_KEY);
    protocol::ws::check_upgrade(&protocol::ws::Handshake {
        method: req.method().as_str(),
        connection: &connection,
        upgrade: headers.get(header::UPGRADE).map(HeaderValue::as_bytes),
        version: headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes),
        key: key.map(HeaderValue::as_bytes),
    })?;
    let accept = tungstenite::handshake::derive_accept_key(
        key.expect("check_upgrade saw the key")
            .as_bytes()
            .trim_ascii(),
    );
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    Ok((r, hyper::upgrade::on(req)))
}

/// The answer to a refused handshake: its status, `body`, and for a
/// version we do not speak the one we do (RFC 6455 §4.4).
fn refuse_upgrade(e: protocol::ws::HandshakeError, body: Bytes) -> Resp {
    tracing::debug!("WebSocket handshake refused: {e}");
    let mut r = json(e.status(), body);
    if e == protocol::ws::HandshakeError::Version {
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    r
}

/// The size of a request's line and headers, about as sent.
fn header_bytes<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

/// Whether the request's `Origin` is the server itself (`http://` or
/// `https://` and the `Host` it was sent to): a page the server served.
fn same_origin<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let origin = origin.as_bytes();
    let rest = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    rest.is_some_and(|r| r.eq_ignore_ascii_case(host.as_bytes()))
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Why a request body was not read.
#[derive(Debug)]
enum BodyError {
    /// The connection failed or the body was malformed.
    Unreadable,
    /// It did not arrive within `EdgeConfig::body_timeout`.
    TimedOut,
    /// Its declared length is over the limit (only when `early`).
    TooLarge,
}

/// Reads a body up to `limit + 1` bytes: enough for the core to see that it
/// is too large without holding more of it, within the edge's body timeout.
/// With `early`, a declared length over `limit` is refused before a byte is
/// read.
async fn read_body<R: Runtime>(
    rt: &R,
    mut body: Incoming,
    limit: usize,
    edge: &EdgeConfig,
    early: bool,
) -> Result<Bytes, BodyError> {
    let declared = body.size_hint().lower();
    if early && declared > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.min(limit as u64) as usize);
    let mut deadline = rt.sleep_until(Instant::now() + edge.body_timeout);
    loop {
        let frame = match futures_util::future::select(body.frame(), deadline).await {
            futures_util::future::Either::Left((frame, rest)) => {
                deadline = rest;
                frame
            }
            futures_util::future::Either::Right(((), _)) => return Err(BodyError::TimedOut),
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        if let Ok(data) = frame.into_data() {
            let room = (limit + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
            if buf.len() > limit {
                break;
            }
        }
    }
    Ok(buf.freeze())
}

fn json(status: u16, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves HTTP/1.1 (with upgrades) on one accepted connection, counted
/// among the routes' connections. Once they are told to finish (the server
/// shuts down), the connection ends after the request it serves.
pub async fn serve_connection<R: Runtime, I>(io: I, routes: Routes<R>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let timer = crate::edge::RtTimer(routes.rt.clone());
    let header_timeout = routes.edge.header_timeout;
    // hyper's own limit stays above ours (`EdgeConfig::max_header_bytes`,
    // checked in `handle`), so that what it refuses is only what is far
    // too big to read, and our 431 is the JSON one.
    let hyper_max_header = (routes.edge.max_header_bytes * 4).max(64 << 10);
    let finishing = std::pin::pin!(routes.connections.finishing());
    let service = hyper::service::service_fn(move |req| routes.clone().observed(req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(timer)
        .header_read_timeout(header_timeout)
        .max_header_size(hyper_max_header)
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let ended = match futures_util::future::select(conn.as_mut(), finishing).await {
        futures_util::future::Either::Left((ended, _)) => ended,
        futures_util::future::Either::Right(((), _)) => {
            // A REST call or a poll under way is answered; an idle
            // keep-alive connection is closed at once.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection ended: {e}");
    }
}
