//! JSON bodies: the content type, the parse, and the credentials' rules.

use serde_json::Value;

use super::{Request, Response};

/// bcrypt reads at most this many bytes; longer passwords are refused rather
/// than silently cut.
pub(super) const MAX_PASSWORD_BYTES: usize = 72;
/// The shortest password.
pub(super) const MIN_PASSWORD_BYTES: usize = 6;

/// A username and password as sent, only their types checked.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"username": "ana", "password": "secret1"})))]
pub(super) struct Credentials {
    /// 3 to 32 characters of `A-Z a-z 0-9 _ . -`, unique without regard to case.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::model::schemas::username))]
    pub(super) username: String,
    /// 6 to 72 bytes (bcrypt's limit): longer ones are refused, never cut.
    #[cfg_attr(feature = "openapi", schema(schema_with = password))]
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
    if !crate::model::valid_username(&c.username) {
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

/// A password: its bounds are in bytes (bcrypt's), JSON Schema's in
/// characters, which agree for ASCII.
#[cfg(feature = "openapi")]
fn password() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .min_length(Some(MIN_PASSWORD_BYTES))
        .max_length(Some(MAX_PASSWORD_BYTES))
        .description(Some(format!(
            "{MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes of UTF-8 (bcrypt's limit): \
             a longer one is refused, never cut."
        )))
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::schema::KnownFormat::Password,
        )))
        .examples(["secret1"])
}
