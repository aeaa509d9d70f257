//! The dispatcher's autoscaling signals follow a real backlog (issue 13, item 4): with no
//! worker, N published jobs show as `jetinfer_queue_lag = N` (and per model) on /metrics,
//! with a positive arrival rate and oldest-job age; once a worker starts, the lag falls to
//! 0, every job gets a correct result, and the model's measured capacity and saturation
//! score appear; with a stream deleted, failed refreshes are counted and its gauges keep
//! their last values. Every wait is a poll with a deadline, never a fixed sleep.

use std::time::Duration;

use jetinfer_devkit::local::LocalStack;
use jetinfer_schemas::names::jobs_stream;
use jetinfer_schemas::Priority;
use jetinfer_tests::{assert_all_correct, http, publish_samples, run_id};

const P1_JOBS: usize = 40;
const P2_JOBS: usize = 7;

/// Calls `f` every 100 ms until it returns `Some`, panicking with `what` after `limit`.
async fn poll<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {limit:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the series `series` (name and labels exactly as exported), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn lag(text: &str, p: &str) -> Option<f64> {
    value(text, &format!(r#"jetinfer_queue_lag{{priority="{p}"}}"#))
}

fn model_lag(text: &str, p: &str, model: &str) -> Option<f64> {
    value(
        text,
        &format!(r#"jetinfer_model_queue_lag{{priority="{p}",model="{model}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_lag_follows_a_published_backlog_and_falls_to_zero_with_a_worker() {
    // No worker, and nothing that would answer the waiting jobs on its own: no deadline
    // or unknown-model answer within the test.
    let mut stack = LocalStack::builder()
        .workers(0)
        .env("RUST_LOG", "info")
        .dispatcher_args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--autoscale-every-ms",
            "200",
            "--unknown-model-after-ms",
            "600000",
            "--deadline-ms",
            "600000,600000,600000",
        ])
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the local stack: {e}"));
    let addr = http::metrics_addr(stack.dispatcher().unwrap().log_path()).await;

    // Before any job: the signals are exported, at 0.
    poll(
        Duration::from_secs(30),
        "lag 0 before publishing",
        || async {
            let text = http::scrape(&addr).await;
            (lag(&text, "p0") == Some(0.0)
                && lag(&text, "p1") == Some(0.0)
                && lag(&text, "p2") == Some(0.0))
            .then_some(())
        },
    )
    .await;

    let client = stack.client().await.unwrap();
    let run = run_id("lag");
    let mut jobs = publish_samples(&client, "mlp", P1_JOBS, Priority::P1, &run).await;
    jobs.extend(publish_samples(&client, "mlp", P2_JOBS, Priority::P2, &run).await);

    // The backlog shows, per priority and per model; the dispatcher holds some of it
    // (ack pending) and counts it all the same.
    let text = poll(Duration::from_secs(30), "lag = published jobs", || async {
        let text = http::scrape(&addr).await;
        let full = lag(&text, "p1") == Some(P1_JOBS as f64)
            && lag(&text, "p2") == Some(P2_JOBS as f64)
            && model_lag(&text, "p1", "mlp") == Some(P1_JOBS as f64)
            && model_lag(&text, "p2", "mlp") == Some(P2_JOBS as f64)
            && value(&text, r#"jetinfer_arrival_rate{priority="p1"}"#).is_some_and(|r| r > 0.0)
            && value(&text, r#"jetinfer_queue_oldest_age_seconds{priority="p1"}"#)
                .is_some_and(|a| a > 0.0);
        full.then_some(text)
    })
    .await;
    assert_eq!(lag(&text, "p0"), Some(0.0), "{text}");
    // Nobody serves mlp yet: no capacity, no score.
    assert_eq!(
        value(
            &text,
            r#"jetinfer_model_capacity_jobs_per_second{model="mlp"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        value(&text, r#"jetinfer_model_saturation{model="mlp"}"#).is_some_and(f64::is_nan),
        "{text}"
    );
    // Without a worker the backlog stays exactly where it is.
    let again = http::scrape(&addr).await;
    assert_eq!(lag(&again, "p1"), Some(P1_JOBS as f64), "{again}");

    stack.start_worker(Vec::<String>::new()).unwrap();
    assert_all_correct(&client, &jobs, Duration::from_secs(120)).await;
    let text = poll(
        Duration::from_secs(30),
        "lag back to 0 with a worker",
        || async {
            let text = http::scrape(&addr).await;
            let drained = lag(&text, "p1") == Some(0.0)
            && lag(&text, "p2") == Some(0.0)
            && model_lag(&text, "p1", "mlp") == Some(0.0)
            && model_lag(&text, "p2", "mlp") == Some(0.0)
            && value(&text, r#"jetinfer_queue_oldest_age_seconds{priority="p1"}"#)
                == Some(0.0)
            // The worker has run batches, so its heartbeats carry a measured batch time.
            && value(&text, r#"jetinfer_model_capacity_jobs_per_second{model="mlp"}"#)
                .is_some_and(|c| c > 0.0);
            drained.then_some(text)
        },
    )
    .await;
    let saturation = value(&text, r#"jetinfer_model_saturation{model="mlp"}"#).unwrap();
    assert!(
        saturation.is_finite() && saturation >= 0.0,
        "an idle, measured model has a finite score: {text}"
    );

    // P0's stream gone (deleted under the running dispatcher): its refreshes fail and are
    // counted, its gauges keep their last values (an autoscaler reading them sees a stale
    // figure, not a drop to nothing), and the other priorities are still refreshed.
    let js = async_nats::jetstream::new(stack.connect_nats().await.unwrap());
    js.delete_stream(jobs_stream(Priority::P0)).await.unwrap();
    let text = poll(
        Duration::from_secs(30),
        "a counted refresh failure",
        || async {
            let text = http::scrape(&addr).await;
            let failed = value(
                &text,
                r#"jetinfer_autoscale_refresh_failures_total{priority="p0"}"#,
            )
            .is_some_and(|n| n >= 1.0);
            failed.then_some(text)
        },
    )
    .await;
    assert_eq!(lag(&text, "p0"), Some(0.0), "{text}");
    assert_eq!(
        value(
            &text,
            r#"jetinfer_autoscale_refresh_failures_total{priority="p2"}"#
        ),
        Some(0.0),
        "{text}"
    );
    // The other priorities still run.
    let more = publish_samples(&client, "mlp", 3, Priority::P2, &format!("{run}-late")).await;
    assert_all_correct(&client, &more, Duration::from_secs(60)).await;
    stack.stop();
}
