//! `jetinfer-worker`: parse configuration, start logging, serve until SIGTERM/Ctrl-C.

use clap::Parser;
use jetinfer_worker::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jetinfer_client::logging::init();
    let config = Config::parse();
    let shutdown = CancellationToken::new();
    tokio::spawn(jetinfer_client::logging::cancel_on_signal(shutdown.clone()));
    jetinfer_worker::run(config, shutdown).await
}
