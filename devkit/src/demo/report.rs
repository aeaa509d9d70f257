//! The demo's verdict: per priority, how many results were right, wrong, failed or
//! missing; latency percentiles; throughput; batch sizes. Pure functions of the outcomes.

use std::collections::BTreeMap;

use jetinfer_schemas::Priority;

/// What became of one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Status ok and the outputs match the golden ones.
    Correct,
    /// Status ok but the outputs differ (the message says how).
    Wrong(String),
    /// Status error or expired: the error code (counted in the table) and message.
    Failed { code: String, message: String },
    /// JetStream refused the publish.
    NotPublished(String),
    /// No result within the timeout.
    Missing,
}

/// One job's outcome and timings (milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub priority: Priority,
    pub verdict: Verdict,
    /// Client wall clock before publishing.
    pub published_ms: u64,
    /// The result's `completed_at_ms`, when there is a result.
    pub completed_ms: Option<u64>,
    /// The result's `timings.total_ms` (JetStream publish → result written).
    pub server_ms: Option<f64>,
    /// Client publish → first seen by polling (coarse).
    pub polled_ms: Option<f64>,
    /// The result's `timings.batch_size` (0 when no model ran).
    pub batch_size: u32,
    pub cached: bool,
}

/// One line of the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub label: String,
    pub jobs: usize,
    pub correct: usize,
    pub wrong: usize,
    pub missing: usize,
    pub not_published: usize,
    pub errors: BTreeMap<String, usize>,
    pub cached: usize,
    /// Sorted.
    pub e2e_ms: Vec<f64>,
    pub server_ms: Vec<f64>,
    pub polled_ms: Vec<f64>,
    pub batch_sizes: Vec<u32>,
    pub first_published_ms: Option<u64>,
    pub last_completed_ms: Option<u64>,
    pub results: usize,
}

impl Row {
    /// Results per second, from the first publish to the last completion of this row.
    pub fn jobs_per_s(&self) -> Option<f64> {
        let span = self
            .last_completed_ms?
            .saturating_sub(self.first_published_ms?);
        (self.results > 0).then(|| self.results as f64 / (span.max(1) as f64 / 1000.0))
    }

    /// Mean size of the batches that ran these jobs (cache hits and errors excluded).
    pub fn mean_batch(&self) -> Option<f64> {
        let ran: Vec<u32> = self
            .batch_sizes
            .iter()
            .copied()
            .filter(|&b| b > 0)
            .collect();
        (!ran.is_empty()).then(|| ran.iter().map(|&b| b as f64).sum::<f64>() / ran.len() as f64)
    }

    /// Every job is present and correct.
    pub fn all_correct(&self) -> bool {
        self.correct == self.jobs
    }
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100); None when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One row per priority that has jobs, then the total.
pub fn summarize(outcomes: &[Outcome]) -> Vec<Row> {
    let mut rows: Vec<Row> = Priority::ALL
        .iter()
        .map(|p| row(p.as_str(), outcomes.iter().filter(|o| o.priority == *p)))
        .filter(|r| r.jobs > 0)
        .collect();
    rows.push(row("all", outcomes.iter()));
    rows
}

fn row<'a>(label: &str, outcomes: impl Iterator<Item = &'a Outcome>) -> Row {
    let mut r = Row {
        label: label.to_string(),
        ..Row::default()
    };
    for o in outcomes {
        r.jobs += 1;
        r.first_published_ms = Some(
            r.first_published_ms
                .map_or(o.published_ms, |f| f.min(o.published_ms)),
        );
        match &o.verdict {
            Verdict::Correct => r.correct += 1,
            Verdict::Wrong(_) => r.wrong += 1,
            Verdict::Failed { code, .. } => *r.errors.entry(code.clone()).or_default() += 1,
            Verdict::NotPublished(_) => r.not_published += 1,
            Verdict::Missing => r.missing += 1,
        }
        if let Some(done) = o.completed_ms {
            r.results += 1;
            r.last_completed_ms = Some(r.last_completed_ms.map_or(done, |l| l.max(done)));
            r.cached += o.cached as usize;
            r.batch_sizes.push(o.batch_size);
            // Latency of served jobs only: a fast error would flatter the percentiles.
            if o.verdict == Verdict::Correct || matches!(o.verdict, Verdict::Wrong(_)) {
                r.e2e_ms.push(done.saturating_sub(o.published_ms) as f64);
                r.server_ms.extend(o.server_ms);
                r.polled_ms.extend(o.polled_ms);
            }
        }
    }
    for v in [&mut r.e2e_ms, &mut r.server_ms, &mut r.polled_ms] {
        v.sort_by(f64::total_cmp);
    }
    r
}

/// The table, then a legend of the latency columns.
pub fn render(rows: &[Row]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    let mut out = format!(
        "{:<4} {:>6} {:>6} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>6}  {}\n",
        "prio",
        "jobs",
        "ok",
        "wrong",
        "missing",
        "e2e p50",
        "e2e p99",
        "srv p50",
        "srv p99",
        "poll p50",
        "poll p99",
        "jobs/s",
        "batch",
        "cached",
        "errors"
    );
    for r in rows {
        let mut errors: Vec<String> = r
            .errors
            .iter()
            .map(|(code, n)| format!("{code}:{n}"))
            .collect();
        if r.not_published > 0 {
            errors.push(format!("not_published:{}", r.not_published));
        }
        out.push_str(&format!(
            "{:<4} {:>6} {:>6} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>6}  {}\n",
            r.label,
            r.jobs,
            r.correct,
            r.wrong,
            r.missing,
            ms(percentile(&r.e2e_ms, 50.0)),
            ms(percentile(&r.e2e_ms, 99.0)),
            ms(percentile(&r.server_ms, 50.0)),
            ms(percentile(&r.server_ms, 99.0)),
            ms(percentile(&r.polled_ms, 50.0)),
            ms(percentile(&r.polled_ms, 99.0)),
            r.jobs_per_s().map_or("-".to_string(), |x| format!("{x:.0}")),
            r.mean_batch().map_or("-".to_string(), |x| format!("{x:.1}")),
            r.cached,
            if errors.is_empty() { "-".to_string() } else { errors.join(" ") },
        ));
    }
    out.push_str(
        "latency in ms, over results with status ok:\n  \
         e2e  = result completed_at_ms - client clock at publish (wall clock; the headline figure)\n  \
         srv  = timings.total_ms reported by the worker (JetStream publish -> result stored)\n  \
         poll = client publish -> first seen by MGET polling (coarse: includes the poll interval)\n\
         jobs/s = results / (last completion - first publish) of the row; batch = mean timings.batch_size of jobs a model ran\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 51.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn outcome(
        priority: Priority,
        verdict: Verdict,
        published: u64,
        done: Option<u64>,
        batch: u32,
    ) -> Outcome {
        Outcome {
            priority,
            verdict,
            published_ms: published,
            completed_ms: done,
            server_ms: done.map(|d| (d - published) as f64 - 1.0),
            polled_ms: done.map(|d| (d - published) as f64 + 5.0),
            batch_size: batch,
            cached: batch == 0 && done.is_some(),
        }
    }

    #[test]
    fn rows_count_latency_throughput_and_batches() {
        let outcomes = vec![
            outcome(Priority::P0, Verdict::Correct, 1000, Some(1010), 4),
            outcome(Priority::P0, Verdict::Correct, 1000, Some(1030), 8),
            outcome(
                Priority::P0,
                Verdict::Failed {
                    code: "overloaded".into(),
                    message: "full".into(),
                },
                1000,
                Some(1001),
                0,
            ),
            outcome(
                Priority::P2,
                Verdict::Wrong("x".into()),
                1500,
                Some(2000),
                2,
            ),
            outcome(Priority::P2, Verdict::Missing, 1500, None, 0),
            outcome(
                Priority::P2,
                Verdict::NotPublished("full".into()),
                1500,
                None,
                0,
            ),
        ];
        let rows = summarize(&outcomes);
        assert_eq!(
            rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
            ["p0", "p2", "all"]
        );
        let p0 = &rows[0];
        assert_eq!((p0.jobs, p0.correct, p0.errors["overloaded"]), (3, 2, 1));
        assert_eq!(p0.e2e_ms, vec![10.0, 30.0], "errors are not in the latency");
        assert_eq!(p0.jobs_per_s(), Some(100.0), "3 results in 30 ms");
        assert_eq!(p0.mean_batch(), Some(6.0), "0 = no model ran, excluded");
        assert!(!p0.all_correct());
        let p2 = &rows[1];
        assert_eq!(
            (p2.wrong, p2.missing, p2.not_published, p2.results),
            (1, 1, 1, 1)
        );
        let all = &rows[2];
        assert_eq!((all.jobs, all.correct, all.results), (6, 2, 4));
        assert_eq!(all.last_completed_ms, Some(2000));

        let table = render(&rows);
        let p0_line = table.lines().nth(1).unwrap();
        assert!(p0_line.starts_with("p0"), "{table}");
        assert!(p0_line.contains("overloaded:1"), "{p0_line}");
        assert!(
            table.lines().nth(2).unwrap().contains("not_published:1"),
            "{table}"
        );
        assert!(table.contains("e2e  = result completed_at_ms"));
    }
}
