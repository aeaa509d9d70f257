//! `jetinfer status <id>`: the job's result if it is stored, else where the job is —
//! waiting in its priority stream, held by a dispatcher (queued there or running on a
//! worker), how many runs it lost (the failures counter in Redis), in the dead-letter
//! stream — and its trace id (from the result, else from the job's `traceparent`).
//!
//! Exit codes: 0 finished `ok`; 3 finished `error`/`expired` (a dead letter too); 2 not
//! finished (waiting or held); 4 nothing known of the job.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use jetinfer_schemas::{ErrorCode, JobResult};
use serde_json::{json, Value};

use super::locate::{find_in_streams, find_letter, Scan};
use super::output::{
    exit_for, print_value, result_value, OutputArgs, EXIT_JOB_FAILED, EXIT_PENDING, EXIT_UNKNOWN,
};
use super::Global;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The job id.
    #[arg(env = "JETINFER_JOB_ID")]
    pub id: String,
    /// How long to look for the job's message in the streams, seconds (a deep backlog
    /// may need more; the answer says when the look was cut short).
    #[arg(long, env = "JETINFER_STATUS_SCAN_S", default_value_t = 3.0)]
    pub scan_s: f64,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where the job is, as one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Done,
    DeadLetter,
    Held,
    Waiting,
    Unknown,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Done => "done",
            State::DeadLetter => "dead_letter",
            State::Held => "held",
            State::Waiting => "waiting",
            State::Unknown => "unknown",
        }
    }
}

pub async fn run(global: &Global, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let id = args.id.as_str();
    let (result, failures) = {
        let r = client.get(id).await.context("reading the result")?;
        let states = client
            .store()
            .job_states(&[id])
            .await
            .context("reading the failures counter")?;
        (r, states.first().map_or(0, |s| s.1))
    };
    let letters = client
        .dead_letters()
        .await
        .context("reading the dead-letter stream")?;
    let letter = find_letter(&letters, id);
    // A finished job is not in a priority stream any more: only look when unfinished.
    let scan = match (&result, letter) {
        (None, None) => {
            let budget = Duration::from_secs_f64(args.scan_s.max(0.0));
            Some(find_in_streams(client.jetstream(), id, budget).await?)
        }
        _ => None,
    };
    let state = match (
        &result,
        letter,
        scan.as_ref().and_then(|s| s.found.as_ref()),
    ) {
        (_, Some(_), _) => State::DeadLetter,
        (Some(_), None, _) => State::Done,
        (None, None, Some(found)) if found.held => State::Held,
        (None, None, Some(_)) => State::Waiting,
        (None, None, None) => State::Unknown,
    };
    let trace_id = result
        .as_ref()
        .map(|r| r.trace_id.clone())
        .filter(|t| !t.is_empty())
        .or_else(|| scan.as_ref()?.found.as_ref()?.trace_id.clone());
    let summary = summarize(state, result.as_ref(), failures, scan.as_ref(), letter);
    let report = json!({
        "id": id,
        "state": state.as_str(),
        "summary": summary,
        "trace_id": trace_id,
        "failures": failures,
        "result": result.as_ref().map(result_value),
        "stream": scan.as_ref().and_then(|s| s.found.as_ref()),
        "scanned": scan.as_ref().map(|s| json!({"messages": s.scanned, "complete": s.complete})),
        "dead_letter": letter.map(|l| json!({
            "seq": l.seq, "reason": l.reason, "failures": l.failures, "subject": l.subject,
        })),
    });
    if args.output.json {
        print_value(&report, true);
    } else {
        print_text(&report, result.as_ref());
    }
    Ok(match (state, &result) {
        (State::Done, Some(r)) => exit_for(r),
        (State::DeadLetter, _) => ExitCode::from(EXIT_JOB_FAILED),
        (State::Held | State::Waiting, _) => ExitCode::from(EXIT_PENDING),
        _ => ExitCode::from(EXIT_UNKNOWN),
    })
}

/// One sentence on where the job is.
fn summarize(
    state: State,
    result: Option<&JobResult<'_>>,
    failures: u32,
    scan: Option<&Scan>,
    letter: Option<&jetinfer_client::dlq::DeadLetter>,
) -> String {
    let lost = match failures {
        0 => String::new(),
        1 => ", after 1 lost run".to_string(),
        n => format!(", after {n} lost runs"),
    };
    match state {
        State::Done => {
            let r = result.expect("done means a result: this is a bug");
            let how = match &r.error {
                Some(e) => format!("{} ({}: {})", r.status.as_str(), e.code.as_str(), e.message),
                None => r.status.as_str().to_string(),
            };
            let by = if r.worker.is_empty() {
                String::new()
            } else {
                format!(" by {}", r.worker)
            };
            format!("finished {how}{by}, {} attempt(s){lost}", r.attempts)
        }
        State::DeadLetter => {
            let l = letter.expect("a dead letter: this is a bug");
            let poison = result
                .and_then(|r| r.error_code())
                .is_some_and(|c| c == ErrorCode::Poison);
            format!(
                "in the dead-letter stream (seq {}, {} failures: {}){}; `jetinfer dlq replay {}` runs it again",
                l.seq,
                l.failures,
                l.reason,
                if poison { ", result poison" } else { "" },
                l.id
            )
        }
        State::Held => {
            let f = found(scan);
            format!(
                "held by a dispatcher (queued there or running on a worker): {} seq {}, model {}{lost}",
                f.stream, f.seq, f.model
            )
        }
        State::Waiting => {
            let f = found(scan);
            format!(
                "waiting in {} (seq {}, model {}), {} message(s) ahead of it{lost}",
                f.stream, f.seq, f.model, f.ahead
            )
        }
        State::Unknown => {
            let s = scan.expect("unknown means the streams were scanned: this is a bug");
            let looked = if s.complete {
                format!("not in the streams ({} messages read)", s.scanned)
            } else {
                format!(
                    "not among the first {} messages of the streams (the look was cut short: raise --scan-s)",
                    s.scanned
                )
            };
            format!("unknown: no result, {looked}, no dead letter{lost}; never published, or its result expired")
        }
    }
}

fn found(scan: Option<&Scan>) -> &super::locate::InStream {
    scan.and_then(|s| s.found.as_ref())
        .expect("held or waiting means found: this is a bug")
}

/// The report for people: the state, the trace id, then the result.
fn print_text(report: &Value, result: Option<&JobResult<'_>>) {
    println!(
        "{}: {}",
        report["id"].as_str().unwrap_or(""),
        report["summary"].as_str().unwrap_or("")
    );
    if let Some(t) = report["trace_id"].as_str() {
        println!("trace id: {t}");
    }
    if let Some(r) = result {
        print_value(&result_value(r), false);
    }
}
