//! A CUDA stream of its own for each instance thread of a device (see `executor.rs`).
//!
//! tch and torch-sys expose no stream API, so this calls the two libtorch functions that
//! PyTorch's own `torch.cuda.Stream` path uses, straight from `libc10_cuda.so` (loaded at
//! run time, no link dependency: a CPU-only libtorch simply has none, and every thread stays
//! on the default stream):
//!
//! - `c10::cuda::getStreamFromPool(bool isHighPriority, DeviceIndex)` — one of the
//!   device's pooled streams (created non-blocking, so they do not synchronise with the
//!   legacy default stream; consecutive calls hand out different streams);
//! - `c10::cuda::setCurrentCUDAStream(CUDAStream)` — makes it the calling thread's current
//!   stream for that device: every kernel, copy and allocation the thread issues there from
//!   then on goes to it.
//!
//! `CUDAStream` is a trivially copyable value of 16 bytes (`c10::Stream`: device type and
//! index as `int8_t`, then an `int64_t` id), so the x86-64 System V ABI passes and returns
//! it in two integer registers, exactly like the `#[repr(C)]` struct below. The mangled
//! names and this layout are those of the torch the worker is built against (2.11; checked
//! with `nm -D libc10_cuda.so` and `c10/cuda/CUDAStream.h`). A libtorch without these
//! symbols leaves every thread on the default stream, with a warning.

use std::sync::OnceLock;

use libloading::Library;

/// `c10::cuda::CUDAStream` (a `c10::Stream`), by value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct CudaStream {
    device_type: i8,
    device_index: i8,
    id: i64,
}

type GetFromPool = unsafe extern "C" fn(bool, i8) -> CudaStream;
type SetCurrent = unsafe extern "C" fn(CudaStream);

struct Api {
    get_from_pool: GetFromPool,
    set_current: SetCurrent,
    _lib: Library,
}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: libc10_cuda is already loaded by libtorch_cuda when the worker runs on a
        // GPU (dlopen returns the same handle); its initialisers have no preconditions.
        let lib = unsafe { Library::new("libc10_cuda.so") }.ok()?;
        // SAFETY: the symbols have the signatures above (see the module comment).
        let (get_from_pool, set_current) = unsafe {
            (
                *lib.get::<GetFromPool>(b"_ZN3c104cuda17getStreamFromPoolEba\0")
                    .ok()?,
                *lib.get::<SetCurrent>(b"_ZN3c104cuda20setCurrentCUDAStreamENS0_10CUDAStreamE\0")
                    .ok()?,
            )
        };
        Some(Api {
            get_from_pool,
            set_current,
            _lib: lib,
        })
    })
    .as_ref()
}

/// Gives the calling thread a pooled stream of CUDA device `ordinal` as its current stream;
/// returns the stream's id, or `None` when libtorch offers no stream API (the thread then
/// stays on the default stream).
pub(crate) fn use_own_stream(ordinal: usize) -> Option<i64> {
    let api = api()?;
    let index = i8::try_from(ordinal).ok()?;
    // SAFETY: called on a thread of a process whose libtorch has initialised CUDA (the
    // device's models are loaded); both functions take and return plain values.
    let stream = unsafe { (api.get_from_pool)(false, index) };
    // `c10::DeviceType::CUDA` is 1.
    if stream.device_type != 1 || stream.device_index != index {
        // Not the layout we expect: leave the thread's stream alone.
        return None;
    }
    // SAFETY: as above; the stream came from the pool of this device.
    unsafe { (api.set_current)(stream) };
    Some(stream.id)
}
