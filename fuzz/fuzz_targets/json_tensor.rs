//! The CLI's JSON input parser (`submit --input x.json`): the file's bytes through
//! `serde_json` and `tensor_from_json`, as `cli/src/commands/input.rs` reads them.

#![no_main]

use libfuzzer_sys::fuzz_target;

use jetinfer_fuzz::json::tensor_from_json;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(t) = tensor_from_json(&value) {
        let count = t
            .element_count()
            .expect("a parsed tensor has an element count");
        assert_eq!(t.data.len() as u64, count * t.dtype.size() as u64);
    }
});
