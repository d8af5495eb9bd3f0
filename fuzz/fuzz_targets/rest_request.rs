//! The REST routes on arbitrary requests, resumed with arbitrary effect
//! results: nothing panics, every response has a real status and a JSON body,
//! and a request ends within a few effects.
#![no_main]

use arbitrary::Arbitrary;
use chatwire_protocol::auth::JwtConfig;
use chatwire_protocol::http::{EffectResult, Request, Rest, RestConfig, Step};
use chatwire_protocol::ids::CounterIds;
use chatwire_protocol::model::{Message, ObjectId, Status, UserRecord};
use chatwire_protocol::store::{
    Append, CreateUser, History, ReadReceipt, Side, StoreError, StoreReply,
};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-fuzz";
const NOW_MS: i64 = 1_732_540_800_000;

#[derive(Debug, Arbitrary)]
enum Auth {
    None,
    Raw(String),
    /// A real token, so that `/messages` reaches its query checks.
    Valid,
}

#[derive(Debug, Arbitrary)]
struct Case {
    method: u8,
    path: u8,
    raw_path: String,
    query: String,
    content_type: Option<String>,
    json_body: bool,
    auth: Auth,
    body: Vec<u8>,
    results: Vec<FuzzResult>,
    peer: Option<u8>,
}

#[derive(Debug, Arbitrary)]
enum FuzzResult {
    Failed,
    Pong,
    Created(bool),
    User(Option<(String, String, i64)>),
    Appended(Option<i64>),
    History(Option<Vec<(String, String, i64, u8)>>),
    Delivered,
    Read(Vec<String>),
    Hashed(Result<String, String>),
    Verified(bool),
    Busy,
}

fn result(r: FuzzResult) -> EffectResult {
    let id = ObjectId([7; 12]);
    let store = |s| EffectResult::Store(s);
    match r {
        FuzzResult::Failed => store(StoreReply::Failed(StoreError::transient("down"))),
        FuzzResult::Pong => store(StoreReply::Pong),
        FuzzResult::Created(c) => store(StoreReply::CreateUser(if c {
            CreateUser::Created
        } else {
            CreateUser::Taken
        })),
        FuzzResult::User(u) => store(StoreReply::User(u.map(
            |(username, password_hash, created_at)| UserRecord {
                id,
                username,
                password_hash,
                created_at,
            },
        ))),
        FuzzResult::Appended(d) => store(StoreReply::Appended(match d {
            None => Append::Stored,
            Some(timestamp) => Append::Duplicate { id, timestamp },
        })),
        FuzzResult::History(h) => store(StoreReply::History(match h {
            None => History::UnknownAnchor(Side::Before),
            Some(v) => History::Messages(
                v.into_iter()
                    .map(|(chat_id, text, timestamp, s)| Message {
                        id,
                        chat_id,
                        author: "ana".into(),
                        author_id: id,
                        text,
                        timestamp,
                        status: [Status::Sent, Status::Delivered, Status::Read][s as usize % 3],
                        kind: "text".into(),
                    })
                    .collect(),
            ),
        })),
        FuzzResult::Delivered => store(StoreReply::Delivered),
        FuzzResult::Read(chats) => store(StoreReply::Read(
            chats
                .into_iter()
                .map(|chat_id| ReadReceipt { id, chat_id })
                .collect(),
        )),
        FuzzResult::Hashed(h) => EffectResult::Hashed(h),
        FuzzResult::Verified(v) => EffectResult::Verified(v),
        FuzzResult::Busy => EffectResult::Busy,
    }
}

fuzz_target!(|case: Case| {
    let jwt = JwtConfig::new(SECRET, "HS256", 60).expect("a long enough secret");
    let token = format!("Bearer {}", jwt.issue(ObjectId([1; 12]), "ana", NOW_MS));
    let mut rest = Rest::new(RestConfig {
        jwt,
        bcrypt_cost: 4,
        service: "chatwire".into(),
        version: "0".into(),
        throttle: Default::default(),
    });
    let method = ["GET", "POST", "PUT", "get", ""][case.method as usize % 5];
    let path = match case.path % 7 {
        0 => "/",
        1 => "/ready",
        2 => "/register",
        3 => "/login",
        4 => "/messages",
        _ => case.raw_path.as_str(),
    };
    let authorization = match &case.auth {
        Auth::None => None,
        Auth::Raw(s) => Some(s.as_str()),
        Auth::Valid => Some(token.as_str()),
    };
    let req = Request {
        method,
        path,
        query: &case.query,
        content_type: if case.json_body {
            Some("application/json")
        } else {
            case.content_type.as_deref()
        },
        authorization,
        body: &case.body,
        peer: case.peer.map(|b| std::net::IpAddr::from([10, 0, 0, b])),
    };
    let mut ids = CounterIds::default();
    let mut step = rest.handle(&req, NOW_MS, &mut ids);
    let mut results = case.results.into_iter();
    let mut effects = 0;
    loop {
        match step {
            Step::Respond(r) => {
                assert!((100..=599).contains(&r.status), "status {}", r.status);
                serde_json::from_slice::<serde_json::Value>(&r.body).expect("a JSON body");
                return;
            }
            Step::Run(_effect, pending) => {
                // Register and login are the longest chains: two effects each.
                effects += 1;
                assert!(effects <= 2, "a request asked for a third effect");
                let Some(r) = results.next() else {
                    return;
                };
                step = rest.resume(pending, result(r), NOW_MS, &mut ids);
            }
        }
    }
});
