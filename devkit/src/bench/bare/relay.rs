//! The bare relay's second hop: each group the bare consumer pulls goes, payloads and all,
//! as one core-NATS request to a subscriber on a connection of its own (as a worker would
//! have), which stores one minimal result per job, announces each, and replies; the
//! consumer acks the group on the reply. Frames are length-prefixed (id, payload) pairs:
//! no encoding library's cost is in the measurement.

use async_nats::jetstream::Message;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use jetinfer_schemas::names::done_subject;
use tokio_util::sync::CancellationToken;

use super::{store_results, BenchError, ResultStore};

/// Where the relay's requests go.
const RUN_SUBJECT: &str = "jetinfer.bare.run";

/// Subscribes the second hop, on its own connection, until `stop`.
pub(super) async fn serve(
    nats_url: &str,
    store: ResultStore,
    stop: CancellationToken,
) -> Result<(), BenchError> {
    let nats_err = |e: async_nats::Error| BenchError::Nats {
        what: "bare relay's second hop",
        source: e,
    };
    let nats = async_nats::connect(nats_url)
        .await
        .map_err(|e| nats_err(e.into()))?;
    let mut requests = nats
        .subscribe(RUN_SUBJECT)
        .await
        .map_err(|e| nats_err(e.into()))?;
    // The subscription is live once the server has it: flush before the first request.
    nats.flush().await.map_err(|e| nats_err(e.into()))?;
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = requests.next() => r,
            };
            let Some(request) = request else { break };
            tokio::spawn(run(nats.clone(), store.clone(), request));
        }
    });
    Ok(())
}

/// Stores and announces the group's results, then replies (no reply: the consumer's
/// request times out and the jobs are redelivered, as a worker's failure would have them).
async fn run(nats: async_nats::Client, store: ResultStore, request: async_nats::Message) {
    let ids = ids_of(&request.payload);
    if store_results(&store, &ids).await.is_err() {
        return;
    }
    for id in &ids {
        let _ = nats.publish(done_subject(id), "ok".into()).await;
    }
    if let Some(reply) = request.reply {
        let _ = nats.publish(reply, Bytes::from_static(b"ok")).await;
    }
}

/// Sends `msgs` (with their `ids`) to the second hop and acks them on its reply.
pub(super) async fn forward(nats: async_nats::Client, msgs: Vec<Message>, ids: Vec<String>) {
    let size: usize = msgs.iter().map(|m| m.payload.len() + 64).sum();
    let mut frame = BytesMut::with_capacity(size);
    for (m, id) in msgs.iter().zip(&ids) {
        frame.put_u16(id.len() as u16);
        frame.put_slice(id.as_bytes());
        frame.put_u32(m.payload.len() as u32);
        frame.put_slice(&m.payload);
    }
    if nats.request(RUN_SUBJECT, frame.freeze()).await.is_ok() {
        for m in &msgs {
            let _ = m.ack().await;
        }
    }
}

/// The ids of a frame's jobs (their payloads are carried, not read).
fn ids_of(mut frame: &[u8]) -> Vec<&str> {
    let mut ids = Vec::new();
    while frame.len() >= 2 {
        let n = u16::from_be_bytes([frame[0], frame[1]]) as usize;
        let Some(id) = frame.get(2..2 + n) else { break };
        let Some(len) = frame.get(2 + n..6 + n) else {
            break;
        };
        let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
        ids.push(std::str::from_utf8(id).unwrap_or_default());
        frame = frame.get(6 + n + len..).unwrap_or_default();
    }
    ids
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_frame_gives_back_its_ids() {
        let mut f = bytes::BytesMut::new();
        for (id, payload) in [("a-1", &b"xyz"[..]), ("bb", &b""[..])] {
            bytes::BufMut::put_u16(&mut f, id.len() as u16);
            bytes::BufMut::put_slice(&mut f, id.as_bytes());
            bytes::BufMut::put_u32(&mut f, payload.len() as u32);
            bytes::BufMut::put_slice(&mut f, payload);
        }
        assert_eq!(super::ids_of(&f), vec!["a-1", "bb"]);
        assert_eq!(super::ids_of(&f[..4]), Vec::<&str>::new());
    }
}
