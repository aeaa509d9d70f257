//! `jetinfer dlq list|replay`: the dead-letter stream `JETINFER_DLQ`, where the dispatcher
//! copies jobs that became `poison` with the reason.
//!
//! `replay` publishes a dead letter again to its original subject, after removing its
//! `poison` result and failure count (so it really runs), under a fresh `Nats-Msg-Id`
//! (`<id>:replay:<ms>`, since JetStream may still remember the original one), then removes
//! it from the dead-letter stream.

use std::process::ExitCode;

use anyhow::Context;
use async_nats::jetstream;
use jetinfer_client::dlq::dead_letters;
use jetinfer_schemas::names::DLQ_STREAM;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
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
    let js = jetstream::new(client.nats().clone());
    let letters = dead_letters(&js)
        .await
        .map_err(|e| anyhow::anyhow!("reading the dead-letter stream: {e}"))?;
    match args.command {
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
            let stream = js
                .get_stream(DLQ_STREAM)
                .await
                .context("dead-letter stream")?;
            let mut n = 0;
            for l in letters
                .iter()
                .filter(|l| ids.is_empty() || ids.contains(&l.id))
            {
                client.store().forget(&l.id).await?;
                let msg_id = format!("{}:replay:{}", l.id, jetinfer_schemas::now_ms());
                client
                    .publish_raw(&l.subject, &msg_id, l.payload.clone())
                    .await?;
                stream
                    .delete_message(l.seq)
                    .await
                    .with_context(|| format!("removing dead letter {}", l.seq))?;
                println!("replayed {} to {}", l.id, l.subject);
                n += 1;
            }
            println!("{n} dead letter(s) replayed");
        }
    }
    Ok(ExitCode::SUCCESS)
}
