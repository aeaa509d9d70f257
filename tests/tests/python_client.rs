//! The Python client package (`clients/python`, importable as `jetinfer`) against a real
//! stack: its unit tests (the hex examples of docs/wire-format.md) and its integration
//! tests (golden jobs inline and by reference, waits, typed errors), run by
//! `python -m unittest` with the stack's URLs in the environment.

use std::path::Path;

use jetinfer_devkit::local::repo_root;
use jetinfer_tests::stack;
use tokio::process::Command;

/// The integration tests the package defines: each must be reported as run and passed,
/// so a skipped class (URLs not passed through) or a test file that was not collected fails.
fn integration_test_names(root: &Path) -> Vec<String> {
    let source = std::fs::read_to_string(root.join("clients/python/tests/test_integration.py"))
        .expect("reading clients/python/tests/test_integration.py");
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
    let out = Command::new(&python)
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "clients/python/tests",
            "-v",
        ])
        .current_dir(&root)
        .env("JETINFER_TEST_NATS_URL", stack.nats_url())
        .env("JETINFER_TEST_REDIS_URL", stack.redis_url())
        .output()
        .await
        .expect("running python -m unittest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the Python client's tests failed:\n{text}\n{}",
        stack.log_tails(20)
    );

    // `-v` reports one line per test: "test_x (test_integration.Class.test_x) ... ok".
    let expected = integration_test_names(&root);
    assert!(
        expected.len() >= 10,
        "found only {expected:?} in test_integration.py"
    );
    for name in &expected {
        let passed = text
            .lines()
            .any(|l| l.starts_with(&format!("{name} (test_integration.")) && l.ends_with("... ok"));
        assert!(
            passed,
            "integration test {name} did not run and pass:\n{text}"
        );
    }
}
