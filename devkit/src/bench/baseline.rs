//! The Python baseline: a worker command run on a stack without dispatcher, consuming the
//! jobs stream made here as the dispatcher makes it.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use jetinfer_schemas::names::LEGACY_JOBS_STREAM;

use super::BenchError;
use crate::local::Process;

/// Where the baseline worker finds the servers and the models.
pub struct BaselineEnv<'a> {
    pub nats_url: &'a str,
    pub redis_url: &'a str,
    pub models: &'a Path,
    pub key_prefix: &'a str,
}

/// Creates the jobs stream, starts `cmd` (split on whitespace) with its output in
/// `log`, and waits until it consumes the stream.
pub async fn start(
    js: &jetstream::Context,
    cmd: &str,
    env: &BaselineEnv<'_>,
    storage: stream::StorageType,
    log: &Path,
    timeout: Duration,
) -> Result<Process, BenchError> {
    create_jobs_stream(js, storage).await?;
    let mut words = cmd.split_whitespace();
    let program = words.next().ok_or(BenchError::EmptyCommand)?;
    let mut p = Process::start(
        "python-worker",
        program,
        words,
        [
            ("NATS_URL", env.nats_url.to_string()),
            ("REDIS_URL", env.redis_url.to_string()),
            ("JETINFER_MODELS", env.models.display().to_string()),
            ("JETINFER_KEY_PREFIX", env.key_prefix.to_string()),
            ("PYTHONUNBUFFERED", "1".into()),
        ],
        log,
    )?;
    wait_for_consumer(js, &mut p, timeout).await?;
    Ok(p)
}

/// The one jobs stream of the baseline's layout (it runs without a dispatcher).
async fn create_jobs_stream(
    js: &jetstream::Context,
    storage: stream::StorageType,
) -> Result<(), BenchError> {
    let jobs = jetinfer_connect::streams::JobsStream {
        storage,
        ..Default::default()
    };
    js.get_or_create_stream(jobs.legacy_config())
        .await
        .map_err(|e| BenchError::Nats {
            what: "creating the jobs stream",
            source: e.into(),
        })?;
    Ok(())
}

/// Waits until the baseline worker has made its consumer on the jobs stream.
async fn wait_for_consumer(
    js: &jetstream::Context,
    p: &mut Process,
    timeout: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = js.get_stream(LEGACY_JOBS_STREAM).await {
            if let Ok(info) = s.info().await {
                if info.state.consumer_count > 0 {
                    // Its first pull request may still be on the way.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return Ok(());
                }
            }
        }
        p.check_running("starting")?;
        if Instant::now() > deadline {
            return Err(BenchError::NoConsumer(timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
