//! The Go client (clients/go) against a real stack: `clients/go/build.sh` builds it
//! offline from Debian's Go packages, then its `go test` suite runs with the stack's
//! URLs (wire vectors of docs/wire-format.md, and the live tests, which must not skip),
//! then `jetinfer-example` checks golden samples of `pair` and `imgmean`, inline and by
//! reference. Go's build cache lives in target/go-cache, so reruns are fast. A second
//! test runs the spreading tests and the example against a stack with partition streams
//! and input stores.

use std::path::Path;
use std::process::Output;

use jetinfer_devkit::local::{repo_root, LocalStack};
use jetinfer_tests::cli::combined;
use jetinfer_tests::{spread_stack, stack};

/// The live tests of clients/go/integration_test.go; each must report PASS.
const LIVE_TESTS: &[&str] = &[
    "TestLiveSubmitWaitWithOptionsAndDuplicate",
    "TestLiveInputsByReferenceGoThroughRedis",
    "TestLiveStoredInputsAreTheWireValueWithTTL",
    "TestLiveErrorAndExpiredResultsCarryTheirCode",
    "TestLivePublishRefusals",
    "TestLiveWaitTimesOutWithTheContext",
    "TestLiveWaitWakesOnTheNoticeAndPollsWithout",
    "TestLiveAReusedIdWithOtherInputsIsAnIdConflict",
    "TestLivePartitionCountIsReadAgainWhenAStreamIsMissing",
    "TestLiveAnUnreadablePartitionCountIsOnePartitionWithOneWarning",
];

/// The live tests of clients/go/spread_test.go that need the stack's layout; on a plain
/// stack they check one partition and one input store.
const SPREAD_TESTS: &[&str] = &[
    "TestLiveJobsSpreadOverPartitionsAndInputStores",
    "TestLiveEachInputStoreHoldsExactlyItsJobsInputs",
];

/// Runs a command to completion and returns its output, stdout then stderr, as text.
async fn run(what: &str, cmd: &mut tokio::process::Command) -> (Output, String) {
    let out = cmd
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = combined(&out);
    (out, text)
}

fn build_sh(root: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(root.join("clients/go/build.sh"));
    cmd.current_dir(root)
        .env("GOCACHE", root.join("target/go-cache"))
        .env("JETINFER_GO_OUT", root.join("target/go"));
    cmd
}

/// Runs `jetinfer-example` on `count` golden samples of `pair` and `imgmean`, inline and
/// by reference, against `stack` (plus `args`); asserts it passed and returns its output.
async fn example(root: &Path, stack: &LocalStack, args: &[&str], count: &str) -> String {
    let (out, text) = run(
        "jetinfer-example",
        tokio::process::Command::new(root.join("target/go/bin/jetinfer-example"))
            .args([
                "--nats-url",
                stack.nats_url(),
                "--redis-url",
                stack.redis_url(),
            ])
            .args(args)
            .arg("--golden")
            .arg(root.join("models/out/golden.json"))
            .args([
                "--models",
                "pair,imgmean",
                "--modes",
                "inline,ref",
                "--count",
                count,
            ]),
    )
    .await;
    assert!(
        out.status.success() && text.contains("PASS"),
        "the Go example failed:\n{text}\n{}",
        stack.log_tails(20)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_passes_its_tests_and_the_golden_example_against_a_real_stack() {
    let root = repo_root().unwrap();
    let (out, text) = run("clients/go/build.sh", &mut build_sh(&root)).await;
    assert!(
        out.status.success(),
        "building the Go client failed:\n{text}"
    );

    let stack = stack(1, &[]).await;
    let (out, text) = run(
        "go test",
        build_sh(&root)
            .args(["test", "-count=1", "-v", "."])
            .env("JETINFER_TEST_NATS_URL", stack.nats_url())
            .env("JETINFER_TEST_REDIS_URL", stack.redis_url())
            .env("JETINFER_TEST_REQUIRE_SERVERS", "1")
            .env("JETINFER_WIRE_DOC", root.join("docs/wire-format.md")),
    )
    .await;
    assert!(
        out.status.success(),
        "go test failed:\n{text}\n{}",
        stack.log_tails(20)
    );
    assert!(!text.contains("--- SKIP"), "a Go test was skipped:\n{text}");
    for test in LIVE_TESTS.iter().chain(SPREAD_TESTS).chain(&[
        "TestJobEncodesAsExample91",
        "TestOkResultDecodesAsExample93",
        "TestJobInInputStore1EncodesAsExample96",
        "TestPartitionChoiceMatchesSection21",
    ]) {
        assert!(
            text.contains(&format!("--- PASS: {test} ")),
            "{test} did not pass:\n{text}"
        );
    }

    let text = example(&root, &stack, &[], "20").await;
    for line in ["pair       inline  20/20 ok", "imgmean    ref     20/20 ok"] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_spreads_jobs_over_partition_streams_and_input_stores() {
    let root = repo_root().unwrap();
    let (out, text) = run("clients/go/build.sh", &mut build_sh(&root)).await;
    assert!(
        out.status.success(),
        "building the Go client failed:\n{text}"
    );

    let (_extra, urls, stack) = spread_stack(3, 2).await;
    let (out, text) = run(
        "go test",
        build_sh(&root)
            .args([
                "test",
                "-count=1",
                "-v",
                "-run",
                &SPREAD_TESTS.join("|"),
                ".",
            ])
            .env("JETINFER_TEST_NATS_URL", stack.nats_url())
            .env("JETINFER_TEST_REDIS_URL", stack.redis_url())
            .env("JETINFER_TEST_REQUIRE_SERVERS", "1")
            .env("JETINFER_TEST_PARTITIONS", "3")
            .env("JETINFER_TEST_INPUTS_REDIS_URLS", urls.join(",")),
    )
    .await;
    assert!(
        out.status.success(),
        "go test failed:\n{text}\n{}",
        stack.log_tails(20)
    );
    for test in SPREAD_TESTS {
        assert!(
            text.contains(&format!("--- PASS: {test} ")),
            "{test} did not pass:\n{text}"
        );
    }
    assert!(
        text.contains("stack layout: partitions=3 input_stores=3"),
        "{text}"
    );

    // Golden samples through every partition and input store.
    let text = example(
        &root,
        &stack,
        &["--inputs-redis-url", &urls.join(",")],
        "30",
    )
    .await;
    for stream in ["JETINFER_P1", "JETINFER_P1_1", "JETINFER_P1_2"] {
        assert!(
            text.contains(&format!("stream {stream}: ")),
            "no job went to {stream}:\n{text}"
        );
    }
}
