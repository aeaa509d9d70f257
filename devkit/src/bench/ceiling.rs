//! The ceiling: the model alone in a tight loop, run by `jetinfer-worker ceiling` (only
//! the worker links libtorch), and the host the figures were taken on.

use std::path::Path;

use super::events::{Event, Observer};
use super::BenchError;
use crate::local::binary;

/// What the ceiling loop runs.
pub struct CeilingRun<'a> {
    pub models: &'a Path,
    pub model: &'a str,
    pub batch: u32,
    pub seconds: f64,
    /// Length of the dynamic dimensions.
    pub dyn_len: i64,
}

/// Runs `jetinfer-worker ceiling`, keeps its stderr in `log_root/ceiling.log`, and returns
/// the JSON it prints last.
pub fn ceiling(
    run: &CeilingRun<'_>,
    log_root: &Path,
    observer: &dyn Observer,
) -> Result<serde_json::Value, BenchError> {
    let worker = binary("jetinfer-worker")?;
    observer.event(Event::CeilingCommand {
        worker: &worker,
        model: run.model,
        batch: run.batch,
        seconds: run.seconds,
    });
    let out = std::process::Command::new(&worker)
        .args(["ceiling", "--models"])
        .arg(run.models)
        .args([
            "--model",
            run.model,
            "--batch",
            &run.batch.to_string(),
            "--seconds",
            &run.seconds.to_string(),
            "--dyn-len",
            &run.dyn_len.to_string(),
        ])
        .output()
        .map_err(|source| BenchError::Run {
            program: worker.clone(),
            source,
        })?;
    let _ = std::fs::write(log_root.join("ceiling.log"), &out.stderr);
    if !out.status.success() {
        return Err(BenchError::CeilingFailed {
            status: out.status,
            why: failure_lines(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or(BenchError::CeilingNoJson)?;
    serde_json::from_str(line).map_err(BenchError::CeilingJson)
}

/// The lines of a failed run's stderr that say what went wrong: libtorch appends a long
/// backtrace after them.
fn failure_lines(stderr: &str) -> String {
    let why: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rror") || l.contains("xception"))
        .take(4)
        .collect();
    why.join(" | ")
}

/// CPU model and count, for the report.
pub fn host_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{n} × {cpu}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn failure_lines_keep_what_went_wrong() {
        let err = "loading\nRuntimeError: bad shape\nframe #0\nException raised\nframe #1\n";
        assert_eq!(
            super::failure_lines(err),
            "RuntimeError: bad shape | Exception raised"
        );
    }
}
