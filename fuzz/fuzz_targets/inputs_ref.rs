//! Inputs sent by reference: the value a worker reads from Redis, loaded against the job's
//! reference (`load_inputs`, `Job::attach_inputs`). Whatever the value, the worker gets
//! either exactly the referenced inputs or `bad_payload` / `invalid_input`.

#![no_main]

use jetinfer_schemas::inputs_ref::load_inputs;
use jetinfer_schemas::tensor::inputs_digest;
use jetinfer_schemas::{ErrorCode, InputsRef, Job, Limits, Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &[u8]| {
    let limits = Limits::default();
    // A digest no inputs have: the value is never taken for the inputs.
    let foreign = InputsRef {
        bytes: value.len() as u64,
        digest: "0".repeat(64),
        store: 0,
    };
    assert_eq!(
        load_inputs(value, &foreign).unwrap_err().code,
        ErrorCode::BadPayload
    );
    let Ok(tensors) = rmp_serde::from_slice::<Vec<Tensor<'_>>>(value) else {
        return;
    };
    // The reference a producer would have made for these inputs.
    let reference = InputsRef {
        bytes: value.len() as u64,
        digest: inputs_digest(&tensors),
        store: 0,
    };
    assert_eq!(load_inputs(value, &reference).unwrap(), tensors);
    if let Some(short) = value.len().checked_sub(1) {
        assert_eq!(
            load_inputs(&value[..short], &reference).unwrap_err().code,
            ErrorCode::BadPayload
        );
    }
    let mut job = Job::new("j", "m", Vec::new());
    job.inputs_ref = Some(reference);
    match job.attach_inputs(value, &limits) {
        Ok(()) => {
            assert_eq!(job.inputs, tensors);
            job.validate(&limits)
                .expect("attached inputs passed the same checks");
        }
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidInput, "{e}"),
    }
});
