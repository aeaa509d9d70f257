//! What a benchmark tells the person watching while it runs: an [`Event`] at each step
//! and a progress bar per measured run, both through an [`Observer`].

use std::path::Path;

use indicatif::ProgressBar;

use super::load::Load;

/// One step of a benchmark.
#[derive(Debug)]
pub enum Event<'a> {
    /// The run is set up: its id, model, offered load and window.
    Started {
        run_id: &'a str,
        model: &'a str,
        models: &'a Path,
        load: &'a Load,
        duration_s: f64,
        warmup_s: f64,
        storage: &'a str,
    },
    /// The ceiling loop is about to run this command.
    CeilingCommand {
        worker: &'a Path,
        model: &'a str,
        batch: u32,
        seconds: f64,
    },
    /// What the ceiling loop printed.
    Ceiling(&'a serde_json::Value),
    /// A system's stack is starting.
    StackStarting { system: &'a str, log_dir: &'a Path },
    /// A system's stack is up: the servers its run uses (started for it, or the running
    /// stack of `--use-running`).
    StackReady {
        system: &'a str,
        nats_url: &'a str,
        redis_url: &'a str,
        /// True when these are servers of a running stack, not started for this run.
        running: bool,
    },
    /// A system's run is measured.
    Measured { system: &'a str, secs: f64 },
    /// Jobs of a system's run got no result (or none did).
    Missing {
        system: &'a str,
        missing: u64,
        log_dir: &'a Path,
    },
}

/// Receives a benchmark's events and draws its progress.
pub trait Observer: Sync {
    fn event(&self, event: Event<'_>);

    /// A progress bar for `system`'s run, `ticks` long (tenths of a second of load).
    fn progress(&self, system: &str, ticks: u64) -> ProgressBar {
        let _ = (system, ticks);
        ProgressBar::hidden()
    }
}
