//! Bad input (cases 18–25 of reliability-cases.md): each gets its error code, and valid
//! jobs published among them still get the right answer.

use std::time::Duration;

use bytes::Bytes;
use jetinfer_client::Client;
use jetinfer_schemas::names::job_subject;
use jetinfer_schemas::{encode, DType, ErrorCode, Job, Priority, Status, Tensor};
use jetinfer_tests::{assert_all_correct, collect_results, golden, publish_samples, run_id, stack};
use serde::Serialize;

/// A job message as some other producer might write it, field types of our choosing.
#[derive(Serialize)]
struct Loose<I: Serialize> {
    v: u32,
    id: String,
    model: String,
    inputs: I,
}

struct Case {
    name: &'static str,
    /// Where the error result must appear (the job id or the Nats-Msg-Id header).
    id: String,
    subject: String,
    payload: Vec<u8>,
    code: ErrorCode,
}

fn mlp_input() -> Tensor<'static> {
    golden().samples("mlp")[0].inputs[0].clone()
}

fn job_bytes(id: &str, model: &str, inputs: Vec<Tensor<'static>>) -> Vec<u8> {
    encode(&Job::new(id.to_string(), model.to_string(), inputs))
}

fn cases(run: &str) -> Vec<Case> {
    let id = |n: &str| format!("{run}-{n}");
    let mlp = job_subject(Priority::P1, "mlp");
    let case = |name, id: String, subject: &str, payload: Vec<u8>, code| Case {
        name,
        id,
        subject: subject.to_string(),
        payload,
        code,
    };
    let good = job_bytes(&id("x"), "mlp", vec![mlp_input()]);
    let mut nested = vec![0x81, 0xa1, b'v'];
    nested.extend(std::iter::repeat_n(0x91u8, 100_000));
    nested.push(0x01);
    // {v:1, id, model:"mlp", inputs:[{dtype:"u8", shape:[1], data: bin32 header claiming 4 GB}]}
    let mut huge_bin = Vec::new();
    huge_bin.extend_from_slice(&[0x84, 0xa1, b'v', 0x01, 0xa2, b'i', b'd', 0xa1, b'q', 0xa5]);
    huge_bin.extend_from_slice(b"model");
    huge_bin.extend_from_slice(&[0xa3, b'm', b'l', b'p', 0xa6]);
    huge_bin.extend_from_slice(b"inputs");
    huge_bin.extend_from_slice(&[0x91, 0x83, 0xa5]);
    huge_bin.extend_from_slice(b"dtype");
    huge_bin.extend_from_slice(&[0xa2, b'u', b'8', 0xa5]);
    huge_bin.extend_from_slice(b"shape");
    huge_bin.extend_from_slice(&[0x91, 0x01, 0xa4]);
    huge_bin.extend_from_slice(b"data");
    huge_bin.extend_from_slice(&[0xc6, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    let mut v2 = Job::new(id("19c"), "mlp", vec![mlp_input()]);
    v2.v = 2;
    let long_id = "x".repeat(200);
    let seq = |len: i64| Tensor::from_f32(vec![len, 8], &vec![0.5; (len.max(0) * 8) as usize]);
    vec![
        // 18: not a job at all → bad_payload, answered under the Nats-Msg-Id header.
        case(
            "18 not msgpack",
            id("18a"),
            &mlp,
            b"\xc1 this is not msgpack".to_vec(),
            ErrorCode::BadPayload,
        ),
        case(
            "18 truncated",
            id("18b"),
            &mlp,
            good[..good.len() - 9].to_vec(),
            ErrorCode::BadPayload,
        ),
        case(
            "18 deep nesting",
            id("18c"),
            &mlp,
            nested,
            ErrorCode::BadPayload,
        ),
        case(
            "18 bin claims 4 GB",
            id("18d"),
            &mlp,
            huge_bin,
            ErrorCode::BadPayload,
        ),
        // 19: wrong structure.
        case(
            "19 missing inputs",
            id("19a"),
            &mlp,
            encode(&Loose {
                v: 1,
                id: id("19a"),
                model: "mlp".into(),
                inputs: (),
            }),
            ErrorCode::BadPayload,
        ),
        case(
            "19 wrong type",
            id("19b"),
            &mlp,
            encode(&Loose {
                v: 1,
                id: id("19b"),
                model: "mlp".into(),
                inputs: "tensor",
            }),
            ErrorCode::BadPayload,
        ),
        case(
            "19 schema version 2",
            id("19c"),
            &mlp,
            encode(&v2),
            ErrorCode::BadPayload,
        ),
        // 20: tensors that cannot be.
        case(
            "20 data length",
            id("20a"),
            &mlp,
            job_bytes(
                &id("20a"),
                "mlp",
                vec![Tensor::owned(DType::F32, vec![16], vec![0; 63])],
            ),
            ErrorCode::InvalidInput,
        ),
        case(
            "20 10^12 elements",
            id("20b"),
            &mlp,
            job_bytes(
                &id("20b"),
                "mlp",
                vec![Tensor::owned(
                    DType::F32,
                    vec![1_000_000, 1_000_000],
                    vec![],
                )],
            ),
            ErrorCode::InvalidInput,
        ),
        case(
            "20 negative dim",
            id("20c"),
            &mlp,
            job_bytes(
                &id("20c"),
                "mlp",
                vec![Tensor::owned(DType::F32, vec![-16], vec![])],
            ),
            ErrorCode::InvalidInput,
        ),
        case(
            "20 zero dynamic dim",
            id("20d"),
            &job_subject(Priority::P1, "seqpool"),
            job_bytes(&id("20d"), "seqpool", vec![seq(0)]),
            ErrorCode::InvalidInput,
        ),
        // 21: valid tensors the model does not take (checked by the worker).
        case(
            "21 wrong dtype",
            id("21a"),
            &mlp,
            job_bytes(
                &id("21a"),
                "mlp",
                vec![Tensor::owned(DType::I32, vec![16], vec![0; 64])],
            ),
            ErrorCode::InvalidInput,
        ),
        case(
            "21 wrong shape",
            id("21b"),
            &mlp,
            job_bytes(
                &id("21b"),
                "mlp",
                vec![Tensor::from_f32(vec![15], &[0.0; 15])],
            ),
            ErrorCode::InvalidInput,
        ),
        case(
            "21 two inputs",
            id("21c"),
            &mlp,
            job_bytes(&id("21c"), "mlp", vec![mlp_input(), mlp_input()]),
            ErrorCode::InvalidInput,
        ),
        // 22: nobody serves it.
        case(
            "22 unknown model",
            id("22a"),
            &job_subject(Priority::P1, "nosuch"),
            job_bytes(&id("22a"), "nosuch", vec![mlp_input()]),
            ErrorCode::UnknownModel,
        ),
        case(
            "22 unknown version",
            id("22b"),
            &mlp,
            {
                let mut j = Job::new(id("22b"), "mlp", vec![mlp_input()]);
                j.version = Some("9".into());
                encode(&j)
            },
            ErrorCode::UnknownModel,
        ),
        // 23: bad job ids → bad_payload under the header id; nothing under the bad id.
        case(
            "23 id with space",
            id("23a"),
            &mlp,
            job_bytes("bad id", "mlp", vec![mlp_input()]),
            ErrorCode::BadPayload,
        ),
        case(
            "23 empty id",
            id("23b"),
            &mlp,
            job_bytes("", "mlp", vec![mlp_input()]),
            ErrorCode::BadPayload,
        ),
        case(
            "23 id too long",
            id("23c"),
            &mlp,
            job_bytes(&long_id, "mlp", vec![mlp_input()]),
            ErrorCode::BadPayload,
        ),
        // 24: over the dispatcher's --max-payload-bytes (64 KiB here).
        case(
            "24 too large",
            id("24"),
            &mlp,
            job_bytes(
                &id("24"),
                "mlp",
                vec![Tensor::owned(DType::U8, vec![100_000], vec![7; 100_000])],
            ),
            ErrorCode::BadPayload,
        ),
        // 25: the subject says pair, the job says mlp.
        case(
            "25 subject mismatch",
            id("25"),
            &job_subject(Priority::P1, "pair"),
            job_bytes(&id("25"), "mlp", vec![mlp_input()]),
            ErrorCode::InvalidInput,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_code_and_valid_jobs_beside_it_are_correct() {
    let stack = stack(
        1,
        &[
            "--max-payload-bytes",
            "65536",
            "--unknown-model-after-ms",
            "1000",
        ],
    )
    .await;
    let client: Client = stack.client().await.unwrap();
    let run = run_id("bad");
    let cases = cases(&run);
    let mut valid = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        client
            .publish_raw(&c.subject, &c.id, Bytes::from(c.payload.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        // Valid jobs right behind each bad one land in the same bundles and batches.
        valid.extend(
            publish_samples(&client, "mlp", 3, Priority::P1, &format!("{run}-ok{i}")).await,
        );
    }

    let ids: Vec<String> = cases.iter().map(|c| c.id.clone()).collect();
    let results = collect_results(&client, &ids, Duration::from_secs(20)).await;
    let mut failures = Vec::new();
    for c in &cases {
        match results.get(&c.id) {
            None => failures.push(format!("{}: no result under {}", c.name, c.id)),
            Some(r) if r.status != Status::Error || r.error_code() != Some(c.code) => failures
                .push(format!(
                    "{}: expected {}, got {:?} {:?}",
                    c.name, c.code, r.status, r.error
                )),
            Some(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "bad-input cases failed:\n{}",
        failures.join("\n")
    );

    // Nothing was written under a key built from an invalid id.
    for bad in ["bad id", ""] {
        assert!(
            client.store().get_raw(bad).await.unwrap().is_none(),
            "a result was written under {bad:?}"
        );
    }
    assert_all_correct(&client, &valid, Duration::from_secs(30)).await;
}

/// Resident memory of a process, KiB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Publishes `n` bad jobs (half undecodable, half the wrong shape for the model) and waits
/// for all their error results.
async fn bad_jobs(client: &Client, prefix: &str, n: usize) {
    use futures::StreamExt;
    let subject = job_subject(Priority::P2, "mlp");
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let payload = if i % 2 == 0 {
                b"\xc1 garbage".to_vec()
            } else {
                job_bytes(id, "mlp", vec![Tensor::from_f32(vec![15], &[0.0; 15])])
            };
            let subject = subject.clone();
            async move {
                client
                    .publish_raw(&subject, id, Bytes::from(payload))
                    .await
                    .expect("publish")
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    let results = collect_results(client, &ids, Duration::from_secs(120)).await;
    assert_eq!(results.len(), n, "every bad job gets an error result");
    assert!(results.values().all(|r| r.status == Status::Error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_across_ten_thousand_bad_jobs() {
    let mut stack = stack(1, &[]).await;
    let client: Client = stack.client().await.unwrap();
    let run = run_id("badmem");
    // Warm up: allocator pools, connection buffers, lazily built state.
    bad_jobs(&client, &format!("{run}-warm"), 2_000).await;
    let worker_pid = stack.worker("worker-0").unwrap().pid();
    let dispatcher_pid = stack.dispatcher().unwrap().pid();
    let (w0, d0) = (rss_kb(worker_pid), rss_kb(dispatcher_pid));
    bad_jobs(&client, &format!("{run}-load"), 10_000).await;
    let (w1, d1) = (rss_kb(worker_pid), rss_kb(dispatcher_pid));
    eprintln!("worker RSS {w0} -> {w1} KiB, dispatcher RSS {d0} -> {d1} KiB over 10,000 bad jobs");
    assert!(
        w1 < w0 + 16 * 1024,
        "worker memory grew from {w0} to {w1} KiB"
    );
    assert!(
        d1 < d0 + 16 * 1024,
        "dispatcher memory grew from {d0} to {d1} KiB"
    );
    stack.check_alive("after 12,000 bad jobs").unwrap();
}
