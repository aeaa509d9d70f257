//! The command-line flags every jetinfer service shares for its logs, metrics and runtime
//! ([`OpsArgs`], flattened into each binary's configuration), and the log format.

use std::net::SocketAddr;

/// How log lines are written on stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; job lines carry their span's fields, `trace_id` included.
    #[default]
    Text,
    /// One JSON object per line, with the fields of every span the line is in
    /// (`spans`), so each job line carries its `trace_id`.
    Json,
}

/// Observability flags shared by the dispatcher and the worker.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OpsArgs {
    /// Log format on stderr.
    #[arg(long, env = "JETINFER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g.
    /// 0.0.0.0:9464. Port 0 picks a free port; the bound address is logged at start
    /// ("serving metrics and health"). Absent: no HTTP endpoint and no metrics recorder.
    #[arg(long, env = "JETINFER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Parse the configuration, print it (credentials redacted) and exit without
    /// connecting to anything. Used to check deployment files against the binary.
    #[arg(long)]
    pub check_config: bool,
    /// Threads of the async runtime (NATS, Redis, scheduling; a worker's forward passes run
    /// on their own device threads). 1 is a current-thread runtime: no job is handed from
    /// thread to thread, which costs the least CPU per job and the least latency at low
    /// load; more carry more jobs a second on a many-core host. Default: 1 on a host of one
    /// or two cores, one per core above. Measured (docs/benchmarks.md, "Runtime threads"):
    /// on the 2-core machine 1 thread beats 2 in latency, CPU per job and jobs/s; on the
    /// 16-core H100 host 1 thread halves the CPU per trivial job, but MiniLM over four
    /// partitions reaches 0.55 of the GPU's ceiling with 1, 0.64 with 2, 0.62 with 8 and
    /// 0.68-0.69 with 16.
    #[arg(long, env = "JETINFER_THREADS")]
    pub threads: Option<usize>,
}

impl OpsArgs {
    /// The tokio runtime sized by `--threads`: one thread is a current-thread runtime (every
    /// task on the thread that runs the service, so handing a job from task to task wakes
    /// no other thread), more are a multi-threaded one.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = if cores <= 2 { 1 } else { cores };
        match self.threads.unwrap_or(default).max(1) {
            1 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            threads => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        ops: OpsArgs,
    }

    #[test]
    fn ops_flags_parse() {
        let c = Cli::try_parse_from([
            "x",
            "--log-format",
            "json",
            "--metrics-addr",
            "127.0.0.1:0",
            "--check-config",
        ])
        .unwrap();
        assert_eq!(c.ops.log_format, LogFormat::Json);
        assert_eq!(c.ops.metrics_addr.unwrap().port(), 0);
        assert!(c.ops.check_config);
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}
