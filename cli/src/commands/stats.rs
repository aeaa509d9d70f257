//! `jetinfer stats`: what is queued per priority, and which workers are alive.

use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream;
use jetinfer_connect::streams::partition_count;
use jetinfer_schemas::partitions::{partition_consumer, partition_stream};
use jetinfer_schemas::worker::Heartbeat;
use jetinfer_schemas::Priority;
use serde_json::{json, Value};

use super::heartbeats;
use super::output::OutputArgs;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// How long to listen for worker heartbeats (workers send one per second).
    #[arg(long, env = "JETINFER_STATS_LISTEN_S", default_value_t = 2.5)]
    pub listen_s: f64,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(global: &Global, args: StatsArgs) -> anyhow::Result<ExitCode> {
    let nats = global.connect.nats().connect().await?;
    // Subscribe first so heartbeats sent while the queues are read are not missed.
    let beats = heartbeats::subscribe(&nats).await?;
    let queues = read_queues(&jetstream::new(nats.clone())).await;
    let window = Duration::from_secs_f64(args.listen_s);
    let workers = heartbeats::collect(beats, window).await;
    if args.output.json {
        let workers: Vec<Value> = workers.iter().map(worker_value).collect();
        println!("{}", json!({ "streams": queues, "workers": workers }));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", queues_table(&queues));
    println!();
    print!("{}", workers_table(&workers, window));
    Ok(ExitCode::SUCCESS)
}

/// Each priority's streams' state (one per partition): messages, bytes, and the
/// consumer's pending and unacknowledged counts, or why they could not be read.
async fn read_queues(js: &jetstream::Context) -> Vec<Value> {
    let mut out = Vec::new();
    for p in Priority::ALL {
        for k in 0..partition_count(js, p).await {
            out.push(read_queue(js, p, k).await);
        }
    }
    out
}

/// One partition stream's state, or why it could not be read.
async fn read_queue(js: &jetstream::Context, p: Priority, k: u16) -> Value {
    let name = partition_stream(p, k);
    let mut stream = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(e) => {
            return json!({ "stream": name, "error": format!("not available ({e}); is a dispatcher running?") });
        }
    };
    let (messages, bytes) = match stream.info().await {
        Ok(info) => (info.state.messages, info.state.bytes),
        Err(e) => return json!({ "stream": name, "error": e.to_string() }),
    };
    match stream.consumer_info(&partition_consumer(p, k)).await {
        Ok(info) => json!({
            "stream": name, "messages": messages, "bytes": bytes,
            "pending": info.num_pending, "in_flight": info.num_ack_pending,
        }),
        Err(e) => json!({
            "stream": name, "messages": messages, "bytes": bytes,
            "error": format!("consumer absent ({e})"),
        }),
    }
}

fn queues_table(queues: &[Value]) -> String {
    let mut out = format!(
        "{:<12} {:>10} {:>12} {:>10} {:>10}\n",
        "stream", "messages", "bytes", "pending", "in flight"
    );
    for q in queues {
        let name = q["stream"].as_str().unwrap_or("");
        let n = |k: &str| q[k].as_u64().map_or(String::new(), |v| v.to_string());
        match (q.get("error").and_then(Value::as_str), q.get("messages")) {
            (Some(e), None) => out.push_str(&format!("{name:<12} {e}\n")),
            (Some(e), Some(_)) => out.push_str(&format!(
                "{name:<12} {:>10} {:>12} {e}\n",
                n("messages"),
                n("bytes")
            )),
            (None, _) => out.push_str(&format!(
                "{name:<12} {:>10} {:>12} {:>10} {:>10}\n",
                n("messages"),
                n("bytes"),
                n("pending"),
                n("in_flight")
            )),
        }
    }
    out
}

fn worker_value(w: &Heartbeat) -> Value {
    json!({
        "id": w.worker,
        "models": w.models.iter().map(|m| json!({"name": m.name, "version": m.version})).collect::<Vec<_>>(),
        "slots": w.slots,
        "free_slots": w.free_slots,
        "devices": w.devices,
        "accepting": w.accepting,
        "gpu_memory_bytes": w.gpu_memory_bytes,
    })
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
            load_errors: Vec::new(),
            load: None,
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
        assert_eq!(partition_consumer(Priority::P2, 0), "jetinfer-dispatch-p2");
    }
}
