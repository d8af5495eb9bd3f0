//! The REST routes as pure code: request -> effect -> response.
//!
//! [`Rest::handle`] turns a request into a [`Step`]: the response, or an
//! [`Effect`] for the host to run and a [`Pending`] to hand back with the
//! effect's result to [`Rest::resume`]. Store commands and bcrypt are effects,
//! so this module does no IO and never blocks; the host loops until it gets
//! [`Step::Respond`]:
//!
//! ```no_run
//! # use chatwire_protocol::http::{Effect, EffectResult, Request, Rest, Step};
//! # use chatwire_protocol::ids::IdGenerator;
//! # fn run(effect: Effect) -> EffectResult { unimplemented!() }
//! # fn serve(rest: &mut Rest, req: &Request<'_>, now_ms: i64, ids: &mut dyn IdGenerator) {
//! let mut step = rest.handle(req, now_ms, ids);
//! let response = loop {
//!     match step {
//!         Step::Respond(response) => break response,
//!         // The store through `store::execute`; bcrypt on a blocking pool.
//!         Step::Run(effect, pending) => step = rest.resume(pending, run(effect), now_ms, ids),
//!     }
//! };
//! # let _ = response;
//! # }
//! ```
//!
//! Errors mirror FastAPI's: a JSON `{"detail": "..."}` with the status the
//! contract names. Every transition lives in this file.

mod body;
#[cfg(feature = "openapi")]
pub mod openapi;
mod query;
mod schema;
pub mod throttle;
pub(crate) use query::percent_decode;
#[cfg(all(test, feature = "openapi"))]
mod openapi_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use bytes::Bytes;

use crate::auth::{JwtConfig, TokenError, bearer};
use crate::ids::{IdGenerator, new_object_id};
use crate::model::{PublicUser, UserRecord};
use crate::rate::UnixMs;
use crate::stats::AuthFailure;
use crate::store::{CreateUser, History, Side, StoreCommand, StoreReply};
use schema::{ErrorBody, Health, Readiness, Ready, ServiceInfo, TokenAnswer, TokenType};

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 1_000_000;

/// Salt and digest of a real bcrypt hash; with the configured cost in front it
/// makes a hash that verifies nothing, at the cost of a real check.
const DUMMY_SALT_AND_DIGEST: &str = "pcoh7QeJMPAeyFp6S/plV.r6sDWhAwjU7vpIvqQwZDauEpCbTRQbW";

/// An HTTP request as the host read it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method, upper case as sent (`GET`, `POST`).
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without the `?`.
    pub query: &'a str,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The body; the host stops reading past [`MAX_BODY_BYTES`].
    pub body: &'a [u8],
    /// The client's address (the TCP peer's, or what a trusted proxy says
    /// it is), for the throttles; `None` when the host cannot tell.
    pub peer: Option<std::net::IpAddr>,
}

/// An HTTP response; the body is always JSON (`application/json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The JSON body.
    pub body: Bytes,
    /// Why credentials were refused, when that is what the answer says:
    /// for the host's logs and counters, which must never see the token or
    /// password itself.
    pub auth_failure: Option<AuthFailure>,
    /// The `Allow` header of a 405 (RFC 9110 requires it): the methods the path answers.
    pub allow: Option<&'static str>,
    /// The `Retry-After` header of a 429 or 503, in seconds.
    pub retry_after: Option<u64>,
}

impl Response {
    fn json(status: u16, value: &impl serde::Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                body: Bytes::from(body),
                auth_failure: None,
                allow: None,
                retry_after: None,
            },
            Err(_) => Response::internal(),
        }
    }

    fn auth_failed(detail: &str, why: AuthFailure) -> Response {
        Response {
            auth_failure: Some(why),
            ..Response::error(401, detail)
        }
    }

    fn error(status: u16, detail: &str) -> Response {
        Response::json(status, &ErrorBody { detail })
    }

    fn internal() -> Response {
        Response {
            status: 500,
            body: Bytes::from_static(br#"{"detail":"Internal Server Error"}"#),
            auth_failure: None,
            allow: None,
            retry_after: None,
        }
    }

    /// `status` with `detail`, and `Retry-After: seconds`.
    fn retry_later(status: u16, detail: &str, seconds: u64) -> Response {
        Response {
            retry_after: Some(seconds),
            ..Response::error(status, detail)
        }
    }
}

/// What the host does next.
#[derive(Debug)]
#[must_use]
pub enum Step {
    /// Send this response; the request is done.
    Respond(Response),
    /// Run the effect, then pass its result and the pending state to [`Rest::resume`].
    Run(Effect, Pending),
}

/// Work the host does on the core's behalf.
#[derive(Clone, PartialEq)]
pub enum Effect {
    /// Run a store command; answer with [`EffectResult::Store`].
    Store(StoreCommand),
    /// Hash a password with bcrypt at this cost; answer with [`EffectResult::Hashed`].
    HashPassword {
        /// The password, 6 to 72 bytes.
        password: String,
        /// The bcrypt cost.
        cost: u32,
    },
    /// Check a password against a bcrypt hash; answer with [`EffectResult::Verified`].
    VerifyPassword {
        /// The password offered.
        password: String,
        /// The stored hash.
        hash: String,
    },
}

impl fmt::Debug for Effect {
    // Passwords must not reach a log through a host's tracing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Store(c) => f.debug_tuple("Store").field(c).finish(),
            Effect::HashPassword { cost, .. } => f
                .debug_struct("HashPassword")
                .field("cost", cost)
                .finish_non_exhaustive(),
            Effect::VerifyPassword { .. } => {
                f.debug_struct("VerifyPassword").finish_non_exhaustive()
            }
        }
    }
}

/// The outcome of an [`Effect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectResult {
    /// The store's reply to [`Effect::Store`].
    Store(StoreReply),
    /// The hash, or why bcrypt failed, for [`Effect::HashPassword`].
    Hashed(Result<String, String>),
    /// Whether the password matched, for [`Effect::VerifyPassword`]; a hash
    /// bcrypt cannot read counts as no match.
    Verified(bool),
    /// The host has too much of this work under way to take more now (its
    /// bcrypt pool is full): answered 503 with `Retry-After`.
    Busy,
}

/// What a request is waiting for; opaque, handed back to [`Rest::resume`].
pub struct Pending(Waiting);

impl fmt::Debug for Pending {
    // The login state holds a password: show only where the request is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            Waiting::Ready => "Ready",
            Waiting::Hashed { .. } => "Hashed",
            Waiting::Created { .. } => "Created",
            Waiting::Found { .. } => "Found",
            Waiting::Verified { .. } => "Verified",
            Waiting::History => "History",
        };
        f.debug_tuple("Pending").field(&state).finish()
    }
}

enum Waiting {
    /// `GET /ready`: the ping.
    Ready,
    /// `POST /register`: the password hash.
    Hashed { username: String },
    /// `POST /register`: the insert.
    Created { user: UserRecord },
    /// `POST /login`: the user lookup; who asked, for the throttle.
    Found {
        password: String,
        attempt: Box<Attempt>,
    },
    /// `POST /login`: the password check; `None` when no such user exists, so
    /// the answer is 401 whatever bcrypt says.
    Verified {
        user: Option<UserRecord>,
        attempt: Option<Box<Attempt>>,
    },
    /// `GET /messages`: the read.
    History,
}

/// A login attempt, as the throttle records its outcome.
struct Attempt {
    username: String,
    peer: Option<std::net::IpAddr>,
}

/// What the routes need to know.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Signs the tokens `/register` and `/login` return, and checks `/messages`'.
    pub jwt: JwtConfig,
    /// The bcrypt cost for new passwords (4 to 31).
    pub bcrypt_cost: u32,
    /// `service` in `GET /`.
    pub service: String,
    /// `version` in `GET /`.
    pub version: String,
    /// The throttles of `/login` and `/register`.
    pub throttle: throttle::ThrottleConfig,
}

/// The REST routes.
#[derive(Debug)]
pub struct Rest {
    config: RestConfig,
    /// Verified for unknown users, so that login takes as long for them.
    dummy_hash: String,
    throttle: throttle::Throttle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Root,
    Ready,
    Register,
    Login,
    Messages,
}

/// Every route: its path, its one method, and what answers it. `handle`
/// routes by this table alone, and the OpenAPI document is tested against it.
const ROUTES: [(&str, &str, Route); 5] = [
    ("/", "GET", Route::Root),
    ("/ready", "GET", Route::Ready),
    ("/register", "POST", Route::Register),
    ("/login", "POST", Route::Login),
    ("/messages", "GET", Route::Messages),
];

/// Every route's path, as [`route_label`] names them.
pub fn route_labels() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().map(|(p, ..)| *p)
}

/// The route a path names, as a `'static` label for a host's metrics and
/// logs (never the raw path a client sent); `None` for a path [`Rest`]
/// answers with 404.
pub fn route_label(path: &str) -> Option<&'static str> {
    ROUTES.iter().find(|(p, ..)| *p == path).map(|(p, ..)| *p)
}

impl Rest {
    /// The routes with their configuration.
    pub fn new(config: RestConfig) -> Self {
        // bcrypt's own bounds; a cost outside them fails at hashing anyway.
        let cost = config.bcrypt_cost.clamp(4, 31);
        Rest {
            dummy_hash: format!("$2b${cost:02}${DUMMY_SALT_AND_DIGEST}"),
            throttle: throttle::Throttle::new(config.throttle),
            config,
        }
    }

    /// Starts a request. `ids` is the same generator [`Rest::resume`] draws from.
    pub fn handle(&mut self, req: &Request<'_>, now_ms: i64, _ids: &mut dyn IdGenerator) -> Step {
        let Some(&(_, method, route)) = ROUTES.iter().find(|(path, ..)| *path == req.path) else {
            return respond(Response::error(404, "Not Found"));
        };
        if req.method != method {
            return respond(Response {
                allow: Some(method),
                ..Response::error(405, "Method Not Allowed")
            });
        }
        if req.body.len() > MAX_BODY_BYTES {
            return respond(Response::error(413, "Request body too large"));
        }
        match route {
            Route::Root => respond(Response::json(
                200,
                &ServiceInfo {
                    status: Health::Ok,
                    service: &self.config.service,
                    version: &self.config.version,
                },
            )),
            Route::Ready => Step::Run(Effect::Store(StoreCommand::Ping), Pending(Waiting::Ready)),
            Route::Register => self.register(req, now_ms),
            Route::Login => self.login(req, now_ms),
            Route::Messages => self.messages(req, now_ms),
        }
    }

    /// Continues a request with the result of the effect it asked for.
    ///
    /// A result of the wrong kind for `pending` is the host's bug, answered
    /// with 500, as is a bcrypt failure on a password that was checked.
    pub fn resume(
        &mut self,
        pending: Pending,
        result: EffectResult,
        now_ms: i64,
        ids: &mut dyn IdGenerator,
    ) -> Step {
        use EffectResult as R;
        if result == R::Busy {
            return respond(Response::retry_later(
                503,
                "The server is busy; retry in a moment",
                1,
            ));
        }
        if let R::Store(StoreReply::Failed(_)) = result {
            // The store's message may name hosts or credentials: keep it for
            // the host's logs, not for the client.
            return respond(Response::error(503, "Store unavailable"));
        }
        match (pending.0, result) {
            (Waiting::Ready, R::Store(StoreReply::Pong)) => respond(Response::json(
                200,
                &Ready {
                    status: Readiness::Ready,
                },
            )),
            (Waiting::Hashed { username }, R::Hashed(Ok(password_hash))) => {
                let user = UserRecord {
                    id: new_object_id(ids, now_ms),
                    username,
                    password_hash,
                    created_at: now_ms,
                };
                Step::Run(
                    Effect::Store(StoreCommand::CreateUser(user.clone())),
                    Pending(Waiting::Created { user }),
                )
            }
            (Waiting::Created { user }, R::Store(StoreReply::CreateUser(created))) => match created
            {
                CreateUser::Created => respond(self.token_response(201, &user, now_ms)),
                CreateUser::Taken => respond(Response::error(409, "Username already taken")),
            },
            (Waiting::Found { password, attempt }, R::Store(StoreReply::User(found))) => {
                let hash = match &found {
                    Some(user) => user.password_hash.clone(),
                    None => self.dummy_hash.clone(),
                };
                Step::Run(
                    Effect::VerifyPassword { password, hash },
                    Pending(Waiting::Verified {
                        user: found,
                        attempt: Some(attempt),
                    }),
                )
            }
            (Waiting::Verified { user, attempt }, R::Verified(ok)) => {
                let ok = ok && user.is_some();
                if let Some(a) = attempt {
                    if ok {
                        self.throttle.succeeded(&a.username, a.peer);
                    } else {
                        self.throttle.failed(&a.username, UnixMs(now_ms));
                    }
                }
                match user {
                    Some(user) if ok => respond(self.token_response(200, &user, now_ms)),
                    _ => respond(bad_credentials()),
                }
            }
            (Waiting::History, R::Store(StoreReply::History(history))) => match history {
                History::Messages(messages) => respond(Response::json(200, &messages)),
                History::UnknownAnchor(side) => {
                    let param = match side {
                        Side::Before => "beforeId",
                        Side::After => "afterId",
                    };
                    respond(Response::error(
                        422,
                        &format!("{param}: not the id of a message in this chat"),
                    ))
                }
            },
            _ => respond(Response::internal()),
        }
    }

    fn register(&mut self, req: &Request<'_>, now_ms: i64) -> Step {
        if let Err(wait) = self.throttle.attempt(req.peer, None, UnixMs(now_ms)) {
            return respond(too_many(wait));
        }
        let creds = match body::credentials(req) {
            Ok(c) => c,
            Err(r) => return respond(r),
        };
        if let Err(detail) = body::check_new_credentials(&creds) {
            return respond(Response::error(422, detail));
        }
        Step::Run(
            Effect::HashPassword {
                password: creds.password,
                cost: self.config.bcrypt_cost,
            },
            Pending(Waiting::Hashed {
                username: creds.username,
            }),
        )
    }

    fn login(&mut self, req: &Request<'_>, now_ms: i64) -> Step {
        let creds = match body::credentials(req) {
            Ok(c) => c,
            Err(r) => return respond(r),
        };
        let name = Some(creds.username.as_str());
        if let Err(wait) = self.throttle.attempt(req.peer, name, UnixMs(now_ms)) {
            return respond(too_many(wait));
        }
        if body::check_new_credentials(&creds).is_err() {
            // No such account can exist; still spend a bcrypt check so that
            // the answer takes as long as for a real user.
            return Step::Run(
                Effect::VerifyPassword {
                    password: String::new(),
                    hash: self.dummy_hash.clone(),
                },
                Pending(Waiting::Verified {
                    user: None,
                    attempt: None,
                }),
            );
        }
        Step::Run(
            Effect::Store(StoreCommand::FindUser(creds.username.clone())),
            Pending(Waiting::Found {
                password: creds.password,
                attempt: Box::new(Attempt {
                    username: creds.username,
                    peer: req.peer,
                }),
            }),
        )
    }

    fn messages(&self, req: &Request<'_>, now_ms: i64) -> Step {
        let Some(token) = req.authorization.and_then(bearer) else {
            return respond(Response::auth_failed(
                "Not authenticated",
                AuthFailure::MissingToken,
            ));
        };
        if let Err(e) = self.config.jwt.verify(token, now_ms) {
            let detail = match e {
                TokenError::Expired => "Token expired",
                _ => "Invalid token",
            };
            return respond(Response::auth_failed(detail, e.into()));
        }
        let query = match query::history(req.query) {
            Ok(q) => q,
            Err(detail) => return respond(Response::error(422, &detail)),
        };
        Step::Run(
            Effect::Store(StoreCommand::History(query)),
            Pending(Waiting::History),
        )
    }

    fn token_response(&self, status: u16, user: &UserRecord, now_ms: i64) -> Response {
        let token = self.config.jwt.issue(user.id, &user.username, now_ms);
        Response::json(
            status,
            &TokenAnswer {
                access_token: &token,
                token_type: TokenType::Bearer,
                user: PublicUser::from(user),
            },
        )
    }
}

fn respond(response: Response) -> Step {
    Step::Respond(response)
}

/// A throttled attempt at `/login` or `/register`.
fn too_many(wait: u64) -> Response {
    Response::retry_later(429, "Too many attempts; retry later", wait)
}

/// Unknown user and wrong password say the same, so a caller cannot tell
/// which names exist.
fn bad_credentials() -> Response {
    Response::auth_failed("Invalid username or password", AuthFailure::BadCredentials)
}
