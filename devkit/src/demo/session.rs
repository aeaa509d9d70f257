//! The demo end to end: start a local stack unless both servers are given, publish golden
//! jobs across P0/P1/P2, poll every result, check each against the golden outputs, and
//! report per priority.

use std::future::Future;
use std::time::Instant;

use jetinfer_client::{Client, StoreConfig};
use jetinfer_schemas::Keys;

use super::events::{Event, Observer};
use super::judge::{failure_examples, judge};
use super::options::DemoOptions;
use super::{collect, plan, publish, report, DemoError};
use crate::golden::{Golden, GoldenModel, MANIFEST};
use crate::local::{repo_root, resolve_path, LocalStack};

/// Runs the demo; true when every result is present and right. The local stack is
/// stopped gracefully at the end, also when `interrupt` completes first (Ctrl-C).
pub async fn run(
    opts: &DemoOptions,
    observer: &dyn Observer,
    interrupt: impl Future<Output = ()>,
) -> Result<bool, DemoError> {
    let models = golden_models(opts)?;
    let run = format!("{:08x}", rand::random::<u32>());
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    observer.event(Event::Started {
        run: &run,
        jobs: opts.jobs,
        models: &names,
        mix: opts.mix,
    });
    // Start what was not given: both URLs given means "use the running stack".
    let mut stack = match (&opts.nats_url, &opts.redis_url) {
        (Some(nats_url), Some(redis_url)) => {
            observer.event(Event::UsingRunningStack {
                nats_url,
                redis_url,
            });
            None
        }
        _ => Some(start_stack(opts, &run, observer).await?),
    };
    let (nats_url, redis_url) = match (&stack, &opts.nats_url, &opts.redis_url) {
        (Some(s), _, _) => (s.nats_url().to_string(), s.redis_url().to_string()),
        (None, Some(n), Some(r)) => (n.clone(), r.clone()),
        (None, _, _) => unreachable!("a stack is started unless both servers are given"),
    };
    let store = StoreConfig {
        keys: Keys::new(&opts.key_prefix),
        ..StoreConfig::new(&redis_url)
    };
    let outcome = tokio::select! {
        outcome = exercise(&nats_url, &store, opts, &run, &models, observer) => outcome,
        _ = interrupt => Err(DemoError::Interrupted),
    };
    if let Some(stack) = stack.as_mut() {
        if !matches!(outcome, Ok(true)) {
            if let Err(e) = stack.check_alive("the demo ran") {
                observer.event(Event::StackTrouble(&e));
            }
            observer.event(Event::StackLogs(stack.log_dir()));
        }
        stack.stop();
    }
    outcome
}

/// The golden models that have samples.
fn golden_models(opts: &DemoOptions) -> Result<Vec<GoldenModel>, DemoError> {
    let golden_dir = resolve_path(&opts.golden);
    let golden = Golden::load(&golden_dir)?;
    let models: Vec<GoldenModel> = golden
        .models()
        .iter()
        .filter(|m| !m.samples.is_empty())
        .cloned()
        .collect();
    if models.is_empty() {
        return Err(DemoError::NoSamples(golden_dir.join(MANIFEST)));
    }
    Ok(models)
}

/// Starts nats-server and redis-server (unless given), a dispatcher and the workers.
async fn start_stack(
    opts: &DemoOptions,
    run: &str,
    observer: &dyn Observer,
) -> Result<LocalStack, DemoError> {
    let log_dir = match &opts.log_dir {
        Some(d) => d.clone(),
        None => repo_root()?.join("target/demo-logs").join(run),
    };
    let given = |args: &[String]| {
        args.iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut builder = LocalStack::builder()
        .workers(opts.workers)
        .models(resolve_path(&opts.models))
        .dispatcher_args(given(&opts.dispatcher_args))
        .worker_args(given(&opts.worker_args))
        // The processes must use the same keys as this client.
        .env("JETINFER_KEY_PREFIX", &opts.key_prefix)
        .log_dir(&log_dir)
        .timeout(opts.startup_timeout);
    if let Some(url) = &opts.nats_url {
        builder = builder.nats_url(url);
    }
    if let Some(url) = &opts.redis_url {
        builder = builder.redis_url(url);
    }
    observer.event(Event::StackStarting {
        workers: opts.workers,
        log_dir: &log_dir,
    });
    let started = Instant::now();
    let stack = builder.start().await.map_err(DemoError::Stack)?;
    observer.event(Event::StackReady {
        secs: started.elapsed().as_secs_f64(),
        nats_url: stack.nats_url(),
        redis_url: stack.redis_url(),
    });
    Ok(stack)
}

/// Publishes, collects, checks and reports; true when every result is present and right.
async fn exercise(
    nats_url: &str,
    store: &StoreConfig,
    opts: &DemoOptions,
    run: &str,
    models: &[GoldenModel],
    observer: &dyn Observer,
) -> Result<bool, DemoError> {
    let client = Client::connect(nats_url, store)
        .await
        .map_err(|source| DemoError::Connect {
            nats_url: nats_url.to_string(),
            redis_url: store.url.clone(),
            source,
        })?;
    client
        .store()
        .ping()
        .await
        .map_err(|source| DemoError::Redis {
            url: store.url.clone(),
            source,
        })?;
    let counts: Vec<usize> = models.iter().map(|m| m.samples.len()).collect();
    let plan = plan::plan(run, opts.jobs, opts.mix, &counts, rand::random());

    let bar = observer.progress("publish", plan.len() as u64);
    let started = Instant::now();
    let sent = publish::publish_all(&client, &plan, models, opts.cache, opts.in_flight, &bar).await;
    bar.finish_and_clear();
    let refused = sent.iter().filter(|s| s.error.is_some()).count();
    observer.event(Event::Published {
        planned: plan.len(),
        refused,
        secs: started.elapsed().as_secs_f64(),
        first_refusal: sent.iter().find_map(|s| s.error.as_deref()),
    });

    let ids: Vec<String> = plan.iter().map(|p| p.id.clone()).collect();
    let wanted: Vec<bool> = sent.iter().map(|s| s.error.is_none()).collect();
    let bar = observer.progress("results", (plan.len() - refused) as u64);
    let deadline = Instant::now() + opts.results_timeout();
    let seen = collect::collect(client.store(), &ids, &wanted, deadline, &bar).await;
    bar.finish_and_clear();
    observer.event(Event::Collected {
        present: seen.iter().filter(|s| s.is_some()).count(),
        expected: plan.len() - refused,
        secs: started.elapsed().as_secs_f64(),
    });

    let outcomes: Vec<report::Outcome> = plan
        .iter()
        .zip(&sent)
        .zip(seen)
        .map(|((planned, sent), seen)| {
            let expected = &models[planned.model].samples[planned.sample].outputs;
            judge(expected, planned.priority, sent, seen, opts.tolerance)
        })
        .collect();
    let rows = report::summarize(&outcomes);
    let failures = failure_examples(&plan, &outcomes);
    observer.event(Event::Report {
        rows: &rows,
        failures: &failures,
    });
    Ok(rows.last().is_some_and(|all| all.all_correct()))
}
