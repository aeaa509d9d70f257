//! The values that trigger the faults workers are started to inject (`--inject-faults`):
//! a job whose first input value is one of these crashes or hangs the worker that runs it.

/// First input value that makes an injected sticky CUDA error (case 11).
pub(crate) const POISON_STICKY: f32 = -777.0;
/// First input value that makes an injected hang (case 12).
pub(crate) const POISON_HANG: f32 = -555.0;
