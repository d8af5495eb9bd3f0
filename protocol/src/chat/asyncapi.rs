//! The AsyncAPI 3.0 document of the chat's Socket.IO events (feature
//! `openapi`), built from the service's own lists ([`ClientEvent`],
//! [`ServerEvent`], [`ErrorCode`]) and the bounds `validate.rs` checks; the
//! message schema is the OpenAPI document's. `asyncapi_tests.rs` drives the
//! service with the documented payloads and holds what it emits to it.
//!
//! The document describes the server: it *receives* the client events and
//! *sends* the server events. Each client event may carry a Socket.IO ack
//! callback; the ack's payload is the operation's `reply`.

use serde_json::{Value, json};
use utoipa::PartialSchema;

use super::events::{ClientEvent, ErrorCode, ServerEvent, TOKEN_EXPIRED, UNAUTHORIZED};
use super::validate::{MAX_READ_IDS, MAX_TEMP_ID_CHARS, MAX_TYPE_CHARS};
use crate::model::{
    DEFAULT_CHAT, MAX_CHAT_ID_LEN, MAX_TEXT_CHARS, Message, OBJECT_ID_INPUT_PATTERN, ObjectId,
    Status, chat_id_pattern,
};

/// Where a Socket.IO part of the document sits in the protocol: an EVENT
/// (by name), the ACK of one, or the CONNECT handshake.
const PACKET: &str = "x-socketio-packet";

fn schema_of<T: PartialSchema>() -> Value {
    serde_json::to_value(T::schema()).expect("schemas serialize")
}

/// A chat id, or null / absent for `general`.
fn chat_id() -> Value {
    json!({
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": MAX_CHAT_ID_LEN,
        "pattern": chat_id_pattern(),
        "default": DEFAULT_CHAT,
        "description": format!("1 to {MAX_CHAT_ID_LEN} characters of A-Z a-z 0-9 _ . : -; absent or null: `{DEFAULT_CHAT}`."),
    })
}

fn object_id() -> Value {
    json!({"$ref": "#/components/schemas/ObjectId"})
}

/// The schemas of the document, by name.
fn schemas() -> Value {
    json!({
        "ObjectId": schema_of::<ObjectId>(),
        "Status": schema_of::<Status>(),
        "Message": schema_of::<Message>(),
        "Send": {
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": {
                    "type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS, "pattern": "\\S",
                    "description": format!("1 to {MAX_TEXT_CHARS} characters (Unicode scalar values), not only white space."),
                },
                "tempId": {
                    "type": ["string", "number", "null"], "maxLength": MAX_TEMP_ID_CHARS,
                    "description": format!("The client's retry key, at most {MAX_TEMP_ID_CHARS} characters: the same tempId sent again by the same user gets the first `chat:ack` and stores nothing new (a number is read as its decimal string)."),
                },
                "type": {
                    "type": ["string", "null"], "minLength": 1, "maxLength": MAX_TYPE_CHARS, "default": "text",
                    "description": format!("The message's type tag, 1 to {MAX_TYPE_CHARS} characters."),
                },
                "chatId": chat_id(),
            },
            "description": "`author`, `authorId` and `status` are ignored: they come from the token and the server.",
            "examples": [{"text": "hi", "tempId": "t1"}, {"text": "ship it", "tempId": "t2", "chatId": "team.eng", "type": "text"}],
        },
        "TypingIn": {
            "type": "object",
            "required": ["isTyping"],
            "properties": {"isTyping": {"type": "boolean"}, "chatId": chat_id()},
            "description": "`userId` and `author` are ignored: they come from the token.",
            "examples": [{"isTyping": true}, {"isTyping": false, "chatId": "team.eng"}],
        },
        "ReadIn": {
            "type": "object",
            "required": ["messageIds"],
            "properties": {"messageIds": {
                "type": "array", "minItems": 1, "maxItems": MAX_READ_IDS,
                "items": {"type": "string", "pattern": OBJECT_ID_INPUT_PATTERN},
                "description": "Duplicates count once.",
            }},
            "examples": [{"messageIds": ["665f1c2e9b1e8a3f4c2d1a0b"]}],
        },
        "Room": {
            "type": "object",
            "properties": {"chatId": chat_id()},
            "examples": [{"chatId": "team.eng"}],
        },
        "RoomAck": {
            "type": "object",
            "required": ["chatId"],
            "properties": {"chatId": {"type": "string", "minLength": 1, "maxLength": MAX_CHAT_ID_LEN, "pattern": chat_id_pattern()}},
            "examples": [{"chatId": "team.eng"}],
        },
        "Ack": {
            "type": "object",
            "required": ["tempId", "id", "timestamp"],
            "properties": {
                "tempId": {"type": ["string", "null"], "description": "As sent; null without one."},
                "id": object_id(),
                "timestamp": {"type": "integer", "description": "Milliseconds since the Unix epoch."},
            },
            "examples": [{"tempId": "t1", "id": "665f1c2e9b1e8a3f4c2d1a0b", "timestamp": 1_732_540_800_123i64}],
        },
        "Typing": {
            "type": "object",
            "required": ["userId", "author", "chatId", "isTyping"],
            "properties": {
                "userId": object_id(),
                "author": {"type": "string"},
                "chatId": {"type": "string"},
                "isTyping": {"type": "boolean"},
            },
            "examples": [{"userId": "665f1c0a9b1e8a3f4c2d19ff", "author": "ana", "chatId": "general", "isTyping": true}],
        },
        "Delivered": {
            "type": "object",
            "required": ["messageId"],
            "properties": {"messageId": object_id()},
            "examples": [{"messageId": "665f1c2e9b1e8a3f4c2d1a0b"}],
        },
        "Read": {
            "type": "object",
            "required": ["messageIds", "userId"],
            "properties": {
                "messageIds": {"type": "array", "items": object_id(), "description": "The ids recorded: a user's own messages are not (in an ack, it may be empty)."},
                "userId": object_id(),
            },
            "examples": [{"messageIds": ["665f1c2e9b1e8a3f4c2d1a0b"], "userId": "665f1c0a9b1e8a3f4c2d19ff"}],
        },
        "ErrorCode": {
            "type": "string",
            "enum": ErrorCode::ALL,
            "description": "invalid: the payload breaks a rule; rate_limited: past the per-user chat:send budget; store_unavailable: the store did not take the write (nothing was stored; try again).",
        },
        "Error": {
            "type": "object",
            "required": ["message", "code"],
            "properties": {
                "message": {"type": "string", "description": "For a person."},
                "code": {"$ref": "#/components/schemas/ErrorCode"},
                "tempId": {"type": "string", "description": "The refused chat:send's tempId, if it had one."},
            },
            "examples": [{"message": "text must be 1 to 4000 characters", "code": "invalid", "tempId": "t1"}],
        },
        "Refused": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["message", "code"],
                "properties": {"message": {"type": "string"}, "code": {"$ref": "#/components/schemas/ErrorCode"}},
            }},
            "description": "The ack of a refused event (the socket also gets `error`).",
            "examples": [{"error": {"message": "Too many messages; slow down", "code": "rate_limited"}}],
        },
        "ConnectAuth": {
            "type": "object",
            "required": ["token"],
            "properties": {"token": {"type": "string", "description": "The access_token of POST /register or POST /login."}},
            "examples": [{"token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.signature"}],
        },
        "ConnectError": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": {"type": "string", "enum": [UNAUTHORIZED, TOKEN_EXPIRED]}},
            "examples": [{"message": UNAUTHORIZED}, {"message": TOKEN_EXPIRED}],
        },
    })
}

/// A client event: its payload schema, the schema of its ack, and what the server does.
fn client(event: ClientEvent) -> (&'static str, &'static str, &'static str) {
    match event {
        ClientEvent::Send => (
            "Send",
            "Ack",
            "Checks the message (and takes a token of the sender's rate limit first); stores it \
             durably; then `chat:ack` to the sending socket, `chat:new-message` to every other \
             socket in the chat (the sender's other tabs included), and `chat:delivered` to the \
             sending socket once another socket was handed it. Refused: `error`, nothing stored.",
        ),
        ClientEvent::Typing => (
            "TypingIn",
            "Typing",
            "`chat:typing` to every other socket in the chat. `isTyping: true` stands for the \
             typing timeout (10 s by default) after its last repetition; then, or when the \
             socket leaves the chat or disconnects, the others get `isTyping: false`.",
        ),
        ClientEvent::Read => (
            "ReadIn",
            "Read",
            "Records the reads (a user's read of their own message is not one) and sends \
             `chat:read` to the other sockets in those messages' chats.",
        ),
        ClientEvent::Join => (
            "Room",
            "RoomAck",
            "The socket enters the chat's room (every socket starts in `general`).",
        ),
        ClientEvent::Leave => ("Room", "RoomAck", "The socket leaves the chat's room."),
    }
}

/// A server event: its payload schema and when it is sent.
fn server(event: ServerEvent) -> (&'static str, &'static str) {
    match event {
        ServerEvent::NewMessage => (
            "Message",
            "A stored message, to every socket in its chat but the sending one.",
        ),
        ServerEvent::Ack => (
            "Ack",
            "To the sending socket once its message is durable (and again, with the same id, \
             for a retry of the same tempId).",
        ),
        ServerEvent::Typing => ("Typing", "Someone in the chat is (or stopped) typing."),
        ServerEvent::Delivered => (
            "Delivered",
            "To the sending socket once another socket was handed its message.",
        ),
        ServerEvent::Read => ("Read", "Someone read these messages of the chat."),
        ServerEvent::Error => (
            "Error",
            "To the one socket whose event was refused; the connection stays open.",
        ),
    }
}

/// `chat:send` -> `chatSend`, `error` -> `error`.
fn key(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == ':' || c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The AsyncAPI document, `info` naming this service and version.
pub fn document(service: &str, version: &str) -> Value {
    let mut messages = serde_json::Map::new();
    let mut channel_messages = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let mut add_message = |id: String, message: Value| {
        channel_messages.insert(
            id.clone(),
            json!({"$ref": format!("#/components/messages/{id}")}),
        );
        messages.insert(id, message);
    };
    let channel_message = |id: &str| json!({"$ref": format!("#/channels/chat/messages/{id}")});

    add_message(
        "connect".into(),
        json!({
            "name": "CONNECT", "title": "CONNECT to namespace /", PACKET: "CONNECT",
            "summary": "The Socket.IO CONNECT packet's auth payload.",
            "payload": schema_ref("ConnectAuth"),
        }),
    );
    add_message(
        "connectError".into(),
        json!({
            "name": "CONNECT_ERROR", "title": "CONNECT_ERROR", PACKET: "CONNECT_ERROR",
            "summary": format!("Without a valid token: `{UNAUTHORIZED}`; with an expired one: `{TOKEN_EXPIRED}`."),
            "payload": schema_ref("ConnectError"),
        }),
    );
    operations.insert(
        "connect".into(),
        json!({
            "action": "receive",
            "channel": {"$ref": "#/channels/chat"},
            "summary": "Join namespace `/` with a token",
            "description": "The token comes in the CONNECT packet's auth payload (or an `Authorization: Bearer` header, or a `token` query parameter, on the Engine.IO handshake; the auth payload wins, then the header, then the query). A connected socket is in its user's room and in chat `general`.",
            "messages": [channel_message("connect")],
            "reply": {"messages": [channel_message("connectError")]},
        }),
    );

    for &event in ClientEvent::ALL {
        let (payload, ack, description) = client(event);
        let id = key(event.name());
        let ack_id = format!("{id}Ack");
        add_message(
            id.clone(),
            json!({
                "name": event.name(), "title": event.name(), PACKET: "EVENT",
                "payload": schema_ref(payload),
            }),
        );
        add_message(
            ack_id.clone(),
            json!({
                "title": format!("ack of {}", event.name()), PACKET: "ACK",
                "summary": format!("The ack callback's argument: `{ack}`, or `Refused`."),
                "payload": {"oneOf": [schema_ref(ack), schema_ref("Refused")]},
            }),
        );
        operations.insert(
            id.clone(),
            json!({
                "action": "receive",
                "channel": {"$ref": "#/channels/chat"},
                "summary": format!("{} (client to server)", event.name()),
                "description": description,
                "messages": [channel_message(&id)],
                "reply": {"messages": [channel_message(&ack_id)]},
            }),
        );
    }
    for &event in ServerEvent::ALL {
        let (payload, description) = server(event);
        // chat:typing and chat:read are names both ways: the server's get their own keys.
        let id = format!("{}Out", key(event.name()));
        add_message(
            id.clone(),
            json!({
                "name": event.name(), "title": event.name(), PACKET: "EVENT",
                "payload": schema_ref(payload),
            }),
        );
        operations.insert(
            id.clone(),
            json!({
                "action": "send",
                "channel": {"$ref": "#/channels/chat"},
                "summary": format!("{} (server to client)", event.name()),
                "description": description,
                "messages": [channel_message(&id)],
            }),
        );
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": format!("{service} Socket.IO events"),
            "version": version,
            "description": "Socket.IO protocol v5 over Engine.IO v4 (HTTP long-polling, WebSocket, and the upgrade between them) at path `/socket.io/`, namespace `/`. Each client event may carry a Socket.IO ack callback; the server then answers through it as well (the operation's reply). The REST routes are in `/openapi.json`.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "chatwire": {
                "host": "localhost:3000",
                "protocol": "ws",
                "pathname": "/socket.io/",
                "description": "Engine.IO v4 (`EIO=4`): `ws://host/socket.io/?EIO=4&transport=websocket`, or HTTP long-polling at `http://host/socket.io/?EIO=4&transport=polling`.",
                "security": [{"$ref": "#/components/securitySchemes/token"}],
            },
        },
        "channels": {
            "chat": {
                "address": "/",
                "title": "Namespace /",
                "servers": [{"$ref": "#/servers/chatwire"}],
                "messages": channel_messages,
            },
        },
        "operations": operations,
        "components": {
            "schemas": schemas(),
            "messages": messages,
            "securitySchemes": {
                "token": {
                    "type": "httpApiKey",
                    "in": "query",
                    "name": "token",
                    "description": format!("A JWT from POST /register or POST /login, best sent in the CONNECT packet's auth payload `{{\"token\": \"<jwt>\"}}` (see the `connect` operation); a `token` query parameter or an `Authorization: Bearer` header on the handshake also work. Refused with CONNECT_ERROR `{{\"message\": \"{UNAUTHORIZED}\"}}` (`\"{TOKEN_EXPIRED}\"` for an expired token)."),
                },
            },
        },
    })
}
