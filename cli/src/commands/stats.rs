//! `jetinfer stats`: what is queued per priority, and which workers are alive.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use futures::StreamExt;
use jetinfer_schemas::names::{consumer_name, jobs_stream, HEARTBEAT_SUBJECT};
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::Priority;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// How long to listen for worker heartbeats (workers send one per second).
    #[arg(long, env = "JETINFER_STATS_LISTEN_S", default_value_t = 2.5)]
    pub listen_s: f64,
}

pub async fn run(global: &Global, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let nats = global.connect.nats().connect().await?;
    // Subscribe first so heartbeats sent while the queues are read are not missed.
    let heartbeats = nats
        .subscribe(HEARTBEAT_SUBJECT)
        .await
        .context("subscribing to heartbeats")?;
    print_queues(&jetstream::new(nats.clone())).await;
    let window = Duration::from_secs_f64(args.listen_s);
    let workers = collect_heartbeats(heartbeats, window).await;
    println!();
    print!("{}", workers_table(&workers, window));
    Ok(ExitCode::SUCCESS)
}

async fn print_queues(js: &jetstream::Context) {
    println!(
        "{:<12} {:>10} {:>12} {:>10} {:>10}",
        "stream", "messages", "bytes", "pending", "in flight"
    );
    for p in Priority::ALL {
        let name = jobs_stream(p);
        let mut stream = match js.get_stream(name).await {
            Ok(s) => s,
            Err(e) => {
                println!("{name:<12} not available ({e}); is a dispatcher running?");
                continue;
            }
        };
        let (messages, bytes) = match stream.info().await {
            Ok(info) => (info.state.messages, info.state.bytes),
            Err(e) => {
                println!("{name:<12} {e}");
                continue;
            }
        };
        match stream.consumer_info(&consumer_name(p)).await {
            Ok(info) => println!(
                "{name:<12} {messages:>10} {bytes:>12} {:>10} {:>10}",
                info.num_pending, info.num_ack_pending
            ),
            Err(e) => println!("{name:<12} {messages:>10} {bytes:>12} consumer absent ({e})"),
        }
    }
}

/// The latest heartbeat of every worker heard within `window`.
async fn collect_heartbeats(mut sub: async_nats::Subscriber, window: Duration) -> Vec<Heartbeat> {
    let mut latest = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        if let Ok(hb) = rmp_serde::from_slice::<Heartbeat>(&msg.payload) {
            latest.insert(hb.worker.clone(), hb);
        }
    }
    latest.into_values().collect()
}

fn workers_table(workers: &[Heartbeat], window: Duration) -> String {
    let mut out = format!("workers heard within {window:?}: {}\n", workers.len());
    if workers.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "{:<20} {:<30} {:>11} {:<16} {:>9} {}\n",
        "id", "models", "slots free", "devices", "accepting", "gpu memory"
    ));
    for w in workers {
        let models: Vec<String> = w
            .models
            .iter()
            .map(|m| format!("{}:{}", m.name, m.version))
            .collect();
        let memory = w.gpu_memory_bytes.map_or("-".to_string(), |b| {
            format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
        });
        out.push_str(&format!(
            "{:<20} {:<30} {:>11} {:<16} {:>9} {}\n",
            w.worker,
            models.join(","),
            format!("{}/{}", w.free_slots, w.slots),
            w.devices.join(","),
            if w.accepting { "yes" } else { "no" },
            memory
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::worker::ModelInfo;

    #[test]
    fn workers_table_lists_each_worker() {
        let hb = Heartbeat {
            v: 1,
            worker: "worker-0".into(),
            models: vec![
                ModelInfo {
                    name: "mlp".into(),
                    version: "1".into(),
                    max_batch_size: 64,
                    inputs: vec![],
                    batch_ms: None,
                },
                ModelInfo {
                    name: "pair".into(),
                    version: "2".into(),
                    max_batch_size: 8,
                    inputs: vec![],
                    batch_ms: None,
                },
            ],
            slots: 128,
            free_slots: 120,
            devices: vec!["cuda:0".into()],
            gpu_memory_bytes: Some(3 << 20),
            accepting: false,
            sent_at_ms: 0,
        };
        let table = workers_table(&[hb], Duration::from_millis(2500));
        assert!(
            table.starts_with("workers heard within 2.5s: 1\n"),
            "{table}"
        );
        let row = table.lines().nth(2).unwrap();
        for part in [
            "worker-0",
            "mlp:1,pair:2",
            "120/128",
            "cuda:0",
            "no",
            "3.0 MiB",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert_eq!(consumer_name(Priority::P2), "jetinfer-dispatch-p2");
    }
}
