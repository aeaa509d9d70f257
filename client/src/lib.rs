//! The jetinfer client: publish inference jobs to NATS JetStream and read their results
//! from Redis, from Rust. The `jetinfer` binary (CLI) is built on the same library.
//!
//! - [`client`]: [`Client`] — `submit`, `get`, `wait`.
//! - [`store`]: [`ResultStore`] — the Redis result keys (`SET NX`, first result wins) and
//!   the content-addressed cache; the dispatcher and workers write through it too.
//! - [`npy`]: a minimal `.npy` reader/writer (inputs from NumPy without a NumPy crate).
//! - [`json`]: tensors and results as JSON for the CLI and scripts.
//! - [`golden`]: the golden inputs/outputs exported with the sample models, and
//!   [`golden::compare`] to check results against them.
//! - [`local`]: real nats-server, redis-server, dispatcher and worker processes on this
//!   machine ([`local::LocalStack`]), for the demo and the black-box tests.
//! - [`logging`]: logging set-up and the shutdown signal shared by the binaries.
//! - [`telemetry`]: logs (text/JSON), OpenTelemetry traces over OTLP, the Prometheus
//!   recorder and the `/metrics` `/healthz` `/readyz` endpoint, shared by the binaries.
//! - [`bench`]: the load generator and measurements of `jetinfer bench`.
//! - [`chaos`]: the fault suite of `jetinfer chaos`; [`dlq`]: the dead-letter stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jetinfer_client::ClientError> {
//! use jetinfer_client::{Client, StoreConfig};
//! use jetinfer_schemas::{Job, Priority, Tensor};
//!
//! let client = Client::connect("nats://127.0.0.1:4222", &StoreConfig::new("redis://127.0.0.1:6379")).await?;
//! let job = Job::new("job-1", "mlp", vec![Tensor::from_f32(vec![16], &[0.5; 16])]);
//! client.submit(Priority::P1, &job).await?;
//! let result = client.wait("job-1", std::time::Duration::from_secs(10)).await?;
//! println!("{:?} {:?}", result.status, result.outputs[0].to_f32_vec());
//! # Ok(()) }
//! ```

pub mod bench;
pub mod chaos;
pub mod client;
pub mod dlq;
pub mod golden;
pub mod json;
pub mod local;
pub mod logging;
pub mod npy;
pub mod store;
pub mod telemetry;

pub use client::{Client, ClientError, Submitted};
pub use store::{ResultStore, ResultWrite, StoreConfig, StoreError};
