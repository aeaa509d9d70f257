//! The demo's parts: which golden jobs to send ([`plan`]), publishing them
//! ([`publish`]), collecting their results ([`collect`]) and the per-priority report
//! ([`report`]). The `jetinfer demo` command strings them together.

pub mod collect;
pub mod plan;
pub mod publish;
pub mod report;
