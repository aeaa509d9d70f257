//! The Python client package (`clients/python`, importable as `jetinfer`) against a real
//! stack: its unit tests (the hex examples of docs/wire-format.md) and its integration
//! tests (golden jobs inline and by reference, waits, typed errors), run by
//! `python -m unittest` with the stack's URLs in the environment; then its spreading
//! tests (test_spread.py) against a stack with partition streams and input stores.

use std::path::Path;

use jetinfer_devkit::local::{repo_root, LocalStack};
use jetinfer_tests::cli::combined;
use jetinfer_tests::{spread_stack, stack};
use tokio::process::Command;

/// The integration tests a test file of the package defines: each must be reported as
/// run and passed, so a skipped class (URLs not passed through) or a test file that was
/// not collected fails.
fn integration_test_names(root: &Path, file: &str) -> Vec<String> {
    let path = root.join("clients/python/tests").join(file);
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    source
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix("def test_")
                .or_else(|| l.strip_prefix("async def test_"))?;
            Some(format!("test_{}", &rest[..rest.find('(')?]))
        })
        .collect()
}

/// Checks that every test of `file` (module `module`) ran and passed in `-v` output, which
/// reports one line per test: "test_x (module.Class.test_x) ... ok".
fn assert_all_passed(root: &Path, file: &str, text: &str, at_least: usize) {
    let module = file.trim_end_matches(".py");
    let expected = integration_test_names(root, file);
    assert!(
        expected.len() >= at_least,
        "found only {expected:?} in {file}"
    );
    for name in &expected {
        let passed = text
            .lines()
            .any(|l| l.starts_with(&format!("{name} ({module}.")) && l.ends_with("... ok"));
        assert!(
            passed,
            "test {name} of {file} did not run and pass:\n{text}"
        );
    }
}

/// Runs the package's tests (`python -m unittest discover -v`, plus `args`) with the
/// stack's URLs and `env`; asserts they passed (`what` failed) and returns stdout then
/// stderr.
async fn unittest(
    root: &Path,
    stack: &LocalStack,
    args: &[&str],
    env: &[(&str, &str)],
    what: &str,
) -> String {
    let out = Command::new(root.join(".venv/bin/python"))
        .args(["-m", "unittest", "discover", "-s", "clients/python/tests"])
        .args(args)
        .arg("-v")
        .current_dir(root)
        .env("JETINFER_TEST_NATS_URL", stack.nats_url())
        .env("JETINFER_TEST_REDIS_URL", stack.redis_url())
        .envs(env.iter().copied())
        .output()
        .await
        .expect("running python -m unittest");
    let text = combined(&out);
    assert!(
        out.status.success(),
        "{what} failed:\n{text}\n{}",
        stack.log_tails(20)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_package_passes_its_unit_and_integration_tests() {
    let root = repo_root().unwrap();
    let python = root.join(".venv/bin/python");
    let import = Command::new(&python)
        .args(["-c", "import jetinfer"])
        .current_dir(&root)
        .output()
        .await
        .expect("running .venv/bin/python");
    assert!(
        import.status.success(),
        "the jetinfer package cannot be imported (run `.venv/bin/pip install -e clients/python`, \
         or scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let stack = stack(1, &[]).await;
    let text = unittest(&root, &stack, &[], &[], "the Python client's tests").await;

    assert_all_passed(&root, "test_integration.py", &text, 10);
    // On a plain stack the spreading tests find one partition and one input store.
    assert_all_passed(&root, "test_spread.py", &text, 5);
    assert!(
        text.contains("stack layout: partitions=1 input_stores=1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_spreads_jobs_over_partition_streams_and_input_stores() {
    let root = repo_root().unwrap();
    let (_extra, urls, stack) = spread_stack(3, 2).await;
    let text = unittest(
        &root,
        &stack,
        &["-p", "test_spread.py"],
        &[
            ("JETINFER_TEST_PARTITIONS", "3"),
            ("JETINFER_TEST_INPUTS_REDIS_URLS", &urls.join(",")),
        ],
        "the Python client's spreading tests",
    )
    .await;
    assert_all_passed(&root, "test_spread.py", &text, 5);
    assert!(
        text.contains("stack layout: partitions=3 input_stores=3"),
        "{text}"
    );
}
