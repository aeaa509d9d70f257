//! `jetinfer chaos`: the fault suite (cases 1–16 of reliability-cases.md) on real
//! processes, one scenario after another, with a table of the figures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jetinfer_devkit::chaos::{self, ChaosOptions, Report, SCENARIOS};

#[derive(clap::Args, Debug)]
pub struct ChaosArgs {
    /// Scenarios to run (case numbers); all when absent.
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<u32>,
    /// Load jobs per scenario.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Publish rate, jobs per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// How long Redis stays unavailable in case 7, seconds.
    #[arg(long, default_value_t = 30)]
    pub redis_outage_s: u64,
    /// Keep every process log under this folder (`case-N/`).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Also write the reports as JSON to FILE; `--json` alone prints them on stdout
    /// instead of the table.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
}

/// Prints a line on stdout, or on stderr when stdout carries the JSON reports.
macro_rules! say {
    ($quiet:expr, $($arg:tt)*) => {
        if $quiet { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if args.list {
        if to_stdout {
            let list: Vec<_> = SCENARIOS
                .iter()
                .map(|(case, name)| serde_json::json!({ "case": case, "name": name }))
                .collect();
            println!("{}", serde_json::json!({ "scenarios": list }));
            return Ok(ExitCode::SUCCESS);
        }
        for (case, name) in SCENARIOS {
            println!("{case:>3}  {name}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = ChaosOptions {
        jobs: args.jobs,
        rate: args.rate,
        redis_outage: Duration::from_secs(args.redis_outage_s),
        log_dir: args.log_dir.clone(),
    };
    let cases: Vec<u32> = if args.cases.is_empty() {
        SCENARIOS.iter().map(|(c, _)| *c).collect()
    } else {
        args.cases.clone()
    };
    let mut reports: Vec<Report> = Vec::new();
    say!(to_stdout, "{}", Report::header());
    for case in cases {
        let report = chaos::run(case, &opts).await?;
        say!(to_stdout, "{}", report.row());
        for c in report.checks.iter() {
            say!(
                to_stdout,
                "      {} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.what
            );
        }
        if !report.errors.is_empty() {
            say!(
                to_stdout,
                "      error codes among load jobs: {:?}",
                report.errors
            );
        }
        reports.push(report);
    }
    match &args.json {
        Some(_) if to_stdout => println!("{}", serde_json::to_string(&reports)?),
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?,
        None => {}
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    say!(to_stdout, "{} scenario(s), {failed} failed", reports.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
