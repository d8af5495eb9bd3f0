//! The OpenAPI document against the routes themselves: every documented
//! path and method is answered and every answered one is documented; every
//! documented query parameter is read, with the bounds the router enforces;
//! the statuses documented per route are exactly those the router produces
//! (every request of a corpus driven through every well-typed effect
//! result), and every answer matches the schema documented for its status.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::*;
use crate::ids::CounterIds;
use crate::model::{Message, ObjectId, Status};
use crate::store::{HistoryQuery, StoreError};

const NOW: i64 = 1_732_540_800_123;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const HASH: &str = "$2b$04$pcoh7QeJMPAeyFp6S/plV.r6sDWhAwjU7vpIvqQwZDauEpCbTRQbW";
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
];

fn jwt() -> JwtConfig {
    JwtConfig::new(SECRET, "HS256", 60).unwrap()
}

fn rest() -> Rest {
    Rest::new(RestConfig {
        jwt: jwt(),
        bcrypt_cost: 4,
        service: "chatwire".into(),
        version: "0.1.0".into(),
        throttle: Default::default(),
    })
}

fn doc() -> Value {
    serde_json::to_value(openapi::document("chatwire", "0.1.0")).unwrap()
}

fn token() -> String {
    jwt().issue(ObjectId([1; 12]), "ana", NOW)
}

/// A request a test owns (`Request` borrows).
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: &'static str,
    query: String,
    content_type: Option<&'static str>,
    authorization: Option<String>,
    body: Vec<u8>,
    peer: Option<std::net::IpAddr>,
}

impl Req {
    fn new(method: &'static str, path: &'static str) -> Req {
        Req {
            method,
            path,
            query: String::new(),
            content_type: None,
            authorization: None,
            body: Vec::new(),
            peer: None,
        }
    }

    fn json(mut self, body: &[u8]) -> Req {
        self.content_type = Some("application/json");
        self.body = body.to_vec();
        self
    }

    fn auth(mut self, token: &str) -> Req {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    fn query(mut self, query: &str) -> Req {
        self.query = query.to_owned();
        self
    }

    fn from(mut self, peer: [u8; 4]) -> Req {
        self.peer = Some(std::net::IpAddr::from(peer));
        self
    }

    fn as_request(&self) -> Request<'_> {
        Request {
            method: self.method,
            path: self.path,
            query: &self.query,
            content_type: self.content_type,
            authorization: self.authorization.as_deref(),
            body: &self.body,
            peer: self.peer,
        }
    }
}

fn message(n: u8) -> Message {
    Message {
        id: ObjectId([n; 12]),
        chat_id: "general".into(),
        author: "ana".into(),
        author_id: ObjectId([1; 12]),
        text: "hi".into(),
        timestamp: NOW,
        status: Status::Sent,
        kind: "text".into(),
    }
}

/// Every result a correct host may hand back for `effect`.
fn results_for(effect: &Effect) -> Vec<EffectResult> {
    let failed = || EffectResult::Store(StoreReply::Failed(StoreError::transient("down")));
    match effect {
        Effect::Store(StoreCommand::Ping) => vec![EffectResult::Store(StoreReply::Pong), failed()],
        Effect::Store(StoreCommand::CreateUser(_)) => vec![
            EffectResult::Store(StoreReply::CreateUser(CreateUser::Created)),
            EffectResult::Store(StoreReply::CreateUser(CreateUser::Taken)),
            failed(),
        ],
        Effect::Store(StoreCommand::FindUser(name)) => vec![
            EffectResult::Store(StoreReply::User(Some(UserRecord {
                id: ObjectId([1; 12]),
                username: name.clone(),
                password_hash: HASH.into(),
                created_at: NOW,
            }))),
            EffectResult::Store(StoreReply::User(None)),
            failed(),
        ],
        Effect::Store(StoreCommand::History(_)) => vec![
            EffectResult::Store(StoreReply::History(History::Messages(vec![]))),
            EffectResult::Store(StoreReply::History(History::Messages(vec![
                message(1),
                Message {
                    status: Status::Read,
                    chat_id: "team.eng".into(),
                    ..message(2)
                },
            ]))),
            EffectResult::Store(StoreReply::History(History::UnknownAnchor(Side::Before))),
            EffectResult::Store(StoreReply::History(History::UnknownAnchor(Side::After))),
            failed(),
        ],
        // A host whose bcrypt pool is full answers `Busy`.
        Effect::HashPassword { .. } => {
            vec![EffectResult::Hashed(Ok(HASH.into())), EffectResult::Busy]
        }
        Effect::VerifyPassword { .. } => vec![
            EffectResult::Verified(true),
            EffectResult::Verified(false),
            EffectResult::Busy,
        ],
        other => panic!("no results known for {other:?}: add them here"),
    }
}

/// Every response `req` can get, over every well-typed effect result at
/// every step (each branch replayed from the start: `Pending` is not Clone).
fn every_answer(rest: &mut Rest, req: &Req) -> Vec<Response> {
    fn walk(rest: &mut Rest, req: &Req, choices: &mut Vec<usize>, out: &mut Vec<Response>) {
        let mut step = rest.handle(&req.as_request(), NOW, &mut CounterIds::default());
        let mut depth = 0;
        loop {
            match step {
                Step::Respond(r) => {
                    out.push(r);
                    return;
                }
                Step::Run(effect, pending) => {
                    let results = results_for(&effect);
                    if depth == choices.len() {
                        for i in 0..results.len() {
                            choices.push(i);
                            walk(rest, req, choices, out);
                            choices.pop();
                        }
                        return;
                    }
                    let result = results[choices[depth]].clone();
                    depth += 1;
                    step = rest.resume(pending, result, NOW, &mut CounterIds::default());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(rest, req, &mut Vec::new(), &mut out);
    out
}

/// Requests of every kind the routes tell apart.
fn corpus() -> Vec<Req> {
    let big = vec![b' '; MAX_BODY_BYTES + 1];
    let expired = jwt().issue(ObjectId([1; 12]), "ana", NOW - 2 * 3_600_000);
    let mut reqs = Vec::new();
    for &(path, method, _) in &ROUTES {
        let base = Req::new(method, path);
        reqs.push(base.clone());
        reqs.push(base.clone().json(&big));
        reqs.push(base.clone().auth(&token()));
    }
    for path in ["/register", "/login"] {
        let post = Req::new("POST", path);
        for body in [
            &br#"{"username":"ana","password":"secret1"}"#[..],
            br#"{"username":"an","password":"secret1"}"#,
            br#"{"username":"ana","password":"12345"}"#,
            br#"{"username":"ana"}"#,
            br#"{"username":5,"password":"secret1"}"#,
            b"[]",
            b"",
            b"{",
            b"\xff",
        ] {
            reqs.push(post.clone().json(body));
        }
        let mut plain = post
            .clone()
            .json(br#"{"username":"ana","password":"secret1"}"#);
        plain.content_type = Some("text/plain");
        reqs.push(plain);
    }
    let messages = Req::new("GET", "/messages");
    reqs.push(messages.clone().auth("not-a-jwt"));
    reqs.push(messages.clone().auth(&expired));
    let id = "665f1c2e9b1e8a3f4c2d1a0b";
    for query in [
        "limit=1".to_owned(),
        "limit=0".into(),
        "limit=x".into(),
        "chatId=team.eng".into(),
        "chatId=a%20b".into(),
        "before=5".into(),
        "after=5".into(),
        format!("beforeId={id}"),
        format!("afterId={id}"),
        "beforeId=zz".into(),
        format!("before=5&afterId={id}"),
        format!("before=5&beforeId={id}"),
    ] {
        reqs.push(messages.clone().auth(&token()).query(&query));
    }
    reqs
}

/// The doc's operation for a path and method, if any.
fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> Option<&'a Value> {
    doc["paths"].get(path)?.get(method.to_lowercase())
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.to_lowercase()).is_some() {
                out.insert((path.clone(), method.to_owned()));
            }
        }
    }
    out
}

/// A schema of the document, with the components beside it so that its
/// `$ref`s resolve.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    jsonschema::draft202012::new(&root).unwrap()
}

#[test]
fn the_document_has_every_route_and_only_those() {
    let doc = doc();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|&(p, m, _)| (p.to_owned(), m.to_owned()))
        .collect();
    assert_eq!(documented(&doc), routes);
    let mut rest = rest();
    for (path, method) in &routes {
        let path: &'static str = ROUTES.iter().find(|r| r.0 == path).unwrap().0;
        let allowed: Vec<&str> = METHODS
            .iter()
            .copied()
            .filter(|m| operation(&doc, path, m).is_some())
            .collect();
        for other in METHODS {
            let answers = every_answer(&mut rest, &Req::new(other, path));
            if other == method {
                assert!(
                    answers.iter().all(|r| r.status != 404 && r.status != 405),
                    "{other} {path}: {answers:?}"
                );
            } else {
                assert!(!allowed.contains(&other));
                assert_eq!(answers.len(), 1);
                assert_eq!(answers[0].status, 405, "{other} {path}");
                assert_eq!(
                    answers[0].allow.map(str::to_owned),
                    Some(allowed.join(", "))
                );
            }
        }
    }
    // Paths near the documented ones are not routes.
    for path in [
        "",
        "/x",
        "/messages/",
        "/Messages",
        "/ready/",
        "/api/messages",
        "/docs",
        "/openapi.json",
        "/login/x",
        "//",
    ] {
        for method in METHODS {
            let answers = every_answer(&mut rest, &Req::new(method, path));
            assert_eq!(answers.len(), 1);
            assert_eq!(answers[0].status, 404, "{method} {path}");
        }
    }
}

/// The history query the router builds for `query`, or its 422 detail.
fn history_query(query: &str) -> Result<HistoryQuery, String> {
    let req = Req::new("GET", "/messages").auth(&token()).query(query);
    match rest().handle(&req.as_request(), NOW, &mut CounterIds::default()) {
        Step::Run(Effect::Store(StoreCommand::History(q)), _) => Ok(q),
        Step::Respond(r) if r.status == 422 => {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            Err(v["detail"].as_str().unwrap().to_owned())
        }
        other => panic!("{query}: {other:?}"),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether a raw query value is an instance of an integer schema (bounds read from it).
fn integer_valid(schema: &Value, raw: &str) -> bool {
    let Ok(n) = raw.parse::<i128>() else {
        return false;
    };
    let min = schema["minimum"].as_i64().map_or(i128::MIN, i128::from);
    let max = schema["maximum"].as_i64().map_or(i128::MAX, i128::from);
    (min..=max).contains(&n)
}

#[test]
fn every_documented_parameter_is_read_with_the_documented_bounds() {
    let doc = doc();
    let params = operation(&doc, "/messages", "GET").unwrap()["parameters"]
        .as_array()
        .unwrap()
        .clone();
    let names: BTreeSet<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["limit", "chatId", "before", "beforeId", "after", "afterId"])
    );
    // Defaults are what the router uses when the parameter is absent.
    let plain = history_query("").unwrap();
    for p in &params {
        let name = p["name"].as_str().unwrap();
        assert_eq!(p["in"], "query");
        assert_eq!(p["required"], false, "{name}");
        match name {
            "limit" => assert_eq!(p["schema"]["default"], json!(plain.limit)),
            "chatId" => assert_eq!(p["schema"]["default"], json!(plain.chat_id)),
            _ => assert!(p["schema"].get("default").is_none(), "{name}"),
        }
    }
    // Any other name is ignored, whatever its value.
    for other in [
        "offset", "page", "since", "userId", "chat_id", "LIMIT", "beforeid",
    ] {
        assert!(history_query(&format!("{other}=%00zz")).is_ok(), "{other}");
    }
    let long = "a".repeat(64);
    let too_long = "a".repeat(65);
    let candidates: Vec<&str> = vec![
        "",
        "0",
        "1",
        "30",
        "100",
        "101",
        "-1",
        "1.5",
        "1e3",
        "x",
        "true",
        "general",
        "team.eng",
        "a:b_c-d.e",
        "a b",
        "a/b",
        "é",
        "%",
        &long,
        &too_long,
        "665f1c2e9b1e8a3f4c2d1a0b",
        "665F1C2E9B1E8A3F4C2D1A0B",
        "665f1c2e9b1e8a3f4c2d1a0",
        "665f1c2e9b1e8a3f4c2d1a0bb",
        "665f1c2e9b1e8a3f4c2d1a0g",
        "1732540800123",
        "-9223372036854775808",
        "9223372036854775807",
        "-9223372036854775809",
        "9223372036854775808",
    ];
    for p in &params {
        let name = p["name"].as_str().unwrap();
        let schema = &p["schema"];
        let string_schema = validator(&doc, schema);
        for raw in &candidates {
            let valid = match schema["type"].as_str().unwrap() {
                "integer" => integer_valid(schema, raw),
                "string" => string_schema.is_valid(&json!(raw)),
                other => panic!("{name}: type {other}"),
            };
            let got = history_query(&format!("{name}={}", encode(raw)));
            assert_eq!(
                got.is_ok(),
                valid,
                "{name}={raw}: the document says {}, the router answered {got:?}",
                if valid { "valid" } else { "invalid" }
            );
            if let Err(detail) = got {
                assert!(detail.starts_with(&format!("{name}:")), "{detail}");
            }
        }
        for example in schema["examples"].as_array().unwrap() {
            let raw = match example {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert!(
                history_query(&format!("{name}={raw}")).is_ok(),
                "{name}={raw}"
            );
        }
    }
}

#[test]
fn documented_statuses_are_exactly_those_the_router_produces() {
    let doc = doc();
    let mut produced: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    // Each request on routes of its own; then the credential routes again
    // and again from one address, on shared ones, until they are throttled.
    let mut throttled = rest();
    let repeated = ["/register", "/login"].into_iter().flat_map(|path| {
        let one = Req::new("POST", path)
            .json(br#"{"username":"ana","password":"secret1"}"#)
            .from([10, 0, 0, 1]);
        std::iter::repeat_n(one, 25).map(|r| (true, r))
    });
    for (shared, req) in corpus().into_iter().map(|r| (false, r)).chain(repeated) {
        let mut own = rest();
        let rest = if shared { &mut throttled } else { &mut own };
        for r in every_answer(rest, &req) {
            assert_ne!(r.status, 500, "{req:?}");
            if r.status == 405 {
                assert!(r.allow.is_some());
                continue;
            }
            produced
                .entry((req.path.to_owned(), req.method.to_owned()))
                .or_default()
                .insert(r.status);
            let op = operation(&doc, req.path, req.method).expect("a documented route");
            let response = &op["responses"][r.status.to_string()];
            let media = &response["content"]["application/json"];
            assert!(
                media.is_object(),
                "{} {} answered {} which the document does not list",
                req.method,
                req.path,
                r.status
            );
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let v = validator(&doc, &media["schema"]);
            assert!(
                v.is_valid(&body),
                "{} {} {}: {body} does not match {}",
                req.method,
                req.path,
                r.status,
                media["schema"]
            );
        }
    }
    for (path, method) in documented(&doc) {
        let listed: BTreeSet<u16> = operation(&doc, &path, &method).unwrap()["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        assert_eq!(
            produced.get(&(path.clone(), method.clone())),
            Some(&listed),
            "{method} {path}: produced vs documented"
        );
    }
}

#[test]
fn only_messages_needs_the_bearer_token() {
    let doc = doc();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "The `access_token` of `POST /register` or `POST /login`."})
    );
    let mut rest = rest();
    for (path, method) in documented(&doc) {
        let op = operation(&doc, &path, &method).unwrap();
        let path: &'static str = ROUTES.iter().find(|r| r.0 == path).unwrap().0;
        let method: &'static str = METHODS.iter().find(|m| **m == method).unwrap();
        let unauthenticated = every_answer(&mut rest, &Req::new(method, path).json(b"{}"));
        let needs_token = unauthenticated.iter().all(|r| r.status == 401)
            && every_answer(
                &mut rest,
                &Req::new(method, path).json(b"{}").auth(&token()),
            )
            .iter()
            .all(|r| r.status != 401);
        assert_eq!(op.get("security").is_some(), needs_token, "{method} {path}");
        if needs_token {
            assert_eq!(op["security"], json!([{"bearer": []}]));
        }
    }
}

#[test]
fn every_example_matches_its_schema() {
    let doc = doc();
    let mut checked = 0;
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let v = validator(&doc, schema);
        let examples = schema["examples"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .chain(schema.get("example").cloned());
        for example in examples {
            assert!(v.is_valid(&example), "{name}: {example}");
            checked += 1;
        }
        for (field, property) in schema["properties"].as_object().into_iter().flatten() {
            for example in property["examples"].as_array().into_iter().flatten() {
                assert!(
                    validator(&doc, property).is_valid(example),
                    "{name}.{field}"
                );
                checked += 1;
            }
        }
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().unwrap() {
                assert!(response["description"].is_string());
                let media = &response["content"]["application/json"];
                if let Some(example) = media.get("example") {
                    assert!(
                        validator(&doc, &media["schema"]).is_valid(example),
                        "{method} {path} {status}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "{checked}");
    // The request examples are accepted by the routes.
    let body = doc["components"]["schemas"]["Credentials"]["example"].to_string();
    for path in ["/register", "/login"] {
        let req = Req::new("POST", path).json(body.as_bytes());
        assert!(matches!(
            rest().handle(&req.as_request(), NOW, &mut CounterIds::default()),
            Step::Run(..)
        ));
    }
}

#[test]
fn credential_bounds_match_the_router() {
    let doc = doc();
    let schema = &doc["components"]["schemas"]["Credentials"];
    let v = validator(&doc, schema);
    let mut rest = rest();
    let names = [
        "an",
        "ana",
        "a.b_c-9",
        "ana!",
        "an a",
        "ané",
        &"a".repeat(32),
        &"a".repeat(33),
    ];
    // ASCII passwords: JSON Schema's characters are the router's bytes.
    let passwords = ["12345", "123456", &"x".repeat(72), &"x".repeat(73)];
    for username in names {
        for password in passwords {
            let body = json!({"username": username, "password": password});
            let req = Req::new("POST", "/register").json(body.to_string().as_bytes());
            let accepted = matches!(
                rest.handle(&req.as_request(), NOW, &mut CounterIds::default()),
                Step::Run(..)
            );
            assert_eq!(accepted, v.is_valid(&body), "{body}");
        }
    }
}
