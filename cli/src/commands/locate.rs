//! Where a job without a result is, read from what the servers already keep (no per-job
//! writes): its message in a priority's partition streams (found by `Nats-Msg-Id`, skipping deleted
//! sequences with `next_by_subj`), whether the dispatchers' consumer has delivered it
//! (held by a dispatcher: queued there or running on a worker) or not (waiting, with the
//! messages ahead of it), and its dead letter.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use jetinfer_client::dlq::DeadLetter;
use jetinfer_connect::streams::partition_count;
use jetinfer_schemas::names::{msg_id_is_for, parse_job_subject, priority_filter};
use jetinfer_schemas::partitions::{partition_consumer, partition_for, partition_stream};
use jetinfer_schemas::{trace_id_of, Priority};
use tokio::time::Instant;

/// A job's message in its priority stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InStream {
    pub stream: String,
    pub priority: &'static str,
    pub seq: u64,
    pub subject: String,
    pub model: String,
    /// When JetStream stored it, RFC 3339.
    pub published: String,
    /// Delivered to a dispatcher and not acknowledged yet.
    pub held: bool,
    /// Messages of the stream waiting before it (0 when held).
    pub ahead: u64,
    /// Trace id of the `traceparent` the producer sent, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// What a scan of the priority streams found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scan {
    pub found: Option<InStream>,
    /// Messages read.
    pub scanned: u64,
    /// False when the time budget ran out before every message was read.
    pub complete: bool,
}

/// Looks for job `id` in the priority streams, P0 first, reading messages until `budget`
/// has passed.
pub async fn find_in_streams(
    js: &jetstream::Context,
    id: &str,
    budget: Duration,
) -> anyhow::Result<Scan> {
    let deadline = Instant::now() + budget;
    let mut scan = Scan {
        found: None,
        scanned: 0,
        complete: true,
    };
    for p in Priority::ALL {
        // The partition a partition-aware producer chose first, then the others (a producer
        // that knows nothing of partitions publishes to partition 0).
        let n = partition_count(js, p).await;
        let first = partition_for(id, n);
        let order = std::iter::once(first).chain((0..n).filter(|&k| k != first));
        for k in order {
            scan_partition(js, p, k, id, deadline, &mut scan).await?;
            if scan.found.is_some() || !scan.complete {
                return Ok(scan);
            }
        }
    }
    Ok(scan)
}

/// Reads partition `k` of priority `p` for job `id` into `scan`, until `deadline`.
async fn scan_partition(
    js: &jetstream::Context,
    p: Priority,
    k: u16,
    id: &str,
    deadline: Instant,
    scan: &mut Scan,
) -> anyhow::Result<()> {
    let name = partition_stream(p, k);
    {
        let Ok(mut stream) = js.get_stream(&name).await else {
            return Ok(()); // no such stream yet: nothing waits in it
        };
        let state = stream
            .info()
            .await
            .with_context(|| format!("reading the state of {name}"))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok(());
        }
        // Without the dispatchers' consumer nothing has been delivered.
        let delivered = match stream.consumer_info(partition_consumer(p, k)).await {
            Ok(info) => info.delivered.stream_sequence,
            Err(_) => 0,
        };
        let filter = priority_filter(p);
        let mut seq = state.first_sequence;
        let mut ahead = 0;
        while seq <= state.last_sequence {
            if Instant::now() >= deadline {
                scan.complete = false;
                return Ok(());
            }
            let m = match stream.get_first_raw_message_by_subject(&filter, seq).await {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {name}"));
                }
            };
            scan.scanned += 1;
            seq = m.sequence + 1;
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string());
            let msg_id = header(async_nats::header::NATS_MESSAGE_ID.as_ref()).unwrap_or_default();
            let held = m.sequence <= delivered;
            if !msg_id_is_for(&msg_id, id) {
                if !held {
                    ahead += 1;
                }
                continue;
            }
            let subject = m.subject.to_string();
            let model = parse_job_subject(&subject)
                .map(|(_, model)| model.to_string())
                .unwrap_or_default();
            scan.found = Some(InStream {
                stream: name.clone(),
                priority: p.as_str(),
                seq: m.sequence,
                subject,
                model,
                published: m.time.to_string(),
                held,
                ahead: if held { 0 } else { ahead },
                trace_id: header("traceparent")
                    .as_deref()
                    .and_then(trace_id_of)
                    .map(str::to_string),
            });
            return Ok(());
        }
    }
    Ok(())
}

/// A dead letter of job `id` (or of its replay), if the dead-letter stream holds one.
pub fn find_letter<'a>(letters: &'a [DeadLetter], id: &str) -> Option<&'a DeadLetter> {
    letters.iter().find(|l| msg_id_is_for(&l.id, id))
}
