//! Tokens: issuing and checking JWTs with an injected clock.
//!
//! `jsonwebtoken` would read the system clock to check `exp`; that check is
//! switched off and done here against the caller's `now_ms`, so the core stays
//! deterministic.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::ObjectId;

/// The shortest secret accepted: HMAC keys shorter than the hash add nothing
/// but guessability.
pub const MIN_SECRET_LEN: usize = 32;

/// A token configuration that cannot be used; shown to operators at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("JWT_SECRET must be at least {MIN_SECRET_LEN} bytes long, got {0}")]
    SecretTooShort(usize),
    /// The algorithm is not one of HS256, HS384, HS512.
    #[error("JWT_ALGORITHM must be HS256, HS384 or HS512, got {0:?}")]
    UnknownAlgorithm(String),
    /// Tokens would be expired the moment they are issued.
    #[error("JWT_EXPIRATION_MINUTES must be at least 1")]
    ZeroExpiration,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Malformed, badly signed, signed with another algorithm, or missing claims.
    #[error("Unauthorized")]
    Invalid,
    /// Well signed, but its `exp` has passed.
    #[error("Token expired")]
    Expired,
    /// Well signed, but its `nbf` (not before) has not come yet.
    #[error("Unauthorized")]
    NotYetValid,
}

/// What a valid token says about its bearer; trusted without a store lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user's id (`sub`).
    pub user_id: ObjectId,
    /// The user's name (`username`).
    pub username: String,
    /// Expiry, in seconds since the Unix epoch (`exp`).
    pub exp: i64,
}

/// Signs and checks tokens with one HMAC secret and algorithm.
#[derive(Clone)]
pub struct JwtConfig {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    expiration_minutes: u64,
}

impl fmt::Debug for JwtConfig {
    // The keys are secrets: never let them reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("expiration_minutes", &self.expiration_minutes)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: String,
    username: &'a str,
    iat: i64,
    exp: i64,
}

/// Claims as a token may carry them; checked by hand so that any shape is an
/// `Invalid`, never a panic.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<serde_json::Value>,
    username: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
}

/// The one header parameter `jsonwebtoken` does not read but RFC 7515
/// §4.1.11 makes binding: `crit` names extensions the recipient must
/// understand, and this one understands none.
#[derive(Deserialize)]
struct RawHeader {
    crit: Option<serde::de::IgnoredAny>,
}

impl JwtConfig {
    /// Checks and builds a configuration; `algorithm` is one of `HS256`,
    /// `HS384`, `HS512`, spelled exactly so.
    pub fn new(
        secret: &[u8],
        algorithm: &str,
        expiration_minutes: u64,
    ) -> Result<JwtConfig, AuthConfigError> {
        let algorithm = match algorithm {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            other => return Err(AuthConfigError::UnknownAlgorithm(other.to_owned())),
        };
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthConfigError::SecretTooShort(secret.len()));
        }
        if expiration_minutes == 0 {
            return Err(AuthConfigError::ZeroExpiration);
        }
        let mut validation = Validation::new(algorithm);
        // jsonwebtoken would read the system clock; `verify` checks `exp`
        // against the injected time instead, and the claims it needs by hand.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        Ok(JwtConfig {
            algorithm,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            expiration_minutes,
        })
    }

    /// How long an issued token lives, in minutes.
    pub fn expiration_minutes(&self) -> u64 {
        self.expiration_minutes
    }

    /// Signs a token for a user, valid from `now_ms` for the configured minutes.
    pub fn issue(&self, user_id: ObjectId, username: &str, now_ms: i64) -> String {
        let iat = now_ms.div_euclid(1000);
        let lifetime =
            i64::try_from(self.expiration_minutes.saturating_mul(60)).unwrap_or(i64::MAX);
        let claims = IssuedClaims {
            sub: user_id.to_hex(),
            username,
            iat,
            exp: iat.saturating_add(lifetime),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .expect("HMAC-signing claims made of strings and integers cannot fail")
    }

    /// Checks a token's algorithm, signature, header, claims, expiry and
    /// start at `now_ms`.
    ///
    /// Expired means `exp <= now` in whole seconds, with no leeway; a token
    /// with `nbf > now` is not valid yet (RFC 7519 §4.1.5); a header with
    /// `crit` is refused, since no extension is understood here.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if has_crit(token) {
            return Err(TokenError::Invalid);
        }
        let RawClaims {
            sub,
            username,
            exp,
            nbf,
        } = data.claims;
        let user_id = match sub {
            Some(serde_json::Value::String(s)) => s.parse().map_err(|_| TokenError::Invalid)?,
            _ => return Err(TokenError::Invalid),
        };
        let username = match username {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(TokenError::Invalid),
        };
        let exp = match exp {
            Some(serde_json::Value::Number(n)) => numeric_date(&n).ok_or(TokenError::Invalid)?,
            _ => return Err(TokenError::Invalid),
        };
        let nbf = match nbf {
            None => None,
            Some(serde_json::Value::Number(n)) => {
                Some(numeric_date(&n).ok_or(TokenError::Invalid)?)
            }
            Some(_) => return Err(TokenError::Invalid),
        };
        let now = now_ms.div_euclid(1000);
        if exp <= now {
            return Err(TokenError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now) {
            return Err(TokenError::NotYetValid);
        }
        Ok(Claims {
            user_id,
            username,
            exp,
        })
    }
}

/// Whether the (already verified) token's header carries `crit`.
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<RawHeader>(&bytes).ok())
        .is_none_or(|h| h.crit.is_some())
}

/// A JWT NumericDate may carry a fraction (RFC 7519 §2); whole seconds are
/// what matter here.
fn numeric_date(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // Out-of-range floats saturate in `as`; a finite check keeps NaN out.
    f.is_finite().then(|| f.floor() as i64)
}

/// The token of an `Authorization: Bearer <token>` header: the scheme is
/// case-insensitive (RFC 7235), the space around the token is not part of
/// it, and an empty token is no token. The one reading of that header for
/// REST routes and Socket.IO handshakes alike.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer(" BEARER abc"), Some("abc"));
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
    const NOW_MS: i64 = 1_732_540_800_123;

    fn user() -> ObjectId {
        "665f1c0a9b1e8a3f4c2d19ff".parse().unwrap()
    }

    fn config() -> JwtConfig {
        JwtConfig::new(SECRET, "HS256", 60).unwrap()
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn sign_raw(alg: Algorithm, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn round_trip() {
        let c = config();
        let token = c.issue(user(), "ana", NOW_MS);
        let claims = c.verify(&token, NOW_MS).unwrap();
        assert_eq!(
            claims,
            Claims {
                user_id: user(),
                username: "ana".into(),
                exp: 1_732_540_800 + 3600,
            }
        );
    }

    #[test]
    fn issued_claims_have_the_contract_shape() {
        let token = config().issue(user(), "ana", NOW_MS);
        let payload = token.split('.').nth(1).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"sub": "665f1c0a9b1e8a3f4c2d19ff", "username": "ana",
                "iat": 1_732_540_800, "exp": 1_732_540_800 + 3600})
        );
    }

    #[test]
    fn tampered_signature_is_invalid() {
        let c = config();
        let token = c.issue(user(), "ana", NOW_MS);
        let (rest, sig) = token.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        let bad = format!("{rest}.{flipped}{}", &sig[1..]);
        assert_eq!(c.verify(&bad, NOW_MS), Err(TokenError::Invalid));
        let other = JwtConfig::new(b"another secret that is 32 bytes!", "HS256", 60).unwrap();
        assert_eq!(other.verify(&token, NOW_MS), Err(TokenError::Invalid));
    }

    #[test]
    fn tampered_claims_are_invalid() {
        let c = config();
        let token = c.issue(user(), "ana", NOW_MS);
        let parts: Vec<&str> = token.split('.').collect();
        let forged =
            b64(r#"{"sub":"665f1c0a9b1e8a3f4c2d19ff","username":"root","iat":1,"exp":9999999999}"#);
        let bad = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(c.verify(&bad, NOW_MS), Err(TokenError::Invalid));
    }

    #[test]
    fn other_algorithm_is_invalid() {
        let claims = serde_json::json!({"sub": "665f1c0a9b1e8a3f4c2d19ff", "username": "ana",
            "iat": 1_732_540_800, "exp": 1_732_544_400});
        let hs512 = sign_raw(Algorithm::HS512, &claims);
        assert_eq!(config().verify(&hs512, NOW_MS), Err(TokenError::Invalid));
        let c512 = JwtConfig::new(SECRET, "HS512", 60).unwrap();
        assert!(c512.verify(&hs512, NOW_MS).is_ok());
        let hs256 = sign_raw(Algorithm::HS256, &claims);
        assert_eq!(c512.verify(&hs256, NOW_MS), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_is_invalid() {
        let header = b64(r#"{"alg":"none","typ":"JWT"}"#);
        let claims =
            b64(r#"{"sub":"665f1c0a9b1e8a3f4c2d19ff","username":"ana","iat":1,"exp":9999999999}"#);
        let c = config();
        assert_eq!(
            c.verify(&format!("{header}.{claims}."), NOW_MS),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            c.verify(&format!("{header}.{claims}"), NOW_MS),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn expiry_is_checked_against_the_injected_clock() {
        let c = config();
        let token = c.issue(user(), "ana", NOW_MS);
        let exp_ms = (1_732_540_800 + 3600) * 1000;
        assert!(c.verify(&token, exp_ms - 1).is_ok());
        assert_eq!(c.verify(&token, exp_ms), Err(TokenError::Expired));
        assert_eq!(
            c.verify(&token, exp_ms + 10_000_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn missing_or_mistyped_claims_are_invalid() {
        let c = config();
        let (id, far) = ("665f1c0a9b1e8a3f4c2d19ff", 9_999_999_999i64);
        for claims in [
            serde_json::json!({"username": "ana", "exp": far}),
            serde_json::json!({"sub": id, "exp": far}),
            serde_json::json!({"sub": id, "username": "ana"}),
            serde_json::json!({"sub": "not-an-id", "username": "ana", "exp": far}),
            serde_json::json!({"sub": 7, "username": "ana", "exp": far}),
            serde_json::json!({"sub": id, "username": 7, "exp": far}),
            serde_json::json!({"sub": id, "username": "ana", "exp": "soon"}),
            serde_json::json!(["not", "an", "object"]),
        ] {
            let token = sign_raw(Algorithm::HS256, &claims);
            assert_eq!(
                c.verify(&token, NOW_MS),
                Err(TokenError::Invalid),
                "{claims}"
            );
        }
    }

    #[test]
    fn nbf_in_the_future_is_not_yet_valid() {
        let c = config();
        let now = NOW_MS.div_euclid(1000);
        let with_nbf = |nbf: serde_json::Value| {
            sign_raw(
                Algorithm::HS256,
                &serde_json::json!({"sub": "665f1c0a9b1e8a3f4c2d19ff", "username": "ana",
                    "exp": now + 3600, "nbf": nbf}),
            )
        };
        assert_eq!(
            c.verify(&with_nbf(serde_json::json!(now + 1)), NOW_MS),
            Err(TokenError::NotYetValid)
        );
        assert!(
            c.verify(&with_nbf(serde_json::json!(now + 1)), (now + 1) * 1000)
                .is_ok()
        );
        assert!(c.verify(&with_nbf(serde_json::json!(now)), NOW_MS).is_ok());
        assert!(
            c.verify(&with_nbf(serde_json::json!(now - 60)), NOW_MS)
                .is_ok()
        );
        assert_eq!(
            c.verify(&with_nbf(serde_json::json!("later")), NOW_MS),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_crit_header_is_refused() {
        let claims = serde_json::json!({"sub": "665f1c0a9b1e8a3f4c2d19ff", "username": "ana",
            "exp": 9_999_999_999i64});
        for header in [
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            r#"{"alg":"HS256","crit":[]}"#,
        ] {
            // Signed for real, so only the header can be the reason.
            let signing_input = format!("{}.{}", b64(header), b64(&claims.to_string()));
            let signature = jsonwebtoken::crypto::sign(
                signing_input.as_bytes(),
                &EncodingKey::from_secret(SECRET),
                Algorithm::HS256,
            )
            .unwrap();
            let token = format!("{signing_input}.{signature}");
            assert_eq!(
                config().verify(&token, NOW_MS),
                Err(TokenError::Invalid),
                "{header}"
            );
        }
        let plain = format!("{}.{}", b64(r#"{"alg":"HS256"}"#), b64(&claims.to_string()));
        let signature = jsonwebtoken::crypto::sign(
            plain.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        assert!(
            config()
                .verify(&format!("{plain}.{signature}"), NOW_MS)
                .is_ok()
        );
    }

    #[test]
    fn fractional_exp_is_accepted() {
        let claims = serde_json::json!({"sub": "665f1c0a9b1e8a3f4c2d19ff", "username": "ana",
            "exp": 1_732_544_400.5});
        let token = sign_raw(Algorithm::HS256, &claims);
        assert_eq!(config().verify(&token, NOW_MS).unwrap().exp, 1_732_544_400);
    }

    #[test]
    fn garbage_is_invalid() {
        let c = config();
        for t in ["", ".", "..", "a.b.c", "a.b", "ey.ey.ey", "\u{0}\u{ffff}"] {
            assert_eq!(c.verify(t, NOW_MS), Err(TokenError::Invalid), "{t:?}");
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            JwtConfig::new(b"short", "HS256", 60).unwrap_err(),
            AuthConfigError::SecretTooShort(5)
        );
        for alg in ["none", "hs256", "RS256", "HS257", ""] {
            assert_eq!(
                JwtConfig::new(SECRET, alg, 60).unwrap_err(),
                AuthConfigError::UnknownAlgorithm(alg.into())
            );
        }
        assert_eq!(
            JwtConfig::new(SECRET, "HS384", 0).unwrap_err(),
            AuthConfigError::ZeroExpiration
        );
        assert!(JwtConfig::new(SECRET, "HS384", 1).is_ok());
        let forever = JwtConfig::new(SECRET, "HS256", u64::MAX).unwrap();
        let token = forever.issue(user(), "ana", NOW_MS);
        assert_eq!(forever.verify(&token, NOW_MS).unwrap().exp, i64::MAX);
    }
}
