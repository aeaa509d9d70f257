//! The simulated device (`sim` in the models TOML, worker/src/sim.rs): a worker serving a
//! model with no TorchScript file answers every job with, per input, the sum of its
//! elements, and each batch takes the configured `batch_ms + per_sample_ms × jobs` — seen
//! in the results' own timings (`compute_ms`, `batch_size`) and in the wall-clock time the
//! jobs took on one executor thread.

use std::time::{Duration, Instant};

use jetinfer_schemas::{DType, Job, Priority, Status, Tensor};
use jetinfer_tests::{collect_results, run_id, stack_serving, write_models};

const BATCH_MS: f64 = 150.0;
const PER_SAMPLE_MS: f64 = 10.0;
const MAX_BATCH: usize = 8;
const JOBS: usize = 40;

fn models_file(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        "[[models]]\nname = \"sim\"\nversion = \"1\"\nmax_batch_size = {MAX_BATCH}\n\
         max_queue_delay_ms = 20\n\
         inputs = [{{ dtype = \"f32\", shape = [4] }}, {{ dtype = \"i64\", shape = [2] }}]\n\
         sim = {{ batch_ms = {BATCH_MS}, per_sample_ms = {PER_SAMPLE_MS} }}\n"
    );
    write_models(dir, &text)
}

/// Job `i`'s inputs and the outputs the simulated model must give for them.
fn job(i: usize) -> (Vec<Tensor<'static>>, Vec<f32>) {
    let x = i as f32;
    let floats = [x, x + 0.5, -1.0, 2.0 * x];
    let ints = [i as i64, 1000];
    let inputs = vec![
        Tensor::from_f32(vec![4], &floats),
        Tensor::owned(
            DType::I64,
            vec![2],
            ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    (inputs, vec![floats.iter().sum(), (i + 1000) as f32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_model_answers_from_its_inputs_in_the_configured_batch_time() {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack_serving(models_file(dir.path())).await;
    let client = stack.client().await.unwrap();
    let run = run_id("sim");

    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let id = format!("{run}-{i}");
        client
            .submit(Priority::P1, &Job::new(id.clone(), "sim", job(i).0))
            .await
            .unwrap_or_else(|e| panic!("submit {id}: {e}"));
        ids.push(id);
    }
    let results = collect_results(&client, &ids, Duration::from_secs(60)).await;
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(results.len(), JOBS, "every job has a result");

    for (i, id) in ids.iter().enumerate() {
        let r = &results[id];
        assert_eq!(r.status, Status::Ok, "job {id}: {:?}", r.error);
        assert_eq!(r.outputs.len(), 1, "one output per job");
        assert_eq!(r.outputs[0].to_f32_vec(), job(i).1, "job {id}'s sums");
        let t = r.timings;
        let n = t.batch_size as usize;
        assert!((1..=MAX_BATCH).contains(&n), "batch size {n}");
        let want = BATCH_MS + PER_SAMPLE_MS * n as f64;
        // The sleep is at least the configured time; a loaded 2-core machine may add some.
        assert!(
            t.compute_ms >= want && t.compute_ms < want + 100.0,
            "job {id}: batch of {n} took {} ms, configured {want} ms",
            t.compute_ms
        );
    }
    // One executor thread runs one batch at a time: the jobs took at least the batches'
    // configured times end to end (⌈40 / 8⌉ = 5 full batches at the least).
    let least = JOBS.div_ceil(MAX_BATCH) as f64 * (BATCH_MS + PER_SAMPLE_MS * MAX_BATCH as f64);
    assert!(
        wall_ms >= least,
        "{JOBS} jobs in {wall_ms:.0} ms, less than {least} ms of configured batch time"
    );
}
