//! Engine.IO v4: packets, polling payloads, and sessions (handshake,
//! heartbeat, long-polling, WebSocket and the upgrade between them).

pub mod packet;
pub mod session;

pub use packet::Data;
pub use session::{CloseReason, Engine, EngineConfig, Event, Handshake, SessionKey, Transmit};

/// An Engine.IO request error, answered with HTTP 400 and a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// `transport` is missing or not one this server offers.
    #[error("Transport unknown")]
    TransportUnknown,
    /// `sid` names no open session.
    #[error("Session ID unknown")]
    SessionIdUnknown,
    /// A handshake that is not a GET.
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// Anything else wrong with the request.
    #[error("Bad request")]
    BadRequest,
    /// `EIO` is missing or not 4.
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
}

impl RequestError {
    /// Engine.IO's numeric error code.
    pub fn code(self) -> u8 {
        match self {
            RequestError::TransportUnknown => 0,
            RequestError::SessionIdUnknown => 1,
            RequestError::BadHandshakeMethod => 2,
            RequestError::BadRequest => 3,
            RequestError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The JSON body Engine.IO answers with: `{"code":N,"message":"..."}`.
    pub fn body(self) -> String {
        format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self)
    }
}

labels! {
    /// Why an Engine.IO request (a handshake, a poll, a WebSocket) was refused.
    EioRefusal {
        /// `transport` missing or unknown.
        TransportUnknown = "transport_unknown",
        /// `sid` names no open session.
        SessionIdUnknown = "session_id_unknown",
        /// A handshake that is not a GET.
        BadHandshakeMethod = "bad_handshake_method",
        /// Any other malformed request.
        BadRequest = "bad_request",
        /// `EIO` missing or not 4.
        UnsupportedProtocolVersion = "unsupported_protocol_version",
        /// A POSTed payload over `maxPayload`.
        PayloadTooLarge = "payload_too_large",
        /// A new session or upgrade while the server shuts down.
        ShuttingDown = "shutting_down",
    }
}

impl From<RequestError> for EioRefusal {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::TransportUnknown => EioRefusal::TransportUnknown,
            RequestError::SessionIdUnknown => EioRefusal::SessionIdUnknown,
            RequestError::BadHandshakeMethod => EioRefusal::BadHandshakeMethod,
            RequestError::BadRequest => EioRefusal::BadRequest,
            RequestError::UnsupportedProtocolVersion => EioRefusal::UnsupportedProtocolVersion,
        }
    }
}

labels! {
    /// How a client broke the protocol: kept in
    /// [`CloseReason::ProtocolError`], so that a host can log why it
    /// closed a session (the metrics count them all as one).
    Violation {
        /// An Engine.IO packet that does not decode.
        BadPacket = "bad_packet",
        /// A polling payload that does not decode.
        BadPayload = "bad_payload",
        /// A message or a polling payload over `maxPayload`.
        TooLarge = "too_large",
        /// A second long-poll while one waits.
        DuplicatePoll = "duplicate_poll",
        /// An upgrade packet (`5`) outside an upgrade.
        StrayUpgrade = "stray_upgrade",
        /// A Socket.IO packet that does not decode.
        BadSocketIoPacket = "bad_socketio_packet",
        /// A binary placeholder that names no announced attachment.
        BadPlaceholder = "bad_placeholder",
        /// An attachment when none is awaited, or another packet while
        /// one is.
        AttachmentOutOfTurn = "attachment_out_of_turn",
        /// Attachments over `maxPayload` in all.
        AttachmentsTooLarge = "attachments_too_large",
    }
}

/// The transport a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

/// The Engine.IO query parameters of a request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineQuery<'a> {
    /// The transport named.
    pub transport: Transport,
    /// The session id, if any.
    pub sid: Option<&'a str>,
}

/// Reads and checks `EIO`, `transport` and `sid` from a raw query string.
///
/// Hosts call this before accepting a WebSocket upgrade, so a bad request is
/// refused with HTTP 400 as Engine.IO says, not with a closed socket.
pub fn parse_query(query: &str) -> Result<EngineQuery<'_>, RequestError> {
    let mut eio = None;
    let mut transport = None;
    let mut sid = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EIO" => eio = Some(v),
            "transport" => transport = Some(v),
            "sid" => sid = Some(v),
            _ => {}
        }
    }
    let transport = match transport {
        Some("polling") => Transport::Polling,
        Some("websocket") => Transport::WebSocket,
        _ => return Err(RequestError::TransportUnknown),
    };
    if eio != Some("4") {
        return Err(RequestError::UnsupportedProtocolVersion);
    }
    Ok(EngineQuery {
        transport,
        sid: sid.filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_checks() {
        assert_eq!(
            parse_query("EIO=4&transport=polling"),
            Ok(EngineQuery {
                transport: Transport::Polling,
                sid: None
            })
        );
        assert_eq!(
            parse_query("EIO=4&transport=websocket&sid=abc&t=1"),
            Ok(EngineQuery {
                transport: Transport::WebSocket,
                sid: Some("abc")
            })
        );
        assert_eq!(parse_query("EIO=4"), Err(RequestError::TransportUnknown));
        assert_eq!(
            parse_query("EIO=4&transport=abc"),
            Err(RequestError::TransportUnknown)
        );
        assert_eq!(
            parse_query("transport=polling"),
            Err(RequestError::UnsupportedProtocolVersion)
        );
        assert_eq!(
            parse_query("EIO=abc&transport=polling"),
            Err(RequestError::UnsupportedProtocolVersion)
        );
        assert_eq!(
            parse_query("EIO=3&transport=polling"),
            Err(RequestError::UnsupportedProtocolVersion)
        );
        assert_eq!(
            RequestError::SessionIdUnknown.body(),
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
    }
}

#[cfg(test)]
mod session_tests;
