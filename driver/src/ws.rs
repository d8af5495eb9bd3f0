//! The WebSocket pump: frames from the socket into the node, batches from
//! the node onto the socket, one flush per batch.

use futures_util::{SinkExt, StreamExt};
use protocol::ConnId;
use tungstenite::Message;

use crate::WsStream;
use crate::node_task::{Command, NodeHandle, OutReceiver, WsOut};

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
                        for m in frames {
                            if sink.feed(m).await.is_err() {
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
