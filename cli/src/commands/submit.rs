//! `jetinfer submit`: build one job from input files (or standard input) and publish it;
//! with `--wait`, wait for its result (subscribed before publishing) and exit by its status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jetinfer_schemas::{now_ms, Job, Priority};

use super::output::OutputArgs;
use super::{input, show, Global};

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// Model name (the subject's last token).
    #[arg(long, env = "JETINFER_SUBMIT_MODEL")]
    pub model: String,
    /// Model version; absent = whichever version the workers serve.
    #[arg(long, env = "JETINFER_SUBMIT_VERSION")]
    pub version: Option<String>,
    /// Priority class: p0, p1 or p2.
    #[arg(long, env = "JETINFER_SUBMIT_PRIORITY", default_value = "p1")]
    pub priority: Priority,
    /// Deadline in milliseconds from now; absent = the priority's default.
    #[arg(long, env = "JETINFER_SUBMIT_DEADLINE_MS")]
    pub deadline_ms: Option<u64>,
    /// Job id (also the de-duplication key) [default: 32 random hex digits].
    #[arg(long, env = "JETINFER_SUBMIT_ID")]
    pub id: Option<String>,
    /// Do not let the result cache answer this job.
    #[arg(long, env = "JETINFER_SUBMIT_NO_CACHE")]
    pub no_cache: bool,
    /// Metadata echoed in the result, `key=value`; repeat for more.
    #[arg(long = "meta", env = "JETINFER_SUBMIT_META", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
    /// Input files in the model's argument order: `.npy` (one sample, no batch
    /// dimension) or `.json` `{"dtype", "shape", "data"}`; `-` reads standard input (a
    /// `.npy`, a JSON tensor, or a JSON list of tensors). Without `--input`, a piped
    /// standard input is read.
    #[arg(long = "input", env = "JETINFER_SUBMIT_INPUTS", value_delimiter = ',', num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Also wait for the result and print it (exit code 2 on timeout, 3 when the job ends
    /// as error or expired).
    #[arg(long, env = "JETINFER_SUBMIT_WAIT")]
    pub wait: bool,
    /// How long `--wait` waits, seconds.
    #[arg(long, env = "JETINFER_SUBMIT_TIMEOUT_S", default_value_t = 30.0)]
    pub timeout_s: f64,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// 128 random bits as hex: unique enough to never collide within a stream's
/// de-duplication window.
pub fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub async fn run(global: &Global, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let inputs = input::read_inputs(&args.inputs)?;
    let id = args.id.unwrap_or_else(random_id);
    let mut job = Job::new(id.clone(), args.model, inputs);
    job.version = args.version.map(Into::into);
    job.deadline_ms = args.deadline_ms.map(|ms| now_ms() + ms);
    job.cache = args.no_cache.then_some(false);
    job.meta = (!args.meta.is_empty()).then(|| args.meta.into_iter().collect());
    let client = global.client().await?;
    let json = args.output.json;
    if args.wait {
        let timeout = Duration::from_secs_f64(args.timeout_s);
        if !json {
            println!("{id}");
        }
        let waited = client.submit_and_wait(args.priority, &job, timeout).await;
        return show::print_when_done(waited, &id, json);
    }
    let submitted = client.submit(args.priority, &job).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "id": submitted.id, "duplicate": submitted.duplicate })
        );
    } else {
        println!("{}", submitted.id);
    }
    if submitted.duplicate {
        eprintln!("note: JetStream already held a job with id {id}; this one was de-duplicated");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_and_ids() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_key_value("ab").is_err());
        assert!(parse_key_value("=b").is_err());
        let id = random_id();
        assert_eq!(id.len(), 32);
        assert!(jetinfer_schemas::limits::is_valid_job_id(&id));
        assert_ne!(id, random_id());
    }
}
