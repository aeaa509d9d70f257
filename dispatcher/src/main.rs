//! `jetinfer-dispatcher`: parse configuration, start logging, run until SIGTERM/Ctrl-C.

use clap::Parser;
use jetinfer_dispatcher::Config;
use tokio_util::sync::CancellationToken;

/// mimalloc: less CPU per job than glibc's allocator (jetinfer_telemetry::Allocator says why).
#[global_allocator]
static ALLOC: jetinfer_telemetry::Allocator = jetinfer_telemetry::Allocator;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.ops.check_config {
        config.check()?;
        println!("{}", config.redacted());
        return Ok(());
    }
    config.ops.runtime()?.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let telemetry = jetinfer_telemetry::init("jetinfer-dispatcher", config.ops.log_format, "info");
    let shutdown = CancellationToken::new();
    tokio::spawn(jetinfer_telemetry::signal::cancel_on_signal(
        shutdown.clone(),
    ));
    let result = jetinfer_dispatcher::run(config, shutdown).await;
    telemetry.shutdown().await;
    Ok(result?)
}
