//! Every route through `handle` and `resume`, with the effects' results faked.

use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::ids::CounterIds;
use crate::model::{Message, ObjectId, Status};
use crate::store::{Bound, HistoryQuery, StoreError, Window};

const NOW: i64 = 1_732_540_800_123;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const HASH: &str = "$2b$12$pcoh7QeJMPAeyFp6S/plV.r6sDWhAwjU7vpIvqQwZDauEpCbTRQbW";

fn jwt() -> JwtConfig {
    JwtConfig::new(SECRET, "HS256", 60).unwrap()
}

fn rest_with_cost(bcrypt_cost: u32) -> Rest {
    Rest::new(RestConfig {
        jwt: jwt(),
        bcrypt_cost,
        service: "chatwire".into(),
        version: "0.1.0".into(),
        throttle: Default::default(),
    })
}

fn rest() -> Rest {
    rest_with_cost(12)
}

fn get(path: &str) -> Request<'_> {
    Request {
        method: "GET",
        path,
        query: "",
        content_type: None,
        authorization: None,
        body: b"",
        peer: None,
    }
}

fn post<'a>(path: &'a str, body: &'a [u8]) -> Request<'a> {
    Request {
        method: "POST",
        content_type: Some("application/json"),
        body,
        ..get(path)
    }
}

fn ana() -> UserRecord {
    UserRecord {
        id: "665f1c0a9b1e8a3f4c2d19ff".parse().unwrap(),
        username: "Ana".into(),
        password_hash: HASH.into(),
        created_at: 1_700_000_000_000,
    }
}

#[track_caller]
fn answered(step: Step) -> (u16, Value) {
    match step {
        Step::Respond(r) => (
            r.status,
            serde_json::from_slice(&r.body).expect("JSON body"),
        ),
        Step::Run(effect, _) => panic!("expected a response, got {effect:?}"),
    }
}

#[track_caller]
fn effect(step: Step) -> (Effect, Pending) {
    match step {
        Step::Run(effect, pending) => (effect, pending),
        Step::Respond(r) => panic!("expected an effect, got {r:?}"),
    }
}

#[track_caller]
fn refused(step: Step, status: u16, detail: &str) {
    if let Step::Respond(r) = &step {
        assert_eq!(r.auth_failure, None, "{detail}: not an auth failure");
    }
    assert_eq!(answered(step), (status, json!({ "detail": detail })));
}

/// A 401 that names why the credentials were refused.
#[track_caller]
fn auth_refused(step: Step, detail: &str, why: AuthFailure) {
    match &step {
        Step::Respond(r) => assert_eq!(r.auth_failure, Some(why), "{detail}"),
        Step::Run(effect, _) => panic!("expected a response, got {effect:?}"),
    }
    assert_eq!(answered(step), (401, json!({ "detail": detail })));
}

fn handle(rest: &mut Rest, req: &Request<'_>) -> Step {
    rest.handle(req, NOW, &mut CounterIds::default())
}

fn resume(rest: &mut Rest, pending: Pending, result: EffectResult) -> Step {
    rest.resume(pending, result, NOW, &mut CounterIds::default())
}

fn failed() -> EffectResult {
    EffectResult::Store(StoreReply::Failed(StoreError::transient(
        "mongodb://admin:hunter2@db unreachable",
    )))
}

#[track_caller]
fn assert_token_answer(body: &Value, user: &UserRecord) {
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        body["user"],
        json!({"id": user.id.to_hex(), "username": user.username, "createdAt": user.created_at})
    );
    let token = body["access_token"]
        .as_str()
        .expect("access_token is a string");
    let claims = jwt().verify(token, NOW).unwrap();
    assert_eq!(
        (claims.user_id, claims.username.as_str()),
        (user.id, user.username.as_str())
    );
}

#[test]
fn root_names_the_service() {
    assert_eq!(
        answered(handle(&mut rest(), &get("/"))),
        (
            200,
            json!({"status": "ok", "service": "chatwire", "version": "0.1.0"})
        )
    );
}

#[test]
fn unknown_routes_and_wrong_methods() {
    let mut rest = rest();
    for path in ["/nope", "/messages/", "", "/docs", "/register/x"] {
        refused(handle(&mut rest, &get(path)), 404, "Not Found");
    }
    refused(
        handle(&mut rest, &post("/", b"{}")),
        405,
        "Method Not Allowed",
    );
    refused(handle(&mut rest, &get("/login")), 405, "Method Not Allowed");
    refused(
        handle(&mut rest, &post("/messages", b"")),
        405,
        "Method Not Allowed",
    );
}

#[test]
fn ready_asks_the_store() {
    let mut rest = rest();
    let (e, p) = effect(handle(&mut rest, &get("/ready")));
    assert_eq!(e, Effect::Store(StoreCommand::Ping));
    assert_eq!(
        answered(resume(&mut rest, p, EffectResult::Store(StoreReply::Pong))),
        (200, json!({"status": "ready"}))
    );
    let (_, p) = effect(handle(&mut rest, &get("/ready")));
    // The store's error text stays out of the answer.
    refused(resume(&mut rest, p, failed()), 503, "Store unavailable");
}

#[test]
fn register_hashes_creates_and_answers_201() {
    let mut rest = rest();
    let (e, p) = effect(handle(
        &mut rest,
        &post("/register", br#"{"username":"Ana","password":"secret1"}"#),
    ));
    assert_eq!(
        e,
        Effect::HashPassword {
            password: "secret1".into(),
            cost: 12
        }
    );
    let (e, p) = effect(resume(&mut rest, p, EffectResult::Hashed(Ok(HASH.into()))));
    let Effect::Store(StoreCommand::CreateUser(user)) = e else {
        panic!("expected CreateUser, got {e:?}");
    };
    assert_eq!(user.username, "Ana");
    assert_eq!(user.password_hash, HASH);
    assert_eq!(user.created_at, NOW);
    assert_eq!(user.id.seconds(), 1_732_540_800);
    let (status, body) = answered(resume(
        &mut rest,
        p,
        EffectResult::Store(StoreReply::CreateUser(CreateUser::Created)),
    ));
    assert_eq!(status, 201);
    assert_token_answer(&body, &user);
}

#[test]
fn register_answers_409_503_and_500() {
    let mut rest = rest();
    let start = |rest: &mut Rest| {
        let (_, p) = effect(handle(
            rest,
            &post("/register", br#"{"username":"ana","password":"secret1"}"#),
        ));
        p
    };
    let p = start(&mut rest);
    let (_, p) = effect(resume(&mut rest, p, EffectResult::Hashed(Ok(HASH.into()))));
    refused(
        resume(
            &mut rest,
            p,
            EffectResult::Store(StoreReply::CreateUser(CreateUser::Taken)),
        ),
        409,
        "Username already taken",
    );
    let p = start(&mut rest);
    let (_, p) = effect(resume(&mut rest, p, EffectResult::Hashed(Ok(HASH.into()))));
    refused(resume(&mut rest, p, failed()), 503, "Store unavailable");
    // bcrypt failing on a checked password is the server's fault.
    let p = start(&mut rest);
    refused(
        resume(&mut rest, p, EffectResult::Hashed(Err("cost".into()))),
        500,
        "Internal Server Error",
    );
}

#[test]
fn register_checks_the_body() {
    let mut rest = rest();
    let cases: &[(&[u8], u16, &str)] = &[
        (b"{\"username\":", 400, ""),
        (b"\xff\xfe", 400, ""),
        (b"", 422, "body: field required"),
        (b"[]", 422, "body: must be a JSON object"),
        (b"\"ana\"", 422, "body: must be a JSON object"),
        (
            br#"{"password":"secret1"}"#,
            422,
            "username: field required",
        ),
        (br#"{"username":"ana"}"#, 422, "password: field required"),
        (
            br#"{"username":7,"password":"secret1"}"#,
            422,
            "username: must be a string",
        ),
        (
            br#"{"username":"ana","password":null}"#,
            422,
            "password: must be a string",
        ),
        (
            br#"{"username":"an","password":"secret1"}"#,
            422,
            "username: must be 3 to 32 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            br#"{"username":"ana!","password":"secret1"}"#,
            422,
            "username: must be 3 to 32 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            "{\"username\":\"ana\u{ef}s\",\"password\":\"secret1\"}".as_bytes(),
            422,
            "username: must be 3 to 32 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            br#"{"username":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","password":"secret1"}"#,
            422,
            "username: must be 3 to 32 characters of A-Z a-z 0-9 _ . -",
        ),
        (
            br#"{"username":"ana","password":"12345"}"#,
            422,
            "password: must be 6 to 72 bytes",
        ),
    ];
    for (body, status, detail) in cases {
        let (got, value) = answered(handle(&mut rest, &post("/register", body)));
        assert_eq!(got, *status, "{}", String::from_utf8_lossy(body));
        if detail.is_empty() {
            assert!(
                value["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("Malformed JSON body")
            );
        } else {
            assert_eq!(
                value,
                json!({ "detail": detail }),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

#[test]
fn passwords_are_bounded_in_bytes_not_characters() {
    let mut rest = rest();
    let body = |password: &str| json!({"username": "a.b_c-9", "password": password}).to_string();
    // 36 two-byte characters are 72 bytes: accepted whole.
    let ok = "é".repeat(36);
    let (e, _) = effect(handle(&mut rest, &post("/register", body(&ok).as_bytes())));
    assert_eq!(
        e,
        Effect::HashPassword {
            password: ok,
            cost: 12
        }
    );
    let too_long = "é".repeat(37);
    refused(
        handle(&mut rest, &post("/register", body(&too_long).as_bytes())),
        422,
        "password: must be 6 to 72 bytes",
    );
    refused(
        handle(
            &mut rest,
            &post("/register", body(&"x".repeat(73)).as_bytes()),
        ),
        422,
        "password: must be 6 to 72 bytes",
    );
    let name32 = json!({"username": "a".repeat(32), "password": "secret1"}).to_string();
    effect(handle(&mut rest, &post("/register", name32.as_bytes())));
}

#[test]
fn only_json_is_accepted() {
    let mut rest = rest();
    let body = br#"{"username":"ana","password":"secret1"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
    ] {
        let req = Request {
            content_type: ct,
            ..post("/register", body)
        };
        refused(
            handle(&mut rest, &req),
            415,
            "Content-Type must be application/json",
        );
    }
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ;charset=UTF-8",
    ] {
        let req = Request {
            content_type: Some(ct),
            ..post("/login", body)
        };
        effect(handle(&mut rest, &req));
    }
}

#[test]
fn oversized_bodies_get_413() {
    let mut rest = rest();
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    refused(
        handle(&mut rest, &post("/register", &big)),
        413,
        "Request body too large",
    );
    refused(
        handle(&mut rest, &post("/login", &big)),
        413,
        "Request body too large",
    );
    let mut padded = br#"{"username":"ana","password":"secret1"}"#.to_vec();
    padded.resize(MAX_BODY_BYTES, b' ');
    effect(handle(&mut rest, &post("/register", &padded)));
}

#[test]
fn login_finds_verifies_and_answers_200() {
    let mut rest = rest();
    let (e, p) = effect(handle(
        &mut rest,
        &post("/login", br#"{"username":"ana","password":"secret1"}"#),
    ));
    assert_eq!(e, Effect::Store(StoreCommand::FindUser("ana".into())));
    let (e, p) = effect(resume(
        &mut rest,
        p,
        EffectResult::Store(StoreReply::User(Some(ana()))),
    ));
    assert_eq!(
        e,
        Effect::VerifyPassword {
            password: "secret1".into(),
            hash: HASH.into()
        }
    );
    let (status, body) = answered(resume(&mut rest, p, EffectResult::Verified(true)));
    assert_eq!(status, 200);
    assert_token_answer(&body, &ana());
}

#[test]
fn unknown_user_and_wrong_password_look_alike() {
    let mut rest = rest();
    let login = br#"{"username":"ana","password":"secret1"}"#;
    let (_, p) = effect(handle(&mut rest, &post("/login", login)));
    let (_, p) = effect(resume(
        &mut rest,
        p,
        EffectResult::Store(StoreReply::User(Some(ana()))),
    ));
    let wrong = answered(resume(&mut rest, p, EffectResult::Verified(false)));

    let (_, p) = effect(handle(&mut rest, &post("/login", login)));
    let (e, p) = effect(resume(
        &mut rest,
        p,
        EffectResult::Store(StoreReply::User(None)),
    ));
    // Unknown users cost a bcrypt check at the configured cost too.
    assert_eq!(
        e,
        Effect::VerifyPassword {
            password: "secret1".into(),
            hash: HASH.into()
        }
    );
    // Whatever bcrypt says, there is no account to log into.
    let unknown = answered(resume(&mut rest, p, EffectResult::Verified(true)));
    assert_eq!(wrong, unknown);
    assert_eq!(
        unknown,
        (401, json!({"detail": "Invalid username or password"}))
    );
}

#[test]
fn login_with_impossible_credentials_still_costs_a_check() {
    let mut rest = rest();
    for body in [
        json!({"username": "a", "password": "secret1"}),
        json!({"username": "ana", "password": "x".repeat(73)}),
    ] {
        let (e, p) = effect(handle(
            &mut rest,
            &post("/login", body.to_string().as_bytes()),
        ));
        assert_eq!(
            e,
            Effect::VerifyPassword {
                password: String::new(),
                hash: HASH.into()
            }
        );
        auth_refused(
            resume(&mut rest, p, EffectResult::Verified(true)),
            "Invalid username or password",
            AuthFailure::BadCredentials,
        );
    }
}

#[test]
fn login_errors() {
    let mut rest = rest();
    refused(
        handle(&mut rest, &post("/login", br#"{"username":"ana"}"#)),
        422,
        "password: field required",
    );
    refused(
        handle(
            &mut rest,
            &post("/login", br#"{"username":["ana"],"password":"x"}"#),
        ),
        422,
        "username: must be a string",
    );
    let (_, p) = effect(handle(
        &mut rest,
        &post("/login", br#"{"username":"ana","password":"secret1"}"#),
    ));
    refused(resume(&mut rest, p, failed()), 503, "Store unavailable");
}

#[test]
fn the_timing_hash_is_one_bcrypt_accepts() {
    let mut rest = rest_with_cost(4);
    let (_, p) = effect(handle(
        &mut rest,
        &post("/login", br#"{"username":"ana","password":"secret1"}"#),
    ));
    let (e, _) = effect(resume(
        &mut rest,
        p,
        EffectResult::Store(StoreReply::User(None)),
    ));
    let Effect::VerifyPassword { password, hash } = e else {
        panic!("expected VerifyPassword, got {e:?}");
    };
    assert!(hash.starts_with("$2b$04$"));
    assert!(!bcrypt::verify(&password, &hash).unwrap());
    assert!(!bcrypt::verify("secret1", &hash).unwrap());
}

fn authorized(query: &str) -> Request<'_> {
    Request {
        query,
        authorization: Some(BEARER.as_str()),
        ..get("/messages")
    }
}

/// A header with a token that is valid at `NOW`.
static BEARER: LazyLock<String> =
    LazyLock::new(|| format!("Bearer {}", jwt().issue(ana().id, "ana", NOW)));

#[track_caller]
fn history_query(query: &str) -> HistoryQuery {
    match effect(handle(&mut rest(), &authorized(query))).0 {
        Effect::Store(StoreCommand::History(q)) => q,
        e => panic!("expected a history read, got {e:?}"),
    }
}

#[test]
fn messages_needs_a_valid_token() {
    let mut rest = rest();
    auth_refused(
        handle(&mut rest, &get("/messages")),
        "Not authenticated",
        AuthFailure::MissingToken,
    );
    for header in ["Basic YW5hOnNlY3JldDE=", "Bearer", "Bearer ", "token"] {
        let req = Request {
            authorization: Some(header),
            ..get("/messages")
        };
        auth_refused(
            handle(&mut rest, &req),
            "Not authenticated",
            AuthFailure::MissingToken,
        );
    }
    let req = Request {
        authorization: Some("Bearer not.a.token"),
        ..get("/messages")
    };
    auth_refused(
        handle(&mut rest, &req),
        "Invalid token",
        AuthFailure::InvalidToken,
    );
    let other = JwtConfig::new(b"another secret that is 32 bytes!", "HS256", 60).unwrap();
    let forged = format!("Bearer {}", other.issue(ana().id, "ana", NOW));
    let req = Request {
        authorization: Some(&forged),
        ..get("/messages")
    };
    auth_refused(
        handle(&mut rest, &req),
        "Invalid token",
        AuthFailure::InvalidToken,
    );

    let lower = format!("bearer {}", jwt().issue(ana().id, "ana", NOW));
    let req = Request {
        authorization: Some(&lower),
        ..get("/messages")
    };
    effect(handle(&mut rest, &req));
    let an_hour_later = NOW + 3_600_000;
    let step = rest.handle(&req, an_hour_later, &mut CounterIds::default());
    auth_refused(step, "Token expired", AuthFailure::ExpiredToken);
}

#[test]
fn messages_query_defaults_and_windows() {
    let q = |chat: &str, window, limit| HistoryQuery {
        chat_id: chat.into(),
        window,
        limit,
    };
    let id: ObjectId = "665f1c2e9b1e8a3f4c2d1a0b".parse().unwrap();
    assert_eq!(history_query(""), q("general", Window::LATEST, 30));
    assert_eq!(history_query("limit=1"), q("general", Window::LATEST, 1));
    assert_eq!(
        history_query("limit=100&unknown=x"),
        q("general", Window::LATEST, 100)
    );
    assert_eq!(
        history_query("before=1732540800123"),
        q(
            "general",
            Window::before(Bound::time(1_732_540_800_123)),
            30
        )
    );
    assert_eq!(
        history_query("after=5&limit=7&chatId=room-1"),
        q("room-1", Window::after(Bound::time(5)), 7)
    );
    assert_eq!(
        history_query("beforeId=665f1c2e9b1e8a3f4c2d1a0b"),
        q("general", Window::before(Bound::id(id)), 30)
    );
    assert_eq!(
        history_query("afterId=665f1c2e9b1e8a3f4c2d1a0b&chatId=a"),
        q("a", Window::after(Bound::id(id)), 30)
    );
    // Percent-decoding, `+` as a space, and the last of repeated values.
    assert_eq!(
        history_query("chat%49d=team%3Aops&limit=%2B5&limit=+6+"),
        q("team:ops", Window::LATEST, 6)
    );
    assert_eq!(history_query("&&limit=2&"), q("general", Window::LATEST, 2));
    // Any combination: a range, and a time with an id on one side.
    let both = |time, id| Bound {
        time: Some(time),
        id: Some(id),
    };
    assert_eq!(
        history_query(&format!("after=5&beforeId={id}")),
        q(
            "general",
            Window {
                before: Bound::id(id),
                after: Bound::time(5),
            },
            30
        )
    );
    assert_eq!(
        history_query(&format!("before=9&beforeId={id}&after=1&afterId={id}")),
        q(
            "general",
            Window {
                before: both(9, id),
                after: both(1, id),
            },
            30
        )
    );
}

#[test]
fn messages_query_errors() {
    let mut rest = rest();
    let limit = "limit: must be an integer from 1 to 100";
    let chat = "chatId: must be 1 to 64 characters of A-Z a-z 0-9 _ . : -";
    let id = "665f1c2e9b1e8a3f4c2d1a0b";
    let cases = [
        ("limit=0".to_owned(), limit),
        ("limit=101".to_owned(), limit),
        ("limit=".to_owned(), limit),
        ("limit=1.5".to_owned(), limit),
        ("limit=ten".to_owned(), limit),
        (
            "before=abc".to_owned(),
            "before: must be an integer (milliseconds since the Unix epoch)",
        ),
        (
            "before=99999999999999999999".to_owned(),
            "before: must be an integer (milliseconds since the Unix epoch)",
        ),
        (
            "after=".to_owned(),
            "after: must be an integer (milliseconds since the Unix epoch)",
        ),
        (
            "beforeId=xyz".to_owned(),
            "beforeId: must be a 24-character hex message id",
        ),
        (
            format!("afterId={id}0"),
            "afterId: must be a 24-character hex message id",
        ),
        ("chatId=".to_owned(), chat),
        ("chatId=a+b".to_owned(), chat),
        ("chatId=%E2%82%AC".to_owned(), chat),
        (format!("chatId={}", "a".repeat(65)), chat),
    ];
    for (query, detail) in &cases {
        refused(handle(&mut rest, &authorized(query)), 422, detail);
    }
    let max_chat = format!("chatId={}", "a".repeat(64));
    assert_eq!(history_query(&max_chat).chat_id.len(), 64);
}

#[test]
fn messages_answers() {
    let mut rest = rest();
    let message = Message {
        id: "665f1c2e9b1e8a3f4c2d1a0b".parse().unwrap(),
        chat_id: "general".into(),
        author: "ana".into(),
        author_id: ana().id,
        text: "hi".into(),
        timestamp: 1_732_540_800_123,
        status: Status::Sent,
        kind: "text".into(),
    };
    let (_, p) = effect(handle(&mut rest, &authorized("")));
    let reply = EffectResult::Store(StoreReply::History(History::Messages(vec![
        message.clone(),
    ])));
    assert_eq!(
        answered(resume(&mut rest, p, reply)),
        (200, json!([serde_json::to_value(&message).unwrap()]))
    );
    let (_, p) = effect(handle(&mut rest, &authorized("")));
    let empty = EffectResult::Store(StoreReply::History(History::Messages(vec![])));
    assert_eq!(answered(resume(&mut rest, p, empty)), (200, json!([])));

    let unknown = || EffectResult::Store(StoreReply::History(History::UnknownAnchor(Side::Before)));
    let (_, p) = effect(handle(
        &mut rest,
        &authorized("beforeId=665f1c2e9b1e8a3f4c2d1a0b"),
    ));
    refused(
        resume(&mut rest, p, unknown()),
        422,
        "beforeId: not the id of a message in this chat",
    );
    // The store names the side whose id it did not find.
    let (_, p) = effect(handle(
        &mut rest,
        &authorized("afterId=665f1c2e9b1e8a3f4c2d1a0b&beforeId=665f1c2e9b1e8a3f4c2d1a0c"),
    ));
    let unknown_after =
        EffectResult::Store(StoreReply::History(History::UnknownAnchor(Side::After)));
    refused(
        resume(&mut rest, p, unknown_after),
        422,
        "afterId: not the id of a message in this chat",
    );

    let (_, p) = effect(handle(&mut rest, &authorized("")));
    refused(resume(&mut rest, p, failed()), 503, "Store unavailable");
}

#[test]
fn a_result_of_the_wrong_kind_is_a_host_bug() {
    let mut rest = rest();
    let (_, p) = effect(handle(&mut rest, &get("/ready")));
    refused(
        resume(&mut rest, p, EffectResult::Verified(true)),
        500,
        "Internal Server Error",
    );
}

#[test]
fn passwords_stay_out_of_debug_output() {
    let mut rest = rest();
    let (e, p) = effect(handle(
        &mut rest,
        &post("/login", br#"{"username":"ana","password":"hunter22"}"#),
    ));
    let (e2, p2) = effect(resume(
        &mut rest,
        p,
        EffectResult::Store(StoreReply::User(Some(ana()))),
    ));
    let (e3, _) = effect(handle(
        &mut rest,
        &post("/register", br#"{"username":"ana","password":"hunter22"}"#),
    ));
    let shown = format!("{e:?} {e2:?} {p2:?} {e3:?} {rest:?}");
    assert!(!shown.contains("hunter22"), "{shown}");
    assert!(!shown.contains("0123456789abcdef"), "{shown}");
}

proptest! {
    /// Nothing a client sends is answered with 500, or panics.
    #[test]
    fn no_request_is_a_server_error(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "get", ""]),
        path in prop::sample::select(vec!["/", "/ready", "/register", "/login", "/messages", "/x"]),
        query in "[a-zA-Z=&%+0-9]{0,40}",
        content_type in prop::option::of(
            prop::sample::select(vec!["application/json", "text/plain", ""])
        ),
        authorization in prop::option::of("(Bearer )?[a-zA-Z0-9._-]{0,40}"),
        body in prop::collection::vec(any::<u8>(), 0..64),
        json_body in prop::option::of(
            r#"\{"username": ?"[a-z!é]{0,40}", ?"password": ?"[a-z]{0,80}"\}"#
        ),
    ) {
        let body = json_body.map(String::into_bytes).unwrap_or(body);
        let auth = authorization.map(|a| if a == "Bearer valid" { BEARER.clone() } else { a });
        let req = Request {
            method,
            path,
            query: &query,
            content_type,
            authorization: auth.as_deref(),
            body: &body,
            peer: None,
        };
        if let Step::Respond(r) = handle(&mut rest(), &req) {
            prop_assert!(r.status != 500 && serde_json::from_slice::<Value>(&r.body).is_ok());
        }
    }

    /// Any query string with a valid token is either read or refused with 422.
    #[test]
    fn any_query_is_read_or_refused(query in "[a-zA-Z=&%+0-9:._-]{0,80}") {
        match handle(&mut rest(), &authorized(&query)) {
            Step::Run(Effect::Store(StoreCommand::History(q)), _) => {
                prop_assert!((1..=100).contains(&q.limit))
            }
            Step::Respond(r) => prop_assert_eq!(r.status, 422),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

fn from(peer: u8, req: Request<'_>) -> Request<'_> {
    Request {
        peer: Some(std::net::IpAddr::from([10, 0, 0, peer])),
        ..req
    }
}

/// The answer's status and `Retry-After`.
#[track_caller]
fn throttled(step: Step) -> (u16, Option<u64>) {
    match step {
        Step::Respond(r) => (r.status, r.retry_after),
        Step::Run(effect, _) => panic!("expected a response, got {effect:?}"),
    }
}

#[test]
fn logins_and_registrations_from_one_address_are_throttled() {
    let mut rest = rest();
    let login = br#"{"username":"ana","password":"secret1"}"#;
    // The default: 20 attempts, then one each 3 s.
    for _ in 0..20 {
        let (e, _) = effect(handle(&mut rest, &from(1, post("/login", login))));
        assert!(matches!(e, Effect::Store(StoreCommand::FindUser(_))));
    }
    assert_eq!(
        throttled(handle(&mut rest, &from(1, post("/login", login)))),
        (429, Some(3))
    );
    assert_eq!(
        throttled(handle(&mut rest, &from(1, post("/register", login)))),
        (429, Some(3)),
        "register spends the same budget"
    );
    // Another address is not affected; nor is a host that cannot tell.
    let (e, _) = effect(handle(&mut rest, &from(2, post("/register", login))));
    assert!(matches!(e, Effect::HashPassword { .. }));
    let (e, _) = effect(handle(&mut rest, &post("/login", login)));
    assert!(matches!(e, Effect::Store(StoreCommand::FindUser(_))));
}

#[test]
fn failed_logins_for_one_user_are_throttled_but_not_from_the_users_own_address() {
    let mut rest = rest();
    let user = ana();
    let attempt = |rest: &mut Rest, peer: u8, ok: bool| {
        let login = br#"{"username":"ana","password":"secret1"}"#;
        let (_, p) = effect(handle(rest, &from(peer, post("/login", login))));
        let (_, p) = effect(resume(
            rest,
            p,
            EffectResult::Store(StoreReply::User(Some(user.clone()))),
        ));
        answered(resume(rest, p, EffectResult::Verified(ok))).0
    };
    assert_eq!(attempt(&mut rest, 200, true), 200, "ana logs in from home");
    // Ten wrong passwords from ten addresses spend ana's failures...
    for peer in 0..10 {
        assert_eq!(attempt(&mut rest, peer, false), 401);
    }
    // ...so an eleventh address waits (one failure a minute),
    let login = br#"{"username":"ANA","password":"guess12"}"#;
    assert_eq!(
        throttled(handle(&mut rest, &from(50, post("/login", login)))),
        (429, Some(60))
    );
    // but ana at home is not locked out.
    assert_eq!(attempt(&mut rest, 200, true), 200);
}

#[test]
fn a_full_bcrypt_pool_is_503_with_retry_after() {
    let mut rest = rest();
    let (_, p) = effect(handle(
        &mut rest,
        &post("/register", br#"{"username":"ana","password":"secret1"}"#),
    ));
    let step = resume(&mut rest, p, EffectResult::Busy);
    assert_eq!(throttled(step), (503, Some(1)));
}
