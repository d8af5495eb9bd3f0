//! The core without IO: a broadcast through [`Node`] to N WebSocket sessions
//! (deliveries per second), and the whole `chat:send` path through the chat
//! service with the simulation's in-memory store.
//!
//! Both take the per-user rate limit and the per-socket event budget out
//! of the way (buckets no bench can empty): they measure what a message
//! costs, not the policy.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use protocol::chat::{
    Chat, ChatConfig, DEFAULT_MAX_CHATS, DEFAULT_TYPING_TIMEOUT, RateLimit, WallClock,
};
use protocol::eio::EngineConfig;
use protocol::ids::SeededIds;
use protocol::model::ObjectId;
use protocol::sio::{RecoveryConfig, SocketIo, SocketIoConfig};
use protocol::store::{Append, StoreCommand, StoreReply};
use protocol::testing::{Sim, T0_MS};
use protocol::{ConnId, Frame, Input, Node, Output};
use std::hint::black_box;

/// A simulation whose node has no effective rate limit, with `n` connected
/// users (connection numbers 1..=n), inboxes emptied, ids from a seeded
/// generator; connection state recovery on when `recovery`.
fn sim_with(n: u64, recovery: bool) -> Sim {
    let mut sim = Sim::new();
    let chat = Chat::new(
        ChatConfig {
            jwt: sim.jwt.clone(),
            rate: RateLimit {
                per_second: 1e12,
                burst: 1e12,
            },
            events: RateLimit {
                per_second: 1e12,
                burst: 1e12,
            },
            max_chats: DEFAULT_MAX_CHATS,
            typing_timeout: Some(DEFAULT_TYPING_TIMEOUT),
        },
        WallClock::new(sim.now, T0_MS),
        sim.now,
    );
    let sio = SocketIo::new(
        SocketIoConfig {
            recovery: recovery.then(|| RecoveryConfig::new(std::time::Duration::from_secs(120))),
            ..SocketIoConfig::default()
        },
        chat,
    );
    sim.node = Node::new(
        EngineConfig::default(),
        sio,
        SeededIds::new([7; 32]),
        sim.now,
    );
    sim.drain();
    for i in 1..=n {
        let token = sim.token(ObjectId::from_parts(1, [0; 5], i as u32), &format!("u{i}"));
        let conn = sim.connect(Some(&token));
        sim.take(conn);
    }
    sim
}

/// Drains the node; returns (frames written, store commands emitted).
fn drain(
    node: &mut Node<SocketIo<Chat>>,
    store: &mut Vec<(protocol::OpId, StoreCommand)>,
) -> usize {
    let mut frames = 0;
    loop {
        match node.poll_output() {
            Output::Timeout(_) => return frames,
            Output::WsFrame { frame, .. } => {
                let (Frame::Text(b) | Frame::Binary(b)) = frame;
                black_box(b);
                frames += 1;
            }
            Output::Broadcast(b) => {
                let (Frame::Text(p) | Frame::Binary(p)) = b.frame;
                black_box(p);
                frames += b.conns.len();
            }
            Output::Store { op, command } => store.push((op, command)),
            _ => {}
        }
    }
}

const SEND: &str =
    r#"42["chat:send",{"text":"hello, this is a chat message of ordinary length","tempId":"t"}]"#;

fn broadcast(c: &mut Criterion) {
    let mut g = c.benchmark_group("broadcast");
    // With recovery on, every broadcast is also logged with its offset.
    for (n, recovery) in [(100u64, false), (1000, false), (1000, true)] {
        let mut sim = sim_with(n, recovery);
        let now = sim.now;
        let node = &mut sim.node;
        let mut store = Vec::new();
        let mut sender = 0u64;
        g.throughput(Throughput::Elements(n - 1));
        let name = match recovery {
            false => "chat_send_to_room",
            true => "chat_send_to_room_recovery",
        };
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| {
                // Rotate senders so the tempId never collides with one in flight.
                sender = sender % n + 1;
                node.handle_input(
                    now,
                    Input::WsText {
                        conn: ConnId(sender),
                        text: SEND,
                    },
                )
                .unwrap();
                let mut delivered = drain(node, &mut store);
                // A store that keeps nothing: the append and the delivery mark succeed.
                while let Some((op, command)) = store.pop() {
                    let reply = match command {
                        StoreCommand::AppendMessage(_) => StoreReply::Appended(Append::Stored),
                        _ => StoreReply::Delivered,
                    };
                    node.handle_input(now, Input::StoreReply { op, reply })
                        .unwrap();
                    delivered += drain(node, &mut store);
                }
                // N-1 new-message frames, plus the sender's chat:ack and chat:delivered.
                assert_eq!(delivered as u64, n + 1);
            })
        });
    }
    g.finish();
}

fn chat_send(c: &mut Criterion) {
    let mut g = c.benchmark_group("chat_send");
    g.throughput(Throughput::Elements(1));
    let mut sim = sim_with(2, false);
    let mut i = 0u64;
    g.bench_function("sim_send_release_drain", |b| {
        b.iter(|| {
            i += 1;
            let text = format!(
                r#"42["chat:send",{{"text":"hello, this is a chat message of ordinary length","tempId":"t{i}"}}]"#
            );
            sim.send(1, &text);
            sim.settle();
            black_box((sim.take(1), sim.take(2)));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3));
    targets = broadcast, chat_send
}
criterion_main!(benches);
