//! Moving a batch's inputs to its device. On CUDA the batch is written once, straight
//! into a pinned host buffer, and copied to the device without blocking: no intermediate
//! `Vec`, no pageable staging copy.
//!
//! Normally the batcher writes the batch ([`PinnedPool::stage`], on a blocking thread)
//! while the executor still runs the previous one, so the device never waits for that
//! write (19 MB for 128 ResNet-50 images, a few ms). The executor's own buffers
//! ([`to_device`]) serve the batches it splits or re-runs after a failure.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jetinfer_schemas::Tensor;
use tch::{Device, Kind, TchError};

use crate::config::ModelConfig;
use crate::pad::{fill, plan};

thread_local! {
    /// This executor thread's pinned host buffers (one device per thread), one per model
    /// input: the copy of input 0 may still be in flight while input 1 is written, so the
    /// inputs of one batch never share a buffer. Reusing them across batches is safe: the
    /// device is synchronised before the first input of a batch is written (normally a
    /// no-op, as a batch ends with a blocking device → host copy of its outputs; it matters
    /// when a forward failed and its jobs are re-run). Each instance of a device is its own
    /// thread, so each has its own buffers here; the synchronisation is device-wide (tch has
    /// no per-stream wait), so on this rare path an instance also waits for the others.
    static STAGING: RefCell<Vec<Option<tch::Tensor>>> = const { RefCell::new(Vec::new()) };
}

/// Input `i` of every job as one batch tensor on `device` (wire dtype; the caller casts).
pub(crate) fn to_device(
    jobs: &[Vec<Tensor<'static>>],
    i: usize,
    config: &ModelConfig,
    device: Device,
    kind: Kind,
) -> Result<tch::Tensor, TchError> {
    let pad = config.pad.as_ref().map(|p| p[i]);
    let (shape, per_job) = plan(jobs, i, pad, config);
    let total: usize = shape[0] as usize * per_job;
    if device == Device::Cpu || total == 0 {
        // Written straight into an uninitialised tensor of the batch's shape: every byte is
        // written by `fill`. (`from_data_size` zero-filled a new tensor, two libtorch ops,
        // then copied a zeroed Vec into it: ~2 % of a worker's CPU per small job.)
        let batch = tch::Tensor::f_empty(shape.as_slice(), (kind, Device::Cpu))?;
        let bytes = batch.numel() * kind.elt_size_in_bytes();
        if bytes != total {
            return Err(TchError::Shape(format!(
                "a {kind:?} batch of {shape:?} holds {bytes} bytes, the inputs {total}"
            )));
        }
        if total > 0 {
            // SAFETY: `batch` is a new contiguous CPU tensor of exactly `total` bytes
            // (checked above), held only here while this slice lives.
            let buf = unsafe { std::slice::from_raw_parts_mut(batch.data_ptr() as *mut u8, total) };
            fill(buf, jobs, i, pad, &shape, per_job);
        }
        return Ok(batch);
    }
    if let (0, Device::Cuda(d)) = (i, device) {
        tch::Cuda::synchronize(d as i64);
    }
    STAGING.with(|cell| {
        let mut slots = cell.borrow_mut();
        if slots.len() <= i {
            slots.resize_with(i + 1, || None);
        }
        let slot = &mut slots[i];
        if slot.as_ref().is_none_or(|t| (t.numel()) < total) {
            *slot = Some(pinned(total, device)?);
        }
        let staging = slot.as_ref().expect("just set: this is a bug");
        let host = write_batch(staging, jobs, i, pad, &shape, per_job, kind)?;
        host.f_to_device_(device, kind, true, false)
    })
}

/// Pinned host buffers of one CUDA device, shared by its batchers and instances: each
/// batch takes buffers of its own, so a batch per instance can be written, wait and run at
/// once; a [`HostBatch`] gives its buffers back when dropped.
pub(crate) struct PinnedPool {
    device: Device,
    free: Mutex<Vec<tch::Tensor>>,
    /// Buffers kept for reuse: [`POOL_KEEP`] per instance of the device.
    keep: AtomicUsize,
}

/// Buffers kept for reuse per instance: one batch being written, one waiting, one running,
/// per input, with room for a second model.
const POOL_KEEP: usize = 12;

/// A batch's inputs in pinned host memory, one tensor per model input (wire dtype, batch
/// shape). Drop it only once its copies to the device have finished: the executor drops it
/// after the batch's outputs came back, which waits for every copy queued before them.
pub(crate) struct HostBatch {
    pub inputs: Vec<tch::Tensor>,
    buffers: Vec<tch::Tensor>,
    pool: Arc<PinnedPool>,
}

impl Drop for HostBatch {
    fn drop(&mut self) {
        self.inputs.clear();
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        let keep = self.pool.keep.load(Ordering::Relaxed);
        for b in self.buffers.drain(..) {
            if free.len() < keep {
                free.push(b);
            }
        }
    }
}

impl PinnedPool {
    /// A pool for a CUDA device; `None` on the CPU (nothing to pin).
    pub fn for_device(device: Device) -> Option<Arc<PinnedPool>> {
        matches!(device, Device::Cuda(_)).then(|| {
            Arc::new(PinnedPool {
                device,
                free: Mutex::new(Vec::new()),
                keep: AtomicUsize::new(POOL_KEEP),
            })
        })
    }

    /// Keeps enough buffers for `instances` threads of the device running at once (a
    /// device's versions share the pool: the largest count wins).
    pub fn keep_for_instances(&self, instances: usize) {
        self.keep
            .fetch_max(POOL_KEEP * instances.max(1), Ordering::Relaxed);
    }

    /// Writes every input of `jobs` (padding and shape buckets as [`to_device`] does) into
    /// pinned buffers.
    pub fn stage(
        self: &Arc<Self>,
        jobs: &[Vec<Tensor<'static>>],
        config: &ModelConfig,
    ) -> Result<HostBatch, TchError> {
        let mut batch = HostBatch {
            inputs: Vec::with_capacity(config.inputs.len()),
            buffers: Vec::with_capacity(config.inputs.len()),
            pool: self.clone(),
        };
        for i in 0..config.inputs.len() {
            let pad = config.pad.as_ref().map(|p| p[i]);
            let (shape, per_job) = plan(jobs, i, pad, config);
            let total = shape[0] as usize * per_job;
            let buffer = self.take(total)?;
            let kind = crate::loading::kind_of(jobs[0][i].dtype);
            batch
                .inputs
                .push(write_batch(&buffer, jobs, i, pad, &shape, per_job, kind)?);
            batch.buffers.push(buffer);
        }
        Ok(batch)
    }

    /// A free buffer of at least `bytes`, or a new one (with headroom, so a slightly larger
    /// batch does not pin again: pinning is slow).
    fn take(&self, bytes: usize) -> Result<tch::Tensor, TchError> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = free.iter().position(|t| t.numel() >= bytes.max(1)) {
            return Ok(free.swap_remove(at));
        }
        drop(free);
        pinned(bytes, self.device)
    }
}

/// A new pinned buffer for at least `bytes`, with headroom so that a slightly larger batch
/// does not pin again: pinning is slow.
fn pinned(bytes: usize, device: Device) -> Result<tch::Tensor, TchError> {
    let size = (bytes.max(1) + bytes / 4) as i64;
    tch::Tensor::f_zeros([size], (Kind::Uint8, Device::Cpu))?.f_pin_memory(device)
}

/// Writes input `i` of every job into `buffer` and returns it viewed as the batch tensor
/// (`kind`, `shape`). The caller holds `buffer` alone: nothing else reads or writes it until
/// its copy to the device has finished.
fn write_batch(
    buffer: &tch::Tensor,
    jobs: &[Vec<Tensor<'static>>],
    i: usize,
    pad: Option<i64>,
    shape: &[i64],
    per_job: usize,
    kind: Kind,
) -> Result<tch::Tensor, TchError> {
    let total = shape[0] as usize * per_job;
    assert!(
        buffer.numel() >= total,
        "pinned buffer too small: this is a bug"
    );
    // SAFETY: `buffer` is a contiguous u8 tensor of at least `total` bytes (checked above)
    // that only the caller holds; nothing else reads or writes it while this slice lives.
    let buf = unsafe { std::slice::from_raw_parts_mut(buffer.data_ptr() as *mut u8, total) };
    fill(buf, jobs, i, pad, shape, per_job);
    buffer
        .f_narrow(0, 0, total as i64)?
        .f_view_dtype(kind)?
        .f_view(shape)
}
