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
    /// Also write the reports as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    if args.list {
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
    println!("{}", Report::header());
    for case in cases {
        let report = chaos::run(case, &opts).await?;
        println!("{}", report.row());
        for c in report.checks.iter() {
            println!("      {} {}", if c.ok { "ok  " } else { "FAIL" }, c.what);
        }
        if !report.errors.is_empty() {
            println!("      error codes among load jobs: {:?}", report.errors);
        }
        reports.push(report);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!("{} scenario(s), {failed} failed", reports.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
