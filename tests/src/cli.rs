//! Running the project's binaries as a user would and reading what they printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// Exit code, stdout and stderr of a finished command, labelled, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stdout followed by stderr of a finished command, unlabelled (to search the whole output).
pub fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `exe ARGS --check-config` with only `env` plus what a process needs to start
/// (`PATH`, `LD_LIBRARY_PATH`, `HOME`): an inherited `NATS_URL` or `RUST_LOG` must not
/// make a broken deployment file pass.
pub fn check_config(exe: &Path, args: &[String], env: BTreeMap<String, String>) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args).arg("--check-config").env_clear().envs(env);
    for keep in ["PATH", "LD_LIBRARY_PATH", "HOME"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    cmd.output().expect("running the binary")
}

/// The strings of a JSON array (a command line or argument list read from a deployment
/// file); other elements are skipped, and anything but an array gives none.
pub fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
