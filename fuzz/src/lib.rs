//! What the fuzz targets in `fuzz_targets/` share: the CLI's input parsers and the checks
//! every target makes on the schemas' decoders.
//!
//! The `.npy` and JSON parsers are the devkit's own source files, compiled here through
//! `#[path]` rather than by depending on `jetinfer-devkit`: the devkit pulls in async-nats,
//! redis, tokio and ~270 crates, which would make building the targets under the fuzzer's
//! instrumentation take many minutes on a small CI machine. The files use nothing of the
//! devkit but `jetinfer-schemas`, `npyz`, `serde_json` and `thiserror`; if that changes,
//! this crate stops building and `tests/tests/fuzz_smoke.rs` says so.

pub mod json;

#[path = "../../devkit/src/npy.rs"]
pub mod npy;

use jetinfer_schemas::{decode_job, encode, ErrorCode, Job, Limits};

/// Decodes a job message as the dispatcher's intake and the worker do, then checks what
/// holds for any message: decode errors are `bad_payload`; a decoded job encodes again into
/// bytes that decode to the same job; validation errors are `bad_payload` or
/// `invalid_input`. Returns the job when it is valid.
pub fn intake<'a>(bytes: &'a [u8], limits: &Limits) -> Option<Job<'a>> {
    let job = match decode_job(bytes, limits) {
        Ok(job) => job,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadPayload, "decode_job: {e}");
            return None;
        }
    };
    let again = encode(&job);
    let back = decode_job(&again, limits).expect("a decoded job encodes into a decodable job");
    assert_eq!(back, job, "a decoded job survives encoding and decoding");
    // The digest names the inputs in results and the cache: it must not fail on any job.
    let _ = job.inputs_digest();
    match job.validate(limits) {
        Ok(()) => Some(job),
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::BadPayload | ErrorCode::InvalidInput),
                "validate: {e}"
            );
            None
        }
    }
}

/// Encodes `value`, decodes the bytes and encodes again: the two encodings must be equal.
/// (Comparing bytes rather than values keeps NaN timings from failing the check.)
pub fn reencodes<T>(value: &T)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let first = encode(value);
    let back: T = rmp_serde::from_slice(&first).expect("an encoded value decodes");
    assert_eq!(
        encode(&back),
        first,
        "encoding is stable across a round trip"
    );
}
