//! The dead-letter stream `JETINFER_DLQ`: jobs the dispatcher answered `poison`, copied
//! with the reason, how many runs they lost, and their original subject.

use async_nats::jetstream;
use jetinfer_schemas::names::{
    DLQ_FAILURES_HEADER, DLQ_REASON_HEADER, DLQ_STREAM, DLQ_SUBJECT_HEADER,
};

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Sequence in the dead-letter stream.
    pub seq: u64,
    pub id: String,
    /// Where the job was first published (replay publishes there).
    pub subject: String,
    pub reason: String,
    pub failures: String,
    /// The job message as the producer published it.
    pub payload: bytes::Bytes,
}

/// Every message in the dead-letter stream, by sequence.
pub async fn dead_letters(js: &jetstream::Context) -> Result<Vec<DeadLetter>, async_nats::Error> {
    let mut stream = match js.get_stream(DLQ_STREAM).await {
        Ok(s) => s,
        Err(_) => return Ok(Vec::new()), // no dispatcher has created it yet: nothing dead
    };
    let state = stream.info().await?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        }; // deleted
        let header = |name: &str| {
            m.headers
                .get(name)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        out.push(DeadLetter {
            seq,
            id: header(async_nats::header::NATS_MESSAGE_ID.as_ref()),
            subject: header(DLQ_SUBJECT_HEADER),
            reason: header(DLQ_REASON_HEADER),
            failures: header(DLQ_FAILURES_HEADER),
            payload: m.payload.clone(),
        });
    }
    Ok(out)
}
