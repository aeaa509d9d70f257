//! The jetinfer client library: publish inference jobs to NATS JetStream and read their
//! results from Redis, from Rust.
//!
//! - `error.rs`: [`ClientError`] with a typed cause per refusal (`StreamFull`, `NoStream`,
//!   `Rejected`, `Unacknowledged`, `InvalidJob`, `IdConflict`, …) and its `error_type()`,
//!   and [`WaitManyTimeout`] (what a timed-out `wait_many` gathered).
//! - `retry.rs`: [`RetryPolicy`], the back-off for publishes a full stream refused (pure).
//! - `gather.rs`: the bookkeeping of `wait_many` (pure state).
//! - [`Client`] (`client.rs`): connect, `submit`, `get`; `wait.rs`: `wait`,
//!   `submit_and_wait`, `wait_many` (one subscription for all its ids).
//! - [`ClientBuilder`] (`builder.rs`): `Client::builder(nats_url).redis(url).name(..)
//!   .user_password(..).tls_ca(..).retry_when_full(..).connect()`: every NATS setting of
//!   [`NatsSettings`] and the store's.
//! - [`dlq`]: read and replay the dead-letter stream, with a typed [`dlq::DlqError`].
//! - `otel.rs` (feature `otel`): the current span's W3C trace context in each published job,
//!   so the producer's trace continues through the dispatcher and the worker.
//!
//! Connection settings come from `jetinfer-connect` ([`NatsSettings`]), the Redis contract
//! from `jetinfer-store` ([`StoreConfig`], [`ResultStore`]); both are re-exported. The default
//! features pull in only async-nats, redis/deadpool, tokio, futures, bytes, serde/rmp,
//! thiserror and tracing.
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

mod builder;
mod client;
pub mod dlq;
mod error;
mod gather;
#[cfg(feature = "otel")]
mod otel;
mod partitions;
mod retry;
mod wait;

pub use builder::ClientBuilder;
pub use client::{Client, Submitted, DEFAULT_INPUTS_TTL};
pub use error::{ClientError, WaitManyTimeout};
pub use jetinfer_connect::{redact_url, ConnectError, NatsAuth, NatsSettings, NatsTls};
pub use jetinfer_store::{
    decode_owned, InputStores, RedisTls, ResultStore, ResultWrite, StoreConfig, StoreError,
};
pub use retry::RetryPolicy;
