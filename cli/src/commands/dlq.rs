//! `jetinfer dlq list|replay`: the dead-letter stream `JETINFER_DLQ`, where the dispatcher
//! copies jobs that became `poison` with the reason.
//!
//! Both go through the client library's `dlq` module: `replay` publishes a dead letter
//! again to its original subject, after removing its `poison` result and failure count (so
//! it really runs), under a fresh `Nats-Msg-Id`, then removes it from the dead-letter
//! stream.

use std::process::ExitCode;

use anyhow::Context;
use jetinfer_client::dlq::{replay_letter, Selection};

use super::output::OutputArgs;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters: sequence, job id, failures, reason, original subject.
    List,
    /// Publish dead letters again to their original subjects.
    Replay {
        /// Job ids to replay (all when absent).
        ids: Vec<String>,
    },
}

pub async fn run(global: &Global, args: DlqArgs) -> anyhow::Result<ExitCode> {
    let client = global.client().await?;
    let letters = client
        .dead_letters()
        .await
        .context("reading the dead-letter stream")?;
    let json = args.output.json;
    match args.command {
        DlqCommand::List if json => {
            let list: Vec<serde_json::Value> = letters
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "seq": l.seq, "id": l.id, "failures": l.failures,
                        "subject": l.subject, "reason": l.reason,
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "dead_letters": list }));
        }
        DlqCommand::List => {
            println!(
                "{:>6}  {:<40} {:>8}  {:<28} reason",
                "seq", "job id", "failures", "subject"
            );
            for l in &letters {
                println!(
                    "{:>6}  {:<40} {:>8}  {:<28} {}",
                    l.seq, l.id, l.failures, l.subject, l.reason
                );
            }
            println!("{} dead letter(s)", letters.len());
        }
        DlqCommand::Replay { ids } => {
            let selection = Selection::ids_or_all(ids);
            let mut replayed = Vec::new();
            for l in letters.iter().filter(|l| selection.matches(l)) {
                let done = replay_letter(&client, l).await?;
                if !json {
                    println!("replayed {} to {}", done.id, done.subject);
                }
                replayed.push(serde_json::json!({
                    "id": done.id, "subject": done.subject, "msg_id": done.msg_id, "seq": done.seq,
                }));
            }
            if json {
                println!("{}", serde_json::json!({ "replayed": replayed }));
            } else {
                println!("{} dead letter(s) replayed", replayed.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
