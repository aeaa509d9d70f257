//! The global allocator of the jetinfer services.
//!
//! The dispatcher and the worker allocate and free many small buffers per job (messages,
//! encoded requests and results, ids, subjects). With glibc's allocator that was about a fifth
//! of each process's CPU on the 2-core machine (`_int_malloc`, `_int_free`,
//! `malloc_consolidate`, `unlink_chunk` in `perf`; docs/benchmarks.md, "Service CPU per job");
//! mimalloc's per-thread free lists do the same work for less. Each binary opts in with
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: jetinfer_telemetry::Allocator = jetinfer_telemetry::Allocator;
//! ```
//!
//! Libraries (the client, tests) keep whatever allocator their program has. libtorch in the
//! worker keeps its own: only Rust's allocations go through this one.

/// mimalloc, as a [`std::alloc::GlobalAlloc`].
pub use mimalloc::MiMalloc as Allocator;
