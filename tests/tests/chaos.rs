//! The fault suite, short version (the long one is `jetinfer chaos`, see docs/reliability.md):
//! every scenario on real processes, each asserting lost = 0, wrong = 0 and its own checks.

use std::time::Duration;

use jetinfer_devkit::chaos::{self, ChaosOptions};

async fn scenario(case: u32) {
    // Logs stay after the run (target/chaos-logs/case-N/), so a failure can be read.
    let log_dir = jetinfer_devkit::local::repo_root()
        .unwrap()
        .join("target/chaos-logs");
    let opts = ChaosOptions {
        jobs: 300,
        rate: 150.0,
        redis_outage: Duration::from_secs(3),
        log_dir: Some(log_dir),
    };
    let report = chaos::run(case, &opts)
        .await
        .unwrap_or_else(|e| panic!("case {case}: {e}"));
    eprintln!("{}\n{}", chaos::Report::header(), report.row());
    assert_eq!(
        report.published, opts.jobs,
        "case {case}: every publish should be acknowledged (producers retry)"
    );
    assert_eq!(
        report.lost, 0,
        "case {case}: lost jobs (process logs in target/chaos-logs/case-{case}/)"
    );
    assert_eq!(
        report.wrong, 0,
        "case {case}: wrong results, errors {:?}",
        report.errors
    );
    for c in &report.checks {
        assert!(c.ok, "case {case}: {}", c.what);
    }
}

macro_rules! scenarios {
    ($($name:ident => $case:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            scenario($case).await;
        }
    )*};
}

scenarios! {
    case_01_worker_killed_holding_a_batch => 1,
    case_02_worker_dies_between_store_and_ack => 2,
    case_03_worker_paused_past_the_heartbeat_timeout => 3,
    case_04_worker_paused_briefly => 4,
    case_05_dispatcher_killed_and_replaced => 5,
    case_06_nats_killed_and_restarted => 6,
    case_07_redis_unavailable => 7,
    case_08_redis_killed_and_restarted_with_aof => 8,
    case_09_rolling_restart_of_workers => 9,
    case_10_out_of_memory_splits_batches => 10,
    case_11_sticky_device_error_poison_job => 11,
    case_12_hung_forward_poison_job => 12,
    case_13_model_checksum_mismatch => 13,
    case_14_p2_burst_against_stream_limits => 14,
    case_15_p0_flood_does_not_starve_p2 => 15,
    case_16_deadlines_pass_while_queued => 16,
    case_17_producer_clock_skew => 17,
}
