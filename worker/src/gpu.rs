//! GPU memory of the CUDA devices this worker uses, from the CUDA driver API.
//!
//! tch exposes no memory statistics, so this loads `libcuda.so.1` at run time (no link
//! dependency: a CPU-only machine simply has none) and asks `cuMemGetInfo` on each
//! device's primary context — the context libtorch itself uses, so retaining it costs
//! nothing once a model is loaded there. The figure is the device's memory in use by all
//! processes (the driver has no per-process figure without NVML); it feeds the heartbeat's
//! `gpu_memory_bytes` and the `jetinfer_gpu_memory_*` gauges.

use std::ffi::c_int;
use std::sync::OnceLock;

use libloading::{Library, Symbol};

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut std::ffi::c_void;

struct Driver {
    lib: Library,
}

fn driver() -> Option<&'static Driver> {
    static DRIVER: OnceLock<Option<Driver>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            // SAFETY: loading the CUDA driver runs its initialisers, which have no
            // preconditions; libtorch loads the same library in this process.
            let lib = unsafe { Library::new("libcuda.so.1") }.ok()?;
            let driver = Driver { lib };
            // SAFETY: cuInit(unsigned int flags) with flags 0 as documented.
            let ok = unsafe {
                let init: Symbol<unsafe extern "C" fn(u32) -> CuResult> =
                    driver.lib.get(b"cuInit\0").ok()?;
                init(0) == 0
            };
            ok.then_some(driver)
        })
        .as_ref()
}

/// `(used, total)` bytes of CUDA device `ordinal`, or `None` without a driver or device.
pub(crate) fn memory_info(ordinal: i32) -> Option<(u64, u64)> {
    let d = driver()?;
    // SAFETY: each symbol is called with the signature of the CUDA driver API
    // (cuda.h); out-pointers point at live locals; the primary context retained here is
    // pushed, used and popped on this thread, then released, so the thread's context
    // stack and the context's reference count are as before.
    unsafe {
        let device_get: Symbol<unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult> =
            d.lib.get(b"cuDeviceGet\0").ok()?;
        let retain: Symbol<unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult> =
            d.lib.get(b"cuDevicePrimaryCtxRetain\0").ok()?;
        let release: Symbol<unsafe extern "C" fn(CuDevice) -> CuResult> =
            d.lib.get(b"cuDevicePrimaryCtxRelease_v2\0").ok()?;
        let push: Symbol<unsafe extern "C" fn(CuContext) -> CuResult> =
            d.lib.get(b"cuCtxPushCurrent_v2\0").ok()?;
        let pop: Symbol<unsafe extern "C" fn(*mut CuContext) -> CuResult> =
            d.lib.get(b"cuCtxPopCurrent_v2\0").ok()?;
        let mem_get_info: Symbol<unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult> =
            d.lib.get(b"cuMemGetInfo_v2\0").ok()?;

        let mut dev: CuDevice = 0;
        if device_get(&mut dev, ordinal) != 0 {
            return None;
        }
        let mut ctx: CuContext = std::ptr::null_mut();
        if retain(&mut ctx, dev) != 0 {
            return None;
        }
        let mut answer = None;
        if push(ctx) == 0 {
            let (mut free, mut total) = (0usize, 0usize);
            if mem_get_info(&mut free, &mut total) == 0 {
                answer = Some(((total - free.min(total)) as u64, total as u64));
            }
            let mut popped: CuContext = std::ptr::null_mut();
            pop(&mut popped);
        }
        release(dev);
        answer
    }
}

/// Per device of `devices`, `(used, total)` bytes when it is a CUDA device (`cuda:N`) the
/// driver can tell about, updating the per-device gauges; `None` otherwise (CPU).
pub(crate) fn per_device(devices: &[String]) -> Vec<Option<(u64, u64)>> {
    devices
        .iter()
        .map(|name| {
            let ordinal = name.strip_prefix("cuda:").and_then(|i| i.parse().ok())?;
            let (used, total) = memory_info(ordinal)?;
            ::metrics::gauge!(crate::telemetry::GPU_USED, "device" => name.clone())
                .set(used as f64);
            ::metrics::gauge!(crate::telemetry::GPU_TOTAL, "device" => name.clone())
                .set(total as f64);
            Some((used, total))
        })
        .collect()
}

/// Memory in use summed over the CUDA devices among `devices`, updating the per-device
/// gauges; `None` when none is a CUDA device or the driver cannot tell.
pub(crate) fn used_bytes(devices: &[String]) -> Option<u64> {
    used_sum(&per_device(devices))
}

/// Memory in use summed over the devices `per_device` could measure; `None` when none.
pub(crate) fn used_sum(memory: &[Option<(u64, u64)>]) -> Option<u64> {
    memory
        .iter()
        .flatten()
        .map(|&(used, _)| used)
        .reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_devices_have_no_gpu_memory() {
        let memory = super::per_device(&["cpu".to_string()]);
        assert_eq!(memory, vec![None]);
        assert_eq!(super::used_sum(&memory), None);
    }
}
