//! The OpenAPI 3.1 document of the REST routes (feature `openapi`), built
//! with utoipa from the types the routes serialize and the constants they
//! check, so that it cannot drift from them; `tests.rs` checks it against
//! the routes themselves (paths, methods, parameters' bounds, statuses).

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Required};
use utoipa::{IntoParams, Modify, OpenApi};

use super::body::Credentials;
use super::query::{DEFAULT_LIMIT, LIMIT};
use super::schema::{ErrorBody, Health, Readiness, Ready, ServiceInfo, TokenAnswer, TokenType};
use crate::model::{
    DEFAULT_CHAT, MAX_CHAT_ID_LEN, Message, OBJECT_ID_INPUT_PATTERN, ObjectId, PublicUser, Status,
    chat_id_pattern,
};

/// The name of the bearer security scheme in the document (the `security` of
/// `messages` below spells it too: utoipa takes a literal there).
const BEARER: &str = "bearer";

/// The OpenAPI document, `info` naming this service and version.
pub fn document(service: &str, version: &str) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.title = service.to_owned();
    doc.info.version = version.to_owned();
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "The REST routes of chatwire, a real-time chat backend. Real-time \
            events go over Socket.IO at `/socket.io/` (their AsyncAPI document is \
            `/asyncapi.json`). Every error is JSON `{\"detail\": \"...\"}`; an unknown path \
            answers 404, a known path with another method 405 with `Allow`.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(root, ready, register, login, messages),
    components(schemas(
        ErrorBody, ServiceInfo, Health, Ready, Readiness, TokenAnswer, TokenType,
        Credentials, PublicUser, Message, Status, ObjectId
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "health", description = "Is the service up, and its store?"),
        (name = "auth", description = "Accounts and tokens."),
        (name = "messages", description = "Chat history."),
    ),
)]
struct ApiDoc;

/// HTTP bearer with a JWT, as `/messages` takes it.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `access_token` of `POST /register` or `POST /login`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The query parameters of `GET /messages`, from the rules `query.rs` applies.
struct HistoryParams;

impl IntoParams for HistoryParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, description: &str, schema: ObjectBuilder| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema))
                .build()
        };
        let ms = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                    utoipa::openapi::schema::KnownFormat::Int64,
                )))
                .minimum(Some(i64::MIN))
                .maximum(Some(i64::MAX))
                .examples([1_732_540_800_123i64])
        };
        let id = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(OBJECT_ID_INPUT_PATTERN))
                .examples(["665f1c2e9b1e8a3f4c2d1a0b"])
        };
        vec![
            param(
                "limit",
                "How many messages, at most.",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(*LIMIT.start()))
                    .maximum(Some(*LIMIT.end()))
                    .default(Some(DEFAULT_LIMIT.into()))
                    .examples([DEFAULT_LIMIT]),
            ),
            param(
                "chatId",
                "The chat.",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(MAX_CHAT_ID_LEN))
                    .pattern(Some(chat_id_pattern()))
                    .default(Some(DEFAULT_CHAT.into()))
                    .examples([DEFAULT_CHAT, "team.eng"]),
            ),
            param(
                "before",
                "Only messages strictly before this time (ms since the Unix epoch). With \
                 `beforeId` as well, both bounds apply.",
                ms(),
            ),
            param(
                "beforeId",
                "Only messages strictly before this message of the chat (page back with the \
                 first id of the previous page); an id that names no message of this chat \
                 gets 422.",
                id(),
            ),
            param(
                "after",
                "Only messages strictly after this time (ms since the Unix epoch); the page is \
                 then the oldest `limit` of them. With `afterId` as well, both bounds apply.",
                ms(),
            ),
            param(
                "afterId",
                "Only messages strictly after this message of the chat (catch up after a \
                 reconnect with the last id seen); the page is then the oldest `limit` of \
                 them. An id that names no message of this chat gets 422.",
                id(),
            ),
        ]
    }
}

/// Health: the service answers.
#[utoipa::path(
    get, path = "/", tag = "health", operation_id = "root",
    responses(
        (status = 200, description = "The service is up.", body = ServiceInfo),
        (status = 413, description = "The request had a body over 1,000,000 bytes.",
            body = ErrorBody, example = json!({"detail": "Request body too large"})),
    ),
)]
#[allow(dead_code)]
fn root() {}

/// Readiness: the store answers.
#[utoipa::path(
    get, path = "/ready", tag = "health", operation_id = "ready",
    responses(
        (status = 200, description = "The store answered a ping.", body = Ready),
        (status = 413, description = "The request had a body over 1,000,000 bytes.",
            body = ErrorBody, example = json!({"detail": "Request body too large"})),
        (status = 503, description = "The store did not answer.",
            body = ErrorBody, example = json!({"detail": "Store unavailable"})),
    ),
)]
#[allow(dead_code)]
fn ready() {}

/// Creates an account and returns a token for it.
#[utoipa::path(
    post, path = "/register", tag = "auth", operation_id = "register",
    request_body(content = Credentials, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the token is valid at once.", body = TokenAnswer),
        (status = 400, description = "The body is not JSON.",
            body = ErrorBody, example = json!({"detail": "Malformed JSON body: expected value at line 1 column 1"})),
        (status = 409, description = "The username is taken (names are unique without regard to case).",
            body = ErrorBody, example = json!({"detail": "Username already taken"})),
        (status = 413, description = "The body is over 1,000,000 bytes.",
            body = ErrorBody, example = json!({"detail": "Request body too large"})),
        (status = 415, description = "The body is not declared `application/json`.",
            body = ErrorBody, example = json!({"detail": "Content-Type must be application/json"})),
        (status = 422, description = "A field is missing, of the wrong type, or out of bounds.",
            body = ErrorBody, example = json!({"detail": "password: must be 6 to 72 bytes"})),
        (status = 429, description = "Too many attempts from this client address: retry after `Retry-After` seconds.",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait.")),
            example = json!({"detail": "Too many attempts; retry later"})),
        (status = 503, description = "The store did not answer, or too many password checks are under way (then with `Retry-After`).",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when the server is busy.")),
            example = json!({"detail": "Store unavailable"})),
    ),
)]
#[allow(dead_code)]
fn register() {}

/// Returns a token for an existing account.
#[utoipa::path(
    post, path = "/login", tag = "auth", operation_id = "login",
    request_body(content = Credentials, content_type = "application/json"),
    responses(
        (status = 200, description = "The token.", body = TokenAnswer),
        (status = 400, description = "The body is not JSON.",
            body = ErrorBody, example = json!({"detail": "Malformed JSON body: expected value at line 1 column 1"})),
        (status = 401, description = "Unknown user or wrong password (the same answer, in about the same time).",
            body = ErrorBody, example = json!({"detail": "Invalid username or password"})),
        (status = 413, description = "The body is over 1,000,000 bytes.",
            body = ErrorBody, example = json!({"detail": "Request body too large"})),
        (status = 415, description = "The body is not declared `application/json`.",
            body = ErrorBody, example = json!({"detail": "Content-Type must be application/json"})),
        (status = 422, description = "A field is missing or not a string.",
            body = ErrorBody, example = json!({"detail": "username: field required"})),
        (status = 429, description = "Too many attempts from this client address, or too many failed logins for this username from addresses it never logged in from: retry after `Retry-After` seconds.",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait.")),
            example = json!({"detail": "Too many attempts; retry later"})),
        (status = 503, description = "The store did not answer, or too many password checks are under way (then with `Retry-After`).",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait, when the server is busy.")),
            example = json!({"detail": "Store unavailable"})),
    ),
)]
#[allow(dead_code)]
fn login() {}

/// A page of a chat's history, oldest first.
///
/// A before-bound (`before`, `beforeId`) keeps the messages strictly older
/// than it, an after-bound (`after`, `afterId`) those strictly newer; with
/// both, what lies between them. A time and an id on one side both apply.
/// With an after-bound the page is the oldest `limit` of what they keep
/// (catching up); otherwise the newest `limit` (with no bound, the newest of
/// the chat).
#[utoipa::path(
    get, path = "/messages", tag = "messages", operation_id = "messages",
    params(HistoryParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The messages, oldest first.", body = Vec<Message>),
        (status = 401, description = "The token is missing, invalid or expired.",
            body = ErrorBody, example = json!({"detail": "Not authenticated"})),
        (status = 413, description = "The request had a body over 1,000,000 bytes.",
            body = ErrorBody, example = json!({"detail": "Request body too large"})),
        (status = 422, description = "A parameter is out of bounds, or an id names no message \
            of the chat.",
            body = ErrorBody, example = json!({"detail": "limit: must be an integer from 1 to 100"})),
        (status = 503, description = "The store did not answer.",
            body = ErrorBody, example = json!({"detail": "Store unavailable"})),
    ),
)]
#[allow(dead_code)]
fn messages() {}
