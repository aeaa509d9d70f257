//! `jetinfer`: the command-line client. Parses the command line, sets up logging (stderr,
//! `RUST_LOG`, default `warn` so stdout stays clean) and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, trace export, and runs the subcommand; see
//! [`commands`] for the subcommands.

mod commands;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`jetinfer get x | head`) like other Unix tools,
    // instead of panicking on the next print.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // Exit code 2 means "no result yet" here, so usage errors exit 1 rather than clap's 2.
    let parsed = commands::Cli::command().try_get_matches().and_then(|m| {
        let mut cli = commands::Cli::from_arg_matches(&m)?;
        cli.global.explicit = commands::servers::Explicit::from_matches(&m);
        Ok(cli)
    });
    let args = match parsed {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Logs on stderr (default `warn`); with OTEL_EXPORTER_OTLP_ENDPOINT set, the publish
    // spans of submitted jobs are exported too (the OTLP exporter needs the runtime).
    let telemetry = {
        let _in_runtime = runtime.enter();
        jetinfer_telemetry::init("jetinfer", jetinfer_telemetry::LogFormat::Text, "warn")
    };
    let code = match runtime.block_on(commands::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    };
    runtime.block_on(telemetry.shutdown());
    code
}

/// The error and its causes on one line, skipping a cause that its parent's message
/// already quotes (many error types print their source inline as well as chaining it).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
