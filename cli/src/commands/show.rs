//! `jetinfer get` and `jetinfer wait`: print a result as JSON.

use std::process::ExitCode;
use std::time::Duration;

use jetinfer_client::{Client, ClientError};
use jetinfer_devkit::json::ResultJson;

use super::{Global, EXIT_PENDING};

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The job id.
    #[arg(env = "JETINFER_JOB_ID")]
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    /// The job id.
    #[arg(env = "JETINFER_JOB_ID")]
    pub id: String,
    /// How long to wait, seconds.
    #[arg(long, env = "JETINFER_WAIT_TIMEOUT_S", default_value_t = 30.0)]
    pub timeout_s: f64,
}

pub async fn get(global: &Global, args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    match client.get(&args.id).await? {
        Some(result) => {
            println!("{}", ResultJson::new(&result).to_pretty_string());
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(pending(&args.id)),
    }
}

pub async fn wait(global: &Global, args: WaitArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    wait_and_print(&client, &args.id, Duration::from_secs_f64(args.timeout_s)).await
}

/// Waits for a result and prints it; a timeout prints the pending marker (exit code 2).
pub async fn wait_and_print(
    client: &Client,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    match client.wait(id, timeout).await {
        Ok(result) => {
            println!("{}", ResultJson::new(&result).to_pretty_string());
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Timeout { .. }) => {
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
