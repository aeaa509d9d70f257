//! docs/wire-format.md is the contract other languages are written from: its hex examples
//! and its cache-digest test vector must be exactly what this crate reads and writes.

use std::collections::BTreeMap;

use jetinfer_schemas::inputs_ref::store_inputs;
use jetinfer_schemas::tensor::inputs_digest;
use jetinfer_schemas::{encode, Job, JobResult, Keys, Limits, Status, Tensor, Timings};

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/wire-format.md"
    ))
    .expect("docs/wire-format.md")
}

/// The bytes of the first fenced block after `heading`: hex before each `#` comment.
fn hex_block(doc: &str, heading: &str) -> Vec<u8> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("heading {heading:?} in the doc"));
    let block = doc[start..]
        .split("```")
        .nth(1)
        .expect("a fenced block after the heading");
    let hex: String = block
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace())
        .collect();
    hex::decode(hex).expect("hex in the doc block")
}

#[test]
fn the_documented_job_decodes_and_encodes_to_the_same_bytes() {
    let bytes = hex_block(&doc(), "### 9.1 Job");
    let job = jetinfer_schemas::decode_job(&bytes, &Limits::default()).unwrap();
    assert_eq!(
        job,
        Job::new("j1", "mlp", vec![Tensor::from_f32(vec![2], &[1.0, 2.0])])
    );
    assert_eq!(encode(&job), bytes);
}

#[test]
fn the_documented_error_result_decodes() {
    let bytes = hex_block(&doc(), "### 9.2 Error result");
    let r: JobResult<'_> = rmp_serde::from_slice(&bytes).unwrap();
    assert_eq!(r.status, Status::Error);
    assert!(r.error.is_some());
}

#[test]
fn the_documented_ok_result_is_what_a_worker_writes() {
    let bytes = hex_block(&doc(), "### 9.3 Ok result");
    let mut r = JobResult::ok(
        "j1",
        "mlp",
        "1",
        vec![Tensor::from_f32(vec![4], &[0.5, -1.0, 2.0, 0.0])],
    );
    r.worker = "w-1".into();
    r.meta = BTreeMap::new();
    r.timings = Timings {
        queued_ms: 1.5,
        batch_size: 4,
        compute_ms: 0.25,
        total_ms: 2.0,
    };
    r.completed_at_ms = 1_700_000_000_000;
    assert_eq!(hex::encode(encode(&r)), hex::encode(&bytes));
}

#[test]
fn the_documented_cache_digest_test_vector() {
    let doc = doc();
    let digest = inputs_digest(&[Tensor::from_f32(vec![2], &[1.0, 2.0])]);
    assert!(
        doc.contains(&format!("digest:       {digest}")),
        "doc's digest differs from {digest}"
    );
    assert!(doc.contains(&Keys::default().cache("mlp", "1", &digest)));
}

#[test]
fn the_documented_job_with_inputs_by_reference_and_its_stored_value() {
    let doc = doc();
    let (value, reference) = store_inputs(&[Tensor::from_f32(vec![2], &[1.0, 2.0])]);
    let bytes = hex_block(&doc, "### 9.4 Job with inputs by reference");
    let job = jetinfer_schemas::decode_job(&bytes, &Limits::default()).unwrap();
    job.validate(&Limits::default()).unwrap();
    let mut expected = Job::new("j2", "mlp", Vec::new());
    expected.inputs_ref = Some(reference);
    assert_eq!(job, expected);
    assert_eq!(encode(&job), bytes);
    let stored = hex_block(&doc, "### 9.5 Stored inputs");
    assert_eq!(hex::encode(&stored), hex::encode(&value));
    assert!(doc.contains(&format!("SET {} <value>", Keys::default().input("j2"))));
}

#[test]
fn the_documented_reference_to_input_store_one() {
    let doc = doc();
    let (_, mut reference) = store_inputs(&[Tensor::from_f32(vec![2], &[1.0, 2.0])]);
    reference.store = 1;
    let bytes = hex_block(&doc, "### 9.6 Job with inputs in input store 1");
    let job = jetinfer_schemas::decode_job(&bytes, &Limits::default()).unwrap();
    let mut expected = Job::new("j2", "mlp", Vec::new());
    expected.inputs_ref = Some(reference);
    assert_eq!(job, expected);
    assert_eq!(encode(&job), bytes);
    assert_eq!(bytes.len(), 127);
    assert!(doc.contains("`0xe40c292c`"));
}
