//! A job message as published: `decode_job` then `Job::validate`, as the dispatcher's
//! intake and the worker run them on every message (see `jetinfer_fuzz::intake`).

#![no_main]

use jetinfer_schemas::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Some(job) = jetinfer_fuzz::intake(data, &limits) {
        // A valid job's inputs are either inline and well-formed or a well-formed reference.
        assert!(job.inputs.is_empty() == job.inputs_ref.is_some());
        for t in &job.inputs {
            assert_eq!(
                t.data.len() as u64,
                t.element_count().unwrap() * t.dtype.size() as u64
            );
        }
    }
});
