//! The dead-letter stream `JETINFER_DLQ`: jobs the dispatcher answered `poison`, copied
//! with the reason, how many runs they lost, and their original subject.
//!
//! [`dead_letters`] lists them; [`replay`] (or [`replay_letter`] for one) publishes a dead
//! letter again to its original subject, after removing its `poison` result and failure
//! count (so it really runs), under a fresh `Nats-Msg-Id` (`<id>:replay:<ms>`, since
//! JetStream may still remember the original one), then removes it from the dead-letter
//! stream.

use async_nats::jetstream::stream::{
    DeleteMessageError, InfoError, RawMessageError, RawMessageErrorKind,
};
use async_nats::jetstream::{self, context::GetStreamErrorKind, ErrorCode};
use jetinfer_schemas::names::{
    DLQ_FAILURES_HEADER, DLQ_REASON_HEADER, DLQ_STREAM, DLQ_SUBJECT_HEADER,
};
use jetinfer_store::StoreError;

use crate::error::ClientError;
use crate::Client;

/// What can go wrong reading or replaying dead letters.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot open the dead-letter stream {DLQ_STREAM}: {0}")]
    Stream(#[source] jetstream::context::GetStreamError),
    /// Replay found no dead-letter stream (no dispatcher has created it yet).
    #[error("the dead-letter stream {DLQ_STREAM} does not exist")]
    NoStream,
    #[error("cannot read the state of {DLQ_STREAM}: {0}")]
    Info(#[source] InfoError),
    #[error("cannot read dead letter {seq}: {source}")]
    Read {
        seq: u64,
        #[source]
        source: RawMessageError,
    },
    #[error("cannot remove the result of {id} before replaying it: {source}")]
    Forget {
        id: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot publish {id} again to {subject}: {source}")]
    Publish {
        id: String,
        subject: String,
        #[source]
        source: Box<ClientError>,
    },
    /// The job was published again, but its dead letter is still listed.
    #[error("replayed {id}, but cannot remove dead letter {seq}: {source}")]
    Delete {
        id: String,
        seq: u64,
        #[source]
        source: DeleteMessageError,
    },
}

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

/// Which dead letters [`replay`] publishes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Those with one of these job ids.
    Ids(Vec<String>),
}

impl Selection {
    /// Every letter for an empty list (the command line's `dlq replay` without ids),
    /// else those ids.
    pub fn ids_or_all(ids: Vec<String>) -> Self {
        if ids.is_empty() {
            Selection::All
        } else {
            Selection::Ids(ids)
        }
    }

    pub fn matches(&self, letter: &DeadLetter) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.contains(&letter.id),
        }
    }
}

/// A dead letter published again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub id: String,
    /// The subject it was published to (its original one).
    pub subject: String,
    /// The `Nats-Msg-Id` it was published under.
    pub msg_id: String,
    /// Its former sequence in the dead-letter stream.
    pub seq: u64,
}

/// The dead-letter stream, or `None` when no dispatcher has created it yet.
async fn stream(js: &jetstream::Context) -> Result<Option<jetstream::stream::Stream>, DlqError> {
    match js.get_stream(DLQ_STREAM).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(None)
            }
            _ => Err(DlqError::Stream(e)),
        },
    }
}

/// Every message in the dead-letter stream, by sequence (none when the stream does not
/// exist yet).
pub async fn dead_letters(js: &jetstream::Context) -> Result<Vec<DeadLetter>, DlqError> {
    let Some(mut stream) = stream(js).await? else {
        return Ok(Vec::new());
    };
    let state = stream.info().await.map_err(DlqError::Info)?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = match stream.get_raw_message(seq).await {
            Ok(m) => m,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => continue, // deleted
            Err(source) => return Err(DlqError::Read { seq, source }),
        };
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

/// Publishes the selected dead letters again, in stream order; stops at the first failure
/// (the letters replayed before it stay replayed).
pub async fn replay(client: &Client, selection: &Selection) -> Result<Vec<Replayed>, DlqError> {
    let mut done = Vec::new();
    for letter in dead_letters(client.jetstream()).await? {
        if selection.matches(&letter) {
            done.push(replay_letter(client, &letter).await?);
        }
    }
    Ok(done)
}

/// Publishes one dead letter again: removes its result and failure count, publishes it to
/// its original subject under `<id>:replay:<ms>`, then deletes it from the stream.
pub async fn replay_letter(client: &Client, letter: &DeadLetter) -> Result<Replayed, DlqError> {
    let stream = stream(client.jetstream())
        .await?
        .ok_or(DlqError::NoStream)?;
    client
        .store()
        .forget(&letter.id)
        .await
        .map_err(|source| DlqError::Forget {
            id: letter.id.clone(),
            source,
        })?;
    let msg_id = jetinfer_schemas::names::replay_msg_id(&letter.id, jetinfer_schemas::now_ms());
    client
        .publish_raw(&letter.subject, &msg_id, letter.payload.clone())
        .await
        .map_err(|source| DlqError::Publish {
            id: letter.id.clone(),
            subject: letter.subject.clone(),
            source: Box::new(source),
        })?;
    stream
        .delete_message(letter.seq)
        .await
        .map_err(|source| DlqError::Delete {
            id: letter.id.clone(),
            seq: letter.seq,
            source,
        })?;
    Ok(Replayed {
        id: letter.id.clone(),
        subject: letter.subject.clone(),
        msg_id,
        seq: letter.seq,
    })
}

impl Client {
    /// Every message in the dead-letter stream (see [`dead_letters`]).
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, DlqError> {
        dead_letters(self.jetstream()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: &str) -> DeadLetter {
        DeadLetter {
            seq: 1,
            id: id.into(),
            subject: "jetinfer.jobs.p1.mlp".into(),
            reason: String::new(),
            failures: "2".into(),
            payload: bytes::Bytes::new(),
        }
    }

    #[test]
    fn an_empty_id_list_selects_every_letter() {
        assert_eq!(Selection::ids_or_all(vec![]), Selection::All);
        assert!(Selection::All.matches(&letter("a")));
        let some = Selection::ids_or_all(vec!["a".into()]);
        assert!(some.matches(&letter("a")));
        assert!(!some.matches(&letter("b")));
    }
}
