//! The applications the official protocol suites and the end-to-end tests
//! run against: a Socket.IO echo on `/socket.io/` and a raw Engine.IO echo
//! on `/engine.io/`.

use std::time::Instant;

use bytes::Bytes;
use protocol::eio::{CloseReason, Data, Engine, EngineHandler, OutPacket, SessionKey};
use protocol::sio::{Application, ConnectRequest, Ctx, Event, SocketId};
use protocol::store::StoreReply;
use protocol::{OpId, Upper};
use serde_json::{Value, json};

/// The Socket.IO application the protocol suites expect: namespaces `/` and
/// `/custom`; `auth` emitted on connect; `message` echoed as `message-back`;
/// `message-with-ack` acknowledged with its own arguments; `call-me`
/// answered with `call-back` asking for an ack, whose values come back as
/// `call-result`.
#[derive(Debug, Default)]
pub struct Conformance {
    /// The auth payload of the CONNECT being accepted, echoed once the socket exists.
    pending_auth: Option<Value>,
}

fn with_name(name: &str, args: Vec<Value>) -> Vec<Value> {
    let mut v = Vec::with_capacity(args.len() + 1);
    v.push(Value::String(name.to_owned()));
    v.extend(args);
    v
}

impl Application for Conformance {
    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/" || nsp == "/custom"
    }

    fn authorize(&mut self, _ctx: &mut Ctx<'_>, req: &ConnectRequest<'_>) -> Result<(), Value> {
        self.pending_auth = req.auth.cloned();
        Ok(())
    }

    fn on_connect(&mut self, ctx: &mut Ctx<'_>, socket: SocketId) {
        let auth = self.pending_auth.take().unwrap_or_else(|| json!({}));
        ctx.emit(socket, &json!(["auth", auth]), &[]);
    }

    fn on_event(&mut self, ctx: &mut Ctx<'_>, socket: SocketId, event: Event) {
        match (event.name.as_str(), event.ack) {
            ("message", _) => {
                ctx.emit(
                    socket,
                    &with_name("message-back", event.args),
                    &event.attachments,
                );
            }
            ("message-with-ack", Some(id)) => {
                ctx.ack(socket, id, &event.args, &event.attachments);
            }
            ("call-me", _) => {
                ctx.emit_with_ack(
                    socket,
                    &with_name("call-back", event.args),
                    &event.attachments,
                );
            }
            _ => {}
        }
    }

    fn on_ack(
        &mut self,
        ctx: &mut Ctx<'_>,
        socket: SocketId,
        _id: u64,
        args: Vec<Value>,
        attachments: Vec<Bytes>,
    ) {
        ctx.emit(socket, &with_name("call-result", args), &attachments);
    }
}

/// A raw Engine.IO echo: every message goes back to its sender as it came.
#[derive(Debug, Default)]
pub struct EngineEcho;

impl EngineHandler for EngineEcho {
    fn on_open(&mut self, _engine: &mut Engine, _key: SessionKey, _now: Instant) {}

    fn on_message(&mut self, engine: &mut Engine, key: SessionKey, data: Data<'_>, _now: Instant) {
        let p = match data {
            Data::Text(t) => OutPacket::text(b'4', t),
            Data::Binary(b) => OutPacket::Binary(b),
        };
        engine.send(key, p);
    }

    fn on_close(
        &mut self,
        _engine: &mut Engine,
        _key: SessionKey,
        _reason: CloseReason,
        _now: Instant,
    ) {
    }
}

impl Upper for EngineEcho {
    fn handle_store_reply(
        &mut self,
        _engine: &mut Engine,
        _op: OpId,
        _reply: StoreReply,
        _now: Instant,
    ) {
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }

    fn handle_timeout(&mut self, _engine: &mut Engine, _now: Instant) {}
}
