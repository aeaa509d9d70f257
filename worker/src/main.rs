//! `jetinfer-worker`: parse configuration, start logging, serve until SIGTERM/Ctrl-C.

use clap::Parser;
use jetinfer_worker::Config;
use tokio_util::sync::CancellationToken;

/// mimalloc: less CPU per job than glibc's allocator (jetinfer_telemetry::Allocator says why).
#[global_allocator]
static ALLOC: jetinfer_telemetry::Allocator = jetinfer_telemetry::Allocator;

fn main() -> anyhow::Result<()> {
    // `jetinfer-worker ceiling …`: the model alone in a loop (for `jetinfer bench --ceiling`).
    if std::env::args().nth(1).as_deref() == Some("ceiling") {
        return Ok(jetinfer_worker::ceiling::main_from_args(
            std::env::args().skip(2),
        )?);
    }
    let config = Config::parse();
    if config.ops.check_config {
        config.connect.nats().check()?;
        // `ConnectArgs` hides credentials in its `Debug` form.
        println!("{config:?}");
        return Ok(());
    }
    config.ops.runtime()?.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let telemetry = jetinfer_telemetry::init("jetinfer-worker", config.ops.log_format, "info");
    let shutdown = CancellationToken::new();
    tokio::spawn(jetinfer_telemetry::signal::cancel_on_signal(
        shutdown.clone(),
    ));
    let result = jetinfer_worker::run(config, shutdown).await;
    telemetry.shutdown().await;
    Ok(result?)
}
