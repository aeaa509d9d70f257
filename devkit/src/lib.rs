//! The jetinfer development kit: everything that runs jetinfer on this machine for a person
//! or a test, and nothing that ships. Depends on the client library, never on a server crate.
//!
//! - [`local`]: real nats-server, redis-server, dispatcher and worker processes on this
//!   machine ([`local::LocalStack`]), for the demo, the bench, the fault suite and the
//!   black-box tests.
//! - [`golden`]: the golden inputs/outputs exported with the sample models, and
//!   [`golden::compare`] to check results against them.
//! - [`npy`], [`json`]: tensors from NumPy files and tensors/results as JSON.
//! - [`demo`]: the demo's plan, publishing, result collection and report.
//! - [`bench`]: the load generator and measurements of `jetinfer bench`.
//! - [`chaos`]: the fault suite of `jetinfer chaos`.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod golden;
pub mod json;
pub mod local;
pub mod npy;
