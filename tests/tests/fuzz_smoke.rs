//! The fuzz targets of fuzz/ build and run: `scripts/fuzz.sh 5` builds every target with
//! cargo-fuzz and runs each for 5 seconds on its committed corpus (docs/fuzzing.md).
//!
//! cargo-fuzz needs a nightly toolchain. Where `cargo +nightly fuzz --version` fails the test
//! says why and passes, unless `JETINFER_FUZZ_REQUIRED=1` (CI, where scripts/setup.sh
//! installs both) makes that a failure.

use std::process::Command;

use jetinfer_devkit::local::repo_root;

/// A command that does not inherit the outer cargo's toolchain choice: `cargo test` runs
/// tests with `CARGO`, `RUSTC` and `RUSTUP_TOOLCHAIN` naming the stable toolchain.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root().expect("the repository root"))
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Why cargo-fuzz cannot run here, if it cannot.
fn cargo_fuzz_missing() -> Option<String> {
    match command("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Some(format!("cannot run cargo: {e}")),
    }
}

#[test]
fn fuzz_targets_build_and_run_on_their_corpora() {
    if let Some(why) = cargo_fuzz_missing() {
        let hint = "install: rustup toolchain install nightly --profile minimal && \
                    cargo install cargo-fuzz --locked";
        if std::env::var("JETINFER_FUZZ_REQUIRED").as_deref() == Ok("1") {
            panic!("cargo +nightly fuzz is not available ({why}); {hint}");
        }
        eprintln!("skipped: cargo +nightly fuzz is not available ({why}); {hint}");
        return;
    }
    let out = command("scripts/fuzz.sh")
        .arg("5")
        .output()
        .expect("scripts/fuzz.sh starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/fuzz.sh 5 failed:\n{text}");

    // Every target the fuzz crate declares ran, and executed inputs.
    let list = command("scripts/fuzz.sh")
        .arg("--list")
        .output()
        .expect("scripts/fuzz.sh --list starts");
    let targets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(targets.len() >= 7, "fuzz targets: {targets:?}");
    for t in &targets {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(t.as_str()))
            .unwrap_or_else(|| panic!("no summary row for {t}:\n{text}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        let execs: u64 = cols[2]
            .parse()
            .unwrap_or_else(|_| panic!("executions of {t}: {row}"));
        assert!(execs > 0 && cols[4] == "ok", "{t}: {row}");
    }
    eprintln!("{stdout}");
}
