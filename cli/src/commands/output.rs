//! How commands print: `--json` (one JSON document on stdout, for scripts) or text for
//! people, and the exit codes that say how a job ended.

use std::process::ExitCode;

use jetinfer_devkit::json::{compact_scalar_lists, result_to_json};
use jetinfer_schemas::{JobResult, Status};
use serde_json::Value;

/// Exit code for "the job has no result yet".
pub const EXIT_PENDING: u8 = 2;
/// Exit code for "the job finished with status `error` or `expired`".
pub const EXIT_JOB_FAILED: u8 = 3;
/// Exit code for "nothing is known of this job" (`status`).
pub const EXIT_UNKNOWN: u8 = 4;

/// The `--json` flag of a printing command.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Print one JSON document on stdout instead of text (progress and notes go to stderr).
    #[arg(long, global = true)]
    pub json: bool,
}

/// A result as JSON: every wire field, with the trace id and inputs digest when the
/// result records them.
pub fn result_value(r: &JobResult<'_>) -> Value {
    let mut v = result_to_json(r);
    if let Value::Object(map) = &mut v {
        if !r.trace_id.is_empty() {
            map.insert("trace_id".into(), Value::from(r.trace_id.as_str()));
        }
        if !r.inputs_digest.is_empty() {
            map.insert(
                "inputs_digest".into(),
                Value::from(r.inputs_digest.as_str()),
            );
        }
    }
    v
}

/// Prints a JSON value: one line with `--json`, else indented with number lists on one line.
pub fn print_value(v: &Value, json: bool) {
    if json {
        println!("{v}");
    } else {
        let pretty =
            serde_json::to_string_pretty(v).expect("a JSON value always prints: this is a bug");
        println!("{}", compact_scalar_lists(&pretty));
    }
}

/// The exit code for a finished job: 0 when `ok`, [`EXIT_JOB_FAILED`] when `error` or
/// `expired`.
pub fn exit_for(r: &JobResult<'_>) -> ExitCode {
    match r.status {
        Status::Ok => ExitCode::SUCCESS,
        Status::Error | Status::Expired => ExitCode::from(EXIT_JOB_FAILED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::{ErrorCode, JobError};

    #[test]
    fn results_carry_their_trace_and_exit_by_status() {
        let mut r = JobResult::ok("j", "mlp", "1", Vec::new());
        assert!(result_value(&r).get("trace_id").is_none());
        r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".into();
        assert_eq!(
            result_value(&r)["trace_id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(exit_for(&r), ExitCode::SUCCESS);
        let failed = JobResult::failed("j", "mlp", JobError::new(ErrorCode::Expired, "late"));
        assert_eq!(exit_for(&failed), ExitCode::from(EXIT_JOB_FAILED));
    }
}
