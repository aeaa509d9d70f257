//! Polling Redis for the demo's results in `MGET` batches until all are there or time
//! runs out.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use jetinfer_client::decode_owned;
use jetinfer_client::{ResultStore, StoreError};
use jetinfer_schemas::JobResult;

/// Keys per `MGET`: large enough for few round trips, small enough to keep each reply
/// (results carry their output tensors) modest.
const BATCH: usize = 500;
/// Pause between polling rounds that found nothing new.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// A result as first seen.
#[derive(Debug)]
pub struct Seen {
    /// The result, or why its stored bytes do not decode.
    pub result: Result<JobResult<'static>, StoreError>,
    pub seen_at: Instant,
}

/// Polls the results of `ids` (only where `wanted`) until all are present or `deadline`;
/// returns one slot per id, in order.
pub async fn collect(
    store: &ResultStore,
    ids: &[String],
    wanted: &[bool],
    deadline: Instant,
    bar: &ProgressBar,
) -> Vec<Option<Seen>> {
    let mut seen: Vec<Option<Seen>> = ids.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..ids.len()).filter(|&i| wanted[i]).collect();
    let mut last_error = None;
    while !pending.is_empty() && Instant::now() < deadline {
        let mut found = 0;
        for chunk in pending.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|&i| ids[i].clone()).collect();
            let raw = match store.get_many_raw(&keys).await {
                Ok(raw) => raw,
                Err(e) => {
                    // Transient (Redis restarting, pool timeout): try again next round.
                    if last_error.as_ref() != Some(&e.to_string()) {
                        bar.println(format!("polling results: {e} (retrying)"));
                        last_error = Some(e.to_string());
                    }
                    continue;
                }
            };
            let now = Instant::now();
            for (&i, bytes) in chunk.iter().zip(raw) {
                if let Some(bytes) = bytes {
                    let result = decode_owned(&ids[i], &bytes);
                    seen[i] = Some(Seen {
                        result,
                        seen_at: now,
                    });
                    found += 1;
                }
            }
        }
        bar.inc(found as u64);
        pending.retain(|&i| seen[i].is_none());
        if found == 0 {
            tokio::time::sleep(IDLE_POLL).await;
        }
    }
    seen
}
