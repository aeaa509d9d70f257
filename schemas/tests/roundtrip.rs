//! Property tests of the wire types: whatever a writer encodes, a reader decodes to the same
//! value (and encodes again to the same bytes), and no sequence of bytes makes a decoder
//! panic or answer with an error code other than the documented ones.
//!
//! The strategies build values the way producers, workers and the dispatcher do: valid ids
//! and names, tensors whose data fits their shape, inputs inline or by reference. The
//! "never panics" properties feed both random bytes and valid encodings with random edits,
//! since random bytes alone rarely get past the first MessagePack marker.
//!
//! The fuzz targets in fuzz/ look for the same failures with coverage guidance for much
//! longer (docs/fuzzing.md); these run in `make test` and take a few seconds.

use std::collections::BTreeMap;

use bytes::Bytes;
use jetinfer_schemas::inputs_ref::{load_inputs, store_inputs};
use jetinfer_schemas::worker::{
    Heartbeat, InputSpec, ModelInfo, RunJob, RunOutcome, RunReply, RunRequest,
};
use jetinfer_schemas::{
    decode_job, encode, CachedOutputs, DType, ErrorBody, ErrorCode, InputsRef, Job, JobResult,
    Limits, Priority, Status, Tensor, Timings,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

const DTYPES: [DType; 10] = [
    DType::F32,
    DType::F16,
    DType::Bf16,
    DType::F64,
    DType::I64,
    DType::I32,
    DType::I16,
    DType::I8,
    DType::U8,
    DType::Bool,
];

fn dtype() -> impl Strategy<Value = DType> {
    proptest::sample::select(&DTYPES[..])
}

/// A tensor whose data length fits its shape: 0..=3 dims of 0..=4 elements each, so a
/// tensor holds at most 64 elements and zero-size and scalar tensors both occur.
fn tensor() -> impl Strategy<Value = Tensor<'static>> {
    (dtype(), vec(0i64..=4, 0..=3)).prop_flat_map(|(dtype, shape)| {
        let len = shape.iter().product::<i64>() as usize * dtype.size();
        vec(any::<u8>(), len).prop_map(move |data| Tensor::owned(dtype, shape.clone(), data))
    })
}

/// Any tensor the decoder may meet: shape and data unrelated, negative dims included.
fn loose_tensor() -> impl Strategy<Value = Tensor<'static>> {
    (dtype(), vec(any::<i64>(), 0..=10), vec(any::<u8>(), 0..64))
        .prop_map(|(dtype, shape, data)| Tensor::owned(dtype, shape, data))
}

fn job_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,128}"
}

fn model_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_-]{1,64}"
}

fn version() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

/// Text of any Unicode, as meta keys and values and messages may hold.
fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

fn meta() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(text(), text(), 0..8)
}

/// A valid job with inline inputs and any of its optional fields.
fn inline_job() -> impl Strategy<Value = Job<'static>> {
    (
        job_id(),
        model_name(),
        option::of(version()),
        vec(tensor(), 1..=4),
        option::of(any::<u64>()),
        option::of(any::<bool>()),
        option::of(meta()),
    )
        .prop_map(|(id, model, version, inputs, deadline_ms, cache, meta)| {
            let mut job = Job::new(id, model, inputs);
            job.version = version.map(Into::into);
            job.deadline_ms = deadline_ms;
            job.cache = cache;
            job.meta = meta;
            job
        })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(vec![
        ErrorCode::BadPayload,
        ErrorCode::InvalidInput,
        ErrorCode::UnknownModel,
        ErrorCode::Expired,
        ErrorCode::Overloaded,
        ErrorCode::ResourceExhausted,
        ErrorCode::Poison,
        ErrorCode::Internal,
    ])
}

/// Finite milliseconds: NaN would make `==` fail although its bits round-trip.
fn millis() -> impl Strategy<Value = f64> {
    -1e12f64..1e12
}

fn timings() -> impl Strategy<Value = Timings> {
    (millis(), any::<u32>(), millis(), millis()).prop_map(
        |(queued_ms, batch_size, compute_ms, total_ms)| Timings {
            queued_ms,
            batch_size,
            compute_ms,
            total_ms,
        },
    )
}

/// A result of any status, every field set to something a writer could write.
fn job_result() -> impl Strategy<Value = JobResult<'static>> {
    (
        (
            job_id(),
            model_name(),
            proptest::sample::select(vec![Status::Ok, Status::Error, Status::Expired]),
        ),
        (
            ".{0,64}",
            vec(tensor(), 0..=3),
            option::of((error_code(), text())),
        ),
        (meta(), text(), "[0-9a-f]{64}|", "[0-9a-f]{32}|"),
        (any::<bool>(), any::<u32>(), timings(), any::<u64>()),
    )
        .prop_map(
            |(
                (id, model, status),
                (version, outputs, error),
                (meta, worker, inputs_digest, trace_id),
                (cached, attempts, timings, completed_at_ms),
            )| {
                let mut r = JobResult::ok(id, model, version, outputs);
                r.status = status;
                r.error = error.map(|(code, message)| ErrorBody { code, message });
                r.meta = meta;
                r.worker = worker;
                r.inputs_digest = inputs_digest;
                r.trace_id = trace_id;
                r.cached = cached;
                r.attempts = attempts;
                r.timings = timings;
                r.completed_at_ms = completed_at_ms;
                r
            },
        )
}

/// Unsigned integers at either side of each boundary between MessagePack's integer forms
/// (fixint, 8, 16, 32, 64 bits).
const UINT_EDGES: [u64; 10] = [
    0,
    127,
    128,
    255,
    256,
    65_535,
    65_536,
    u32::MAX as u64,
    u32::MAX as u64 + 1,
    u64::MAX,
];

/// Signed integers at either side of each boundary between the forms `write_sint` picks
/// (negative fixint, 8, 16, 32, 64 bits; the unsigned forms from 0 up).
const SINT_EDGES: [i64; 20] = [
    i64::MIN,
    i32::MIN as i64 - 1,
    i32::MIN as i64,
    -32_769,
    -32_768,
    -129,
    -128,
    -33,
    -32,
    -1,
    0,
    127,
    128,
    255,
    256,
    65_535,
    65_536,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MAX,
];

/// String, bin, array and map lengths at either side of their forms' boundaries.
const LEN_EDGES: [usize; 9] = [0, 15, 16, 31, 32, 255, 256, 65_535, 65_536];

fn u64_on_edges() -> impl Strategy<Value = u64> {
    prop_oneof![proptest::sample::select(&UINT_EDGES[..]), any::<u64>()]
}

fn u32_on_edges() -> impl Strategy<Value = u32> {
    let edges: Vec<u32> = UINT_EDGES
        .iter()
        .filter_map(|&v| u32::try_from(v).ok())
        .collect();
    prop_oneof![proptest::sample::select(edges), any::<u32>()]
}

/// Any f64 but NaN (which `==` would refuse although its bits round-trip): zeros of both
/// signs, subnormals, infinities, and milliseconds as timings hold them.
fn f64_on_edges() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{INFINITE, NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        Just(0.0),
        millis(),
        POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE,
    ]
}

/// Text as [`text`] makes it, or a string whose length sits on a boundary of the str forms.
fn text_on_edges() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        proptest::sample::select(&LEN_EDGES[..]).prop_map(|n| "x".repeat(n)),
    ]
}

/// A tensor as a writer may be handed one: dims of any sign and size (up to 17 of them, so
/// past the fixarray form), data of a boundary length or short, unrelated to the shape.
fn tensor_on_edges() -> impl Strategy<Value = Tensor<'static>> {
    let dim = prop_oneof![
        proptest::sample::select(&SINT_EDGES[..]),
        any::<i64>(),
        -1i64..=4
    ];
    let len = prop_oneof![proptest::sample::select(&LEN_EDGES[..]), 0..64usize];
    (dtype(), vec(dim, 0..=17), len, any::<u8>())
        .prop_map(|(dtype, shape, len, byte)| Tensor::owned(dtype, shape, vec![byte; len]))
}

/// A [`job_result`] whose lengths, integers and floats sit on the boundaries between
/// MessagePack's forms, where a hand-written writer is most likely to differ from `rmp`.
fn job_result_on_edges() -> impl Strategy<Value = JobResult<'static>> {
    (
        job_result(),
        (
            text_on_edges(),
            text_on_edges(),
            option::of((error_code(), text_on_edges())),
        ),
        vec(tensor_on_edges(), 0..=3),
        btree_map(text(), text_on_edges(), 0..=17),
        (u32_on_edges(), u32_on_edges(), u64_on_edges()),
        (f64_on_edges(), f64_on_edges(), f64_on_edges()),
    )
        .prop_map(
            |(
                mut r,
                (version, worker, error),
                outputs,
                meta,
                (attempts, batch_size, completed_at_ms),
                (queued_ms, compute_ms, total_ms),
            )| {
                r.version = version;
                r.worker = worker;
                r.error = error.map(|(code, message)| ErrorBody { code, message });
                r.outputs = outputs;
                r.meta = meta;
                r.attempts = attempts;
                r.completed_at_ms = completed_at_ms;
                r.timings = Timings {
                    queued_ms,
                    batch_size,
                    compute_ms,
                    total_ms,
                };
                r
            },
        )
}

fn priority() -> impl Strategy<Value = Priority> {
    proptest::sample::select(Priority::ALL.to_vec())
}

/// One job of a run request, its payload a real job's encoding.
fn run_job() -> impl Strategy<Value = RunJob> {
    (
        inline_job(),
        priority(),
        any::<u64>(),
        option::of(any::<u64>()),
        (any::<u64>(), any::<u32>(), any::<bool>(), any::<bool>()),
        option::of("00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]"),
        option::of(text()),
    )
        .prop_map(
            |(
                job,
                priority,
                deadline_ms,
                remaining_ms,
                (published_ms, attempt, suspect, report_existing),
                traceparent,
                tracestate,
            )| {
                RunJob {
                    payload: Bytes::from(encode(&job)),
                    priority,
                    deadline_ms,
                    remaining_ms,
                    published_ms,
                    attempt,
                    suspect,
                    report_existing,
                    traceparent,
                    tracestate,
                }
            },
        )
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    let model = (
        model_name(),
        version(),
        any::<u32>(),
        vec((dtype(), vec(-1i64..=512, 0..=4)), 0..=3),
        option::of(0f64..1e6),
    )
        .prop_map(
            |(name, version, max_batch_size, inputs, batch_ms)| ModelInfo {
                name,
                version,
                max_batch_size,
                inputs: inputs
                    .into_iter()
                    .map(|(dtype, shape)| InputSpec { dtype, shape })
                    .collect(),
                batch_ms,
            },
        );
    (
        "[A-Za-z0-9_-]{1,32}",
        vec(model, 0..=3),
        (any::<u32>(), any::<u32>()),
        vec("cpu|cuda:[0-7]", 0..=2),
        option::of(any::<u64>()),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(
                worker,
                models,
                (slots, free_slots),
                devices,
                gpu_memory_bytes,
                (accepting, sent_at_ms),
            )| {
                Heartbeat {
                    v: 1,
                    worker,
                    models,
                    slots,
                    free_slots,
                    devices,
                    gpu_memory_bytes,
                    accepting,
                    sent_at_ms,
                    load_errors: Vec::new(),
                    load: None,
                }
            },
        )
}

/// Random edits of a valid encoding: overwrite, insert and delete bytes.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
    ];
    vec(edit, 1..=4)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len();
        match *e {
            Edit::Set(i, b) if n > 0 => bytes[i % n] = b,
            Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Edit::Remove(i) if n > 0 => {
                bytes.remove(i % n);
            }
            _ => {}
        }
    }
    bytes
}

/// What the dispatcher's intake and the worker do with a job message: decode, then
/// validate. Panics (failing the property) on an undocumented error code.
fn intake<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Job<'a>, ErrorCode> {
    let job = decode_job(bytes, limits).map_err(|e| {
        assert_eq!(e.code, ErrorCode::BadPayload, "decode_job: {e}");
        e.code
    })?;
    job.validate(limits).map_err(|e| {
        assert!(
            matches!(e.code, ErrorCode::BadPayload | ErrorCode::InvalidInput),
            "validate: {e}"
        );
        e.code
    })?;
    Ok(job)
}

/// Every decoder a process runs on bytes from the network or from Redis.
fn decode_everything(bytes: &[u8]) {
    let limits = Limits::default();
    if let Ok(job) = intake(bytes, &limits) {
        let _ = job.inputs_digest();
    }
    if let Ok(t) = rmp_serde::from_slice::<Tensor<'_>>(bytes) {
        if t.validate(&limits).is_ok() {
            assert_eq!(t.to_f32_vec().len() as u64, t.element_count().unwrap());
        }
    }
    if let Ok(r) = rmp_serde::from_slice::<JobResult<'_>>(bytes) {
        let _ = r.error_code();
    }
    let _ = rmp_serde::from_slice::<CachedOutputs<'_>>(bytes);
    let _ = rmp_serde::from_slice::<RunRequest>(bytes);
    let _ = rmp_serde::from_slice::<RunReply>(bytes);
    let _ = rmp_serde::from_slice::<Heartbeat>(bytes);
    // A digest no inputs have: whatever the value, it is never taken as the inputs.
    let reference = InputsRef {
        bytes: bytes.len() as u64,
        digest: "0".repeat(64),
        store: 0,
    };
    assert_eq!(
        load_inputs(bytes, &reference).unwrap_err().code,
        ErrorCode::BadPayload
    );
}

/// `decode_job` (the hand-written reader for the usual shape, else `rmp_serde`) against
/// `rmp_serde` alone: the same job, or both an error.
fn assert_decoded_as_by_serde(bytes: &[u8]) {
    let ours = decode_job(bytes, &Limits::default()).ok();
    let serde = rmp_serde::from_slice::<Job<'_>>(bytes)
        .ok()
        .filter(|j| j.v == jetinfer_schemas::SCHEMA_VERSION);
    assert_eq!(ours, serde, "bytes {bytes:02x?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The run-request reader agrees with `rmp_serde` on every request and on edits of it,
    /// and reads every request as written.
    #[test]
    fn the_run_request_reader_decodes_as_rmp_serde(
        jobs in vec(run_job(), 0..4),
        edits in edits(),
    ) {
        let request = RunRequest { v: 1, jobs };
        let bytes = Bytes::from(encode(&request));
        prop_assert_eq!(&request.encode_sized(0)[..], &bytes[..], "the writer and rmp_serde differ");
        prop_assert_eq!(RunRequest::decode(&bytes).unwrap(), request);
        let edited = Bytes::from(apply(bytes.to_vec(), &edits));
        prop_assert_eq!(
            RunRequest::decode(&edited).ok(),
            rmp_serde::from_slice::<RunRequest>(&edited).ok()
        );
    }

    /// The result writer writes `rmp_serde`'s bytes for results of every status, with and
    /// without their optional fields, and at every boundary of MessagePack's forms; and
    /// `rmp_serde` reads them back as written.
    #[test]
    fn the_result_writer_writes_as_rmp_serde(
        r in prop_oneof![job_result(), job_result_on_edges()],
        capacity in 0..1024usize,
    ) {
        let bytes = r.encode_sized(capacity);
        prop_assert!(
            bytes == jetinfer_schemas::encode_sized(&r, capacity),
            "the writer and rmp_serde differ on {:?}", r
        );
        prop_assert_eq!(rmp_serde::from_slice::<JobResult<'_>>(&bytes).unwrap(), r);
    }

    /// The job reader agrees with `rmp_serde` on every valid job and on edits of it.
    #[test]
    fn the_job_reader_decodes_as_rmp_serde(job in inline_job(), edits in edits()) {
        let bytes = encode(&job);
        assert_decoded_as_by_serde(&bytes);
        assert_decoded_as_by_serde(&apply(bytes, &edits));
    }


    #[test]
    fn inline_jobs_round_trip(job in inline_job()) {
        let limits = Limits::default();
        let bytes = encode(&job);
        let back = intake(&bytes, &limits).expect("a valid job passes intake");
        prop_assert_eq!(&back, &job);
        prop_assert_eq!(&encode(&back), &bytes, "decoding and encoding again gives the same bytes");
        prop_assert_eq!(back.inputs_digest(), job.inputs_digest());
    }

    #[test]
    fn jobs_by_reference_round_trip(job in inline_job()) {
        let limits = Limits::default();
        let (value, reference) = store_inputs(&job.inputs);
        let mut by_ref = Job { inputs: Vec::new(), inputs_ref: Some(reference), ..job.clone() };
        let bytes = encode(&by_ref);
        let back = intake(&bytes, &limits).expect("a valid job by reference passes intake");
        prop_assert_eq!(&back, &by_ref);
        prop_assert_eq!(back.inputs_digest(), job.inputs_digest(), "same digest either way");
        by_ref.attach_inputs(&value, &limits).expect("the stored inputs load");
        prop_assert_eq!(&by_ref.inputs, &job.inputs);
        prop_assert_eq!(by_ref.inputs_ref, None);
    }

    #[test]
    fn stored_inputs_with_edits_never_load_as_other_inputs(
        inputs in vec(tensor(), 1..=4),
        edits in edits(),
    ) {
        let (value, reference) = store_inputs(&inputs);
        let edited = apply(value, &edits);
        // Lengths may differ after the edits; give the reference the edited length so the
        // decoder and the digest check are what refuse it.
        let reference = InputsRef { bytes: edited.len() as u64, ..reference };
        match load_inputs(&edited, &reference) {
            Ok(back) => prop_assert_eq!(back, inputs),
            Err(e) => prop_assert_eq!(e.code, ErrorCode::BadPayload),
        }
    }

    #[test]
    fn every_strict_prefix_of_a_job_is_bad_payload(job in inline_job(), cut in any::<usize>()) {
        let bytes = encode(&job);
        let cut = cut % bytes.len();
        prop_assert_eq!(
            decode_job(&bytes[..cut], &Limits::default()).unwrap_err().code,
            ErrorCode::BadPayload
        );
    }

    #[test]
    fn tensors_round_trip(t in tensor()) {
        let bytes = encode(&t);
        let back: Tensor<'_> = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &t);
        prop_assert!(back.validate(&Limits::default()).is_ok());
        prop_assert_eq!(&encode(&back), &bytes);
    }

    #[test]
    fn any_decoded_tensor_validates_or_is_invalid_input(t in loose_tensor()) {
        let bytes = encode(&t);
        let back: Tensor<'_> = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &t);
        if let Err(e) = back.validate(&Limits::default()) {
            prop_assert_eq!(e.code, ErrorCode::InvalidInput);
        }
    }

    #[test]
    fn results_round_trip(r in job_result()) {
        let bytes = encode(&r);
        let back: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &r);
        prop_assert_eq!(&encode(&back), &bytes);
        let cached = CachedOutputs { v: 1, outputs: r.outputs.clone() };
        let cached_bytes = encode(&cached);
        let back: CachedOutputs<'_> = rmp_serde::from_slice(&cached_bytes).unwrap();
        prop_assert_eq!(back, cached);
    }

    #[test]
    fn run_requests_and_replies_round_trip(
        jobs in vec(run_job(), 0..=4),
        outcomes in vec(proptest::sample::select(vec![RunOutcome::Stored, RunOutcome::Retry, RunOutcome::Failed, RunOutcome::Existing]), 0..=8),
    ) {
        let request = RunRequest { v: 1, jobs };
        let bytes = encode(&request);
        let back: RunRequest = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &request);
        prop_assert_eq!(&encode(&back), &bytes);
        for j in &back.jobs {
            // The payload travels untouched: the worker reads the producer's job from it.
            intake(&j.payload, &Limits::default()).expect("the bundled job passes intake");
        }
        let reply = RunReply { v: 1, outcomes };
        let back: RunReply = rmp_serde::from_slice(&encode(&reply)).unwrap();
        prop_assert_eq!(back, reply);
    }

    #[test]
    fn heartbeats_round_trip(hb in heartbeat()) {
        let back: Heartbeat = rmp_serde::from_slice(&encode(&hb)).unwrap();
        prop_assert_eq!(back, hb);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_edited_messages(
        which in 0..4usize,
        job in inline_job(),
        r in job_result(),
        rj in run_job(),
        edits in edits(),
    ) {
        let valid = match which {
            0 => encode(&job),
            1 => encode(&job.inputs[0]),
            2 => encode(&r),
            _ => encode(&RunRequest { v: 1, jobs: vec![rj] }),
        };
        decode_everything(&apply(valid, &edits));
    }
}
