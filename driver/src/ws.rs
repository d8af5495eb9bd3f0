//! The WebSocket pump: frames from the socket into the node, batches from
//! the node onto the socket, one flush per batch.

use futures_util::{SinkExt, StreamExt};
use protocol::{ConnId, Frame};
use tungstenite::{Message, Utf8Bytes};

use crate::WsStream;
use crate::node_task::{Command, NodeHandle, OutReceiver, WsOut};

fn to_message(f: Frame) -> Option<Message> {
    match f {
        // The core only produces UTF-8 text; a failure here is a bug, logged and skipped.
        Frame::Text(b) => match Utf8Bytes::try_from(b) {
            Ok(t) => Some(Message::Text(t)),
            Err(e) => {
                tracing::error!("core produced a non-UTF-8 text frame: {e}");
                None
            }
        },
        Frame::Binary(b) => Some(Message::Binary(b)),
    }
}

/// Runs one WebSocket connection until either side ends it.
pub(crate) async fn pump<W: WsStream>(ws: W, conn: ConnId, node: NodeHandle, out: OutReceiver) {
    let (mut sink, mut stream) = ws.split();
    let reader = async {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Text(t)) => node.send(Command::WsText(conn, t)).await,
                Ok(Message::Binary(b)) => node.send(Command::WsBinary(conn, b)).await,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let writer = async {
        while let Ok(batch) = out.rx.recv().await {
            let mut close = false;
            let mut batches = vec![batch];
            while let Ok(more) = out.rx.try_recv() {
                batches.push(more);
            }
            for b in batches {
                match b {
                    WsOut::Frames(frames) => {
                        out.written(&frames);
                        for f in frames {
                            if let Some(m) = to_message(f)
                                && sink.feed(m).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    WsOut::Close => close = true,
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
            if close {
                let _ = sink.close().await;
                return;
            }
        }
        // The node dropped this connection (too slow): close it.
        let _ = sink.close().await;
    };
    futures_util::future::select(Box::pin(reader), Box::pin(writer)).await;
    node.send(Command::WsClosed(conn)).await;
}
