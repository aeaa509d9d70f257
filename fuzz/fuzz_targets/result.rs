//! A result as read from Redis by clients (and the dispatcher's conflict check), and a
//! cache entry as read by workers.

#![no_main]

use jetinfer_schemas::{encode, trace_id_of, CachedOutputs, Job, JobResult, Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = rmp_serde::from_slice::<JobResult<'_>>(data) {
        let again = encode(&r);
        let back: JobResult<'_> = rmp_serde::from_slice(&again).expect("an encoded result decodes");
        // Bytes, not values: NaN timings are not equal to themselves.
        assert_eq!(encode(&back), again);
        let _ = r.error_code();
        let _ = trace_id_of(&r.trace_id);
        let job = Job::new(
            r.id.as_str(),
            r.model.as_str(),
            vec![Tensor::from_f32(vec![1], &[0.5])],
        );
        let _ = r.answers(&job);
        let mut by_ref = job.clone();
        by_ref.version = Some(r.version.as_str().into());
        let _ = r.answers(&by_ref);
    }
    if let Ok(c) = rmp_serde::from_slice::<CachedOutputs<'_>>(data) {
        let again = encode(&c);
        let back: CachedOutputs<'_> =
            rmp_serde::from_slice(&again).expect("an encoded entry decodes");
        assert_eq!(back, c);
    }
});
