//! The JSON bodies the routes answer with, as types: the routes serialize
//! these, and the OpenAPI document (feature `openapi`) derives its schemas
//! from the same types, so a renamed field changes both.

use serde::Serialize;

use crate::model::PublicUser;

/// Every error: what is wrong, for a person (FastAPI's shape).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"detail": "Not authenticated"})))]
pub(crate) struct ErrorBody<'a> {
    /// What is wrong.
    pub(crate) detail: &'a str,
}

/// `status` of `GET /`: always `ok`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum Health {
    Ok,
}

/// `GET /`: the service is up.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(
    example = json!({"status": "ok", "service": "chatwire", "version": "0.1.0"})))]
pub(crate) struct ServiceInfo<'a> {
    pub(crate) status: Health,
    /// The service's name.
    pub(crate) service: &'a str,
    /// Its version.
    pub(crate) version: &'a str,
}

/// `status` of `GET /ready`: always `ready`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum Readiness {
    Ready,
}

/// `GET /ready`: the store answered.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"status": "ready"})))]
pub(crate) struct Ready {
    pub(crate) status: Readiness,
}

/// `token_type`: always `bearer`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenType {
    Bearer,
}

/// `POST /register` and `POST /login`: a token and whose it is.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI2NjVmMWMwYTliMWU4YTNmNGMyZDE5ZmYiLCJ1c2VybmFtZSI6ImFuYSIsImlhdCI6MTczMjU0MDgwMCwiZXhwIjoxNzM1MTMyODAwfQ.signature",
    "token_type": "bearer",
    "user": {"id": "665f1c0a9b1e8a3f4c2d19ff", "username": "ana", "createdAt": 1732540800123i64}
})))]
pub(crate) struct TokenAnswer<'a> {
    /// A JWT for `Authorization: Bearer` and the Socket.IO CONNECT auth `{"token"}`.
    pub(crate) access_token: &'a str,
    pub(crate) token_type: TokenType,
    pub(crate) user: PublicUser,
}
