//! JSON bodies: the content type, the parse, and the credentials' rules.

use serde_json::Value;

use super::{Request, Response};

/// bcrypt reads at most this many bytes; longer passwords are refused rather
/// than silently cut.
const MAX_PASSWORD_BYTES: usize = 72;
const MIN_PASSWORD_BYTES: usize = 6;

/// A username and password as sent, only their types checked.
pub(super) struct Credentials {
    pub(super) username: String,
    pub(super) password: String,
}

/// Reads `{"username", "password"}` from a JSON body: 415, 400 or 422 when it
/// is not one.
pub(super) fn credentials(req: &Request<'_>) -> Result<Credentials, Response> {
    if !req.content_type.is_some_and(is_json) {
        return Err(Response::error(
            415,
            "Content-Type must be application/json",
        ));
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Response::error(422, "body: field required"));
    }
    let value: Value = serde_json::from_slice(req.body)
        .map_err(|e| Response::error(400, &format!("Malformed JSON body: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(Response::error(422, "body: must be a JSON object"));
    };
    let mut field = |name: &str| match map.remove(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Response::error(422, &format!("{name}: must be a string"))),
        None => Err(Response::error(422, &format!("{name}: field required"))),
    };
    let username = field("username")?;
    let password = field("password")?;
    Ok(Credentials { username, password })
}

/// The contract's rules for a username and password, as `/register` enforces them.
pub(super) fn check_new_credentials(c: &Credentials) -> Result<(), &'static str> {
    let name_ok = (3..=32).contains(&c.username.len())
        && c.username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !name_ok {
        return Err("username: must be 3 to 32 characters of A-Z a-z 0-9 _ . -");
    }
    if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&c.password.len()) {
        return Err("password: must be 6 to 72 bytes");
    }
    Ok(())
}

/// `application/json`, parameters such as `charset` allowed.
fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default();
    media.trim().eq_ignore_ascii_case("application/json")
}
