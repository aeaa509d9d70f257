//! The CLI's `.npy` input parser (`devkit/src/npy.rs`, run by `submit --input x.npy`):
//! any bytes give a tensor or a typed error, and a tensor it reads writes back to a file
//! that reads as the same tensor.

#![no_main]

use libfuzzer_sys::fuzz_target;

use jetinfer_fuzz::npy;

fuzz_target!(|data: &[u8]| {
    let Ok(t) = npy::parse(data) else {
        return;
    };
    let count = t.element_count().expect("a parsed tensor has an element count");
    assert_eq!(t.data.len() as u64, count * t.dtype.size() as u64);
    let written = npy::to_bytes(&t).expect("a tensor read from .npy writes back");
    assert_eq!(npy::parse(&written).expect("what it wrote reads back"), t);
});
