//! What the demo tells the person watching: an [`Event`] at each step and a progress bar
//! per phase, both through an [`Observer`].

use std::path::Path;

use indicatif::ProgressBar;

use super::report::Row;

/// One step of the demo.
#[derive(Debug)]
pub enum Event<'a> {
    /// The run is planned: its id, the job count, the models and the priority weights.
    Started {
        run: &'a str,
        jobs: usize,
        models: &'a [&'a str],
        mix: [u32; 3],
    },
    /// Both servers were given: the demo uses them.
    UsingRunningStack {
        nats_url: &'a str,
        redis_url: &'a str,
    },
    /// The local stack is starting.
    StackStarting { workers: usize, log_dir: &'a Path },
    /// The local stack is ready.
    StackReady {
        secs: f64,
        nats_url: &'a str,
        redis_url: &'a str,
    },
    /// Every job was published or refused.
    Published {
        planned: usize,
        refused: usize,
        secs: f64,
        first_refusal: Option<&'a str>,
    },
    /// Result polling ended.
    Collected {
        present: usize,
        expected: usize,
        secs: f64,
    },
    /// The table per priority and examples of failures.
    Report {
        rows: &'a [Row],
        failures: &'a [String],
    },
    /// The run failed and a process of the local stack is no longer running.
    StackTrouble(&'a crate::local::LocalError),
    /// The run failed: where the local stack's logs are.
    StackLogs(&'a Path),
}

/// Receives the demo's events and draws its progress.
pub trait Observer: Sync {
    fn event(&self, event: Event<'_>);

    /// A progress bar for the `what` phase (`publish`, `results`), `len` jobs long.
    fn progress(&self, what: &str, len: u64) -> ProgressBar {
        let _ = (what, len);
        ProgressBar::hidden()
    }
}
