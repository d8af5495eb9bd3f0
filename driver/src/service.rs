//! The hyper service: the Engine.IO paths go to their node tasks (HTTP
//! long-polling, and WebSocket upgrades handed to the pump); every other
//! path goes to the REST routes of `protocol::http`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
use crate::node_task::{Command, NodeHandle};
use crate::ws::WsConn;

/// Where each request goes; cheap to clone, one per connection.
pub struct Routes<R> {
    rt: R,
    engines: Arc<Vec<(String, NodeHandle)>>,
    rest: Option<Arc<RestHost>>,
    docs: Option<ApiDocs>,
    cors: Arc<Vec<String>>,
    max_payload: usize,
}

impl<R: Clone> Clone for Routes<R> {
    fn clone(&self) -> Self {
        Routes {
            rt: self.rt.clone(),
            engines: self.engines.clone(),
            rest: self.rest.clone(),
            docs: self.docs.clone(),
            cors: self.cors.clone(),
            max_payload: self.max_payload,
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
    rest: Rest,
    store: Arc<dyn Store>,
    ids: Mutex<Box<dyn IdGenerator>>,
}

/// Milliseconds since the Unix epoch, from the host's clock.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type Resp = Response<Full<Bytes>>;

impl<R: Runtime> Routes<R> {
    /// Routes with no paths yet. `max_payload` bounds what is read of an
    /// Engine.IO request; `cors` lists allowed origins (`*` for any).
    pub fn new(rt: R, max_payload: usize, cors: Vec<String>) -> Self {
        Routes {
            rt,
            engines: Arc::new(Vec::new()),
            rest: None,
            docs: None,
            cors: Arc::new(cors),
            max_payload,
        }
    }

    /// Serves Engine.IO at `path` (such as `/socket.io/`) with a node task.
    pub fn engine(mut self, path: &str, node: NodeHandle) -> Self {
        Arc::make_mut(&mut self.engines).push((path.trim_end_matches('/').to_owned(), node));
        self
    }

    /// Serves the REST routes for every other path.
    pub fn rest(mut self, rest: Rest, store: Arc<dyn Store>, ids: Box<dyn IdGenerator>) -> Self {
        self.rest = Some(Arc::new(RestHost {
            rest,
            store,
            ids: Mutex::new(ids),
        }));
        self
    }

    /// Serves the API documents and their viewers (`/openapi.json`,
    /// `/asyncapi.json`, `/docs`, `/redoc`) ahead of the REST routes.
    pub fn docs(mut self, docs: ApiDocs) -> Self {
        self.docs = Some(docs);
        self
    }

    fn cors_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.cors.iter().any(|o| o == "*") {
            return Some(origin.cloned().unwrap_or(HeaderValue::from_static("*")));
        }
        let origin = origin?;
        self.cors
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
            .then(|| origin.clone())
    }

    /// Answers one request.
    pub async fn handle(self, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let origin = self.cors_origin(req.headers().get(header::ORIGIN));
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
            self.engine_request(node, req).await
        } else if let Some(r) = self
            .docs
            .as_ref()
            .and_then(|d| d.answer(req.method(), req.uri().path()))
        {
            r
        } else if let Some(rest) = self.rest.clone() {
            self.rest_request(&rest, req).await
        } else {
            json(404, Bytes::from_static(br#"{"detail":"Not Found"}"#))
        };
        if let Some(o) = origin {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        Ok(resp)
    }

    async fn engine_request(&self, node: NodeHandle, mut req: Request<Incoming>) -> Resp {
        let query = req.uri().query().unwrap_or("").to_owned();
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if is_upgrade(&req) {
            if let Err(e) = protocol::eio::parse_query(&query) {
                return json(400, Bytes::from(e.body()));
            }
            let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
                return json(
                    400,
                    Bytes::from(protocol::eio::RequestError::BadRequest.body()),
                );
            };
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let upgrade = hyper::upgrade::on(&mut req);
            let rt = self.rt.clone();
            let max = self.max_payload;
            self.rt.spawn(Box::pin(async move {
                let Ok(io) = upgrade.await else { return };
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
                })
                .await;
                crate::ws::pump(rt, conn, ws, BytesMut::from(read), node, max).await;
            }));
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
            );
            return r;
        }
        let method = match *req.method() {
            http::Method::GET => Method::Get,
            http::Method::POST => Method::Post,
            _ => Method::Other,
        };
        let Some(body) = read_body(req.into_body(), self.max_payload).await else {
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

    async fn rest_request(&self, host: &RestHost, req: Request<Incoming>) -> Resp {
        let (parts, body) = req.into_parts();
        let limit = protocol::http::MAX_BODY_BYTES;
        let Some(body) = read_body(body, limit).await else {
            return json(
                400,
                Bytes::from_static(br#"{"detail":"Could not read the request body"}"#),
            );
        };
        let header = |h: header::HeaderName| parts.headers.get(h).and_then(|v| v.to_str().ok());
        let request = protocol::http::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            content_type: header(header::CONTENT_TYPE),
            authorization: header(header::AUTHORIZATION),
            body: &body,
        };
        let mut step = {
            let mut ids = host.ids.lock().unwrap_or_else(|p| p.into_inner());
            host.rest.handle(&request, unix_ms(), &mut **ids)
        };
        loop {
            match step {
                Step::Respond(r) => {
                    let mut resp = json(r.status, r.body);
                    if let Some(allow) = r.allow {
                        resp.headers_mut()
                            .insert(header::ALLOW, HeaderValue::from_static(allow));
                    }
                    return resp;
                }
                Step::Run(effect, pending) => {
                    let result = self.run_effect(host, effect).await;
                    let mut ids = host.ids.lock().unwrap_or_else(|p| p.into_inner());
                    step = host.rest.resume(pending, result, unix_ms(), &mut **ids);
                }
            }
        }
    }

    async fn run_effect(&self, host: &RestHost, effect: Effect) -> EffectResult {
        match effect {
            Effect::Store(c) => {
                EffectResult::Store(protocol::store::execute(&*host.store, c).await)
            }
            Effect::HashPassword { password, cost } => {
                let r = self
                    .blocking(move || bcrypt::hash(password, cost).map_err(|e| e.to_string()))
                    .await;
                EffectResult::Hashed(r.unwrap_or_else(|| Err("hashing task failed".into())))
            }
            Effect::VerifyPassword { password, hash } => {
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

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Reads a body up to `limit + 1` bytes: enough for the core to see that it
/// is too large without holding more of it. `None` if the read failed.
async fn read_body(mut body: Incoming, limit: usize) -> Option<Bytes> {
    let mut buf = bytes::BytesMut::new();
    if let Some(n) = body.size_hint().upper()
        && n as usize <= limit
    {
        buf.reserve(n as usize);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Ok(data) = frame.into_data() {
            let room = (limit + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
            if buf.len() > limit {
                break;
            }
        }
    }
    Some(buf.freeze())
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

/// Serves HTTP/1.1 (with upgrades) on one accepted connection.
pub async fn serve_connection<R: Runtime, I>(io: I, routes: Routes<R>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| routes.clone().handle(req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!("connection ended: {e}");
    }
}
