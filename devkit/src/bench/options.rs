//! What a benchmark is asked to do: the model, the load, which systems to measure, and
//! where their stacks run.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::stream;

use super::load::LoadChoice;
use super::payload::PayloadOptions;

/// JetStream storage of the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    File,
    Memory,
}

impl Storage {
    /// The name the dispatcher's `--storage` and the report use.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        }
    }

    /// As JetStream's storage type.
    pub fn js(self) -> stream::StorageType {
        match self {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        }
    }
}

/// A NATS and Redis already running, to measure jetinfer on instead of a fresh stack.
#[derive(Debug, Clone)]
pub struct RunningStack {
    pub nats_url: String,
    pub redis_url: String,
}

/// The raw-model loop (`jetinfer-worker ceiling`).
#[derive(Debug, Clone, Copy)]
pub struct CeilingOptions {
    /// Batch size [default: the model's max_batch_size].
    pub batch: Option<u32>,
    pub seconds: f64,
}

/// Everything one `jetinfer bench` run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The model to load (a name in the models file).
    pub model: String,
    /// The models TOML; relative paths are also tried from the repository root.
    pub models: PathBuf,
    pub load: LoadChoice,
    /// Seconds of load, warm-up included.
    pub duration_s: f64,
    /// Seconds at the start that are not measured.
    pub warmup_s: f64,
    /// Seconds to wait for stragglers after the load.
    pub drain_s: f64,
    pub payload: PayloadOptions,
    /// Publish acknowledgements awaited at once (open loop).
    pub max_publishing: usize,
    /// Input data from this many bytes on goes by reference through Redis [default: the
    /// client's]; `usize::MAX` sends every job inline.
    pub inline_limit: Option<usize>,
    /// Extra redis-servers for jetinfer's inputs sent by reference (see
    /// `jetinfer_store::InputStores`), started beside the stack.
    pub input_stores: usize,
    pub storage: Storage,
    /// Partition streams per priority: the dispatcher's `--partitions`, and as many streams
    /// for the bare loop.
    pub partitions: u16,
    /// Workers to start (local stack).
    pub workers: usize,
    pub dispatcher_args: Vec<String>,
    pub worker_args: Vec<String>,
    /// Also run the model alone in a tight loop.
    pub ceiling: Option<CeilingOptions>,
    /// Also run the bare JetStream → Redis loop.
    pub bare_loop: bool,
    /// Also run the bare relay (the bare loop with a second hop, as a dispatcher makes).
    pub bare_relay: bool,
    /// Measure the jetinfer pipeline (off to measure only the baselines).
    pub pipeline: bool,
    /// Also run this command as a baseline worker on a fresh stack without dispatcher.
    pub python_worker: Option<String>,
    /// Name for the report.
    pub label: String,
    /// Where the stacks' logs go [default: target/bench-logs/RUN].
    pub log_dir: Option<PathBuf>,
    /// How long a stack may take to start.
    pub startup_timeout: Duration,
    /// Prefix of the Redis keys, for the client and the started processes.
    pub key_prefix: String,
    /// Measure jetinfer on these servers instead of a fresh stack.
    pub running_stack: Option<RunningStack>,
}
