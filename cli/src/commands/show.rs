//! `jetinfer get` and `jetinfer wait`: print a result as JSON; the exit code says how the
//! job ended (0 ok, 2 no result yet, 3 error or expired).

use std::process::ExitCode;
use std::time::Duration;

use jetinfer_client::ClientError;

use super::output::{exit_for, print_value, result_value, OutputArgs, EXIT_PENDING};
use super::Global;

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The job id.
    #[arg(env = "JETINFER_JOB_ID")]
    pub id: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The job id.
    #[arg(env = "JETINFER_JOB_ID")]
    pub id: String,
    /// How long to wait, seconds.
    #[arg(long, env = "JETINFER_WAIT_TIMEOUT_S", default_value_t = 30.0)]
    pub timeout_s: f64,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn get(global: &Global, args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    match client.get(&args.id).await? {
        Some(result) => {
            print_value(&result_value(&result), args.output.json);
            Ok(exit_for(&result))
        }
        None => Ok(pending(&args.id)),
    }
}

pub async fn wait(global: &Global, args: WaitArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let timeout = Duration::from_secs_f64(args.timeout_s);
    print_when_done(
        client.wait(&args.id, timeout).await,
        &args.id,
        args.output.json,
    )
}

/// Prints what a wait returned: the result (exit code by its status), or the pending
/// marker on a timeout (exit code 2).
pub fn print_when_done(
    waited: Result<jetinfer_schemas::JobResult<'static>, ClientError>,
    id: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match waited {
        Ok(result) => {
            print_value(&result_value(&result), json);
            Ok(exit_for(&result))
        }
        Err(ClientError::Timeout { timeout, .. }) => {
            eprintln!("no result for {id} within {timeout:?}");
            Ok(pending(id))
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints `{"id": …, "status": "pending"}` so scripts can parse every answer as JSON.
fn pending(id: &str) -> ExitCode {
    println!("{}", serde_json::json!({ "id": id, "status": "pending" }));
    ExitCode::from(EXIT_PENDING)
}
