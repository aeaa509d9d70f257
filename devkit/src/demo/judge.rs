//! Judging one job: its golden outputs against what came back, as an [`Outcome`]; and a
//! few examples of each kind of failure, so a red run says why.

use jetinfer_schemas::{Priority, Status, Tensor};

use super::collect::Seen;
use super::plan::PlannedJob;
use super::publish::Sent;
use super::report::{Outcome, Verdict};
use crate::golden::compare;

/// Tolerances of the golden comparison.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

/// The outcome of one job: not published, missing, failed, wrong or correct.
pub fn judge(
    expected: &[Tensor<'static>],
    priority: Priority,
    sent: &Sent,
    seen: Option<Seen>,
    tol: Tolerance,
) -> Outcome {
    let mut outcome = Outcome {
        priority,
        verdict: Verdict::Missing,
        published_ms: sent.published_ms,
        completed_ms: None,
        server_ms: None,
        polled_ms: None,
        batch_size: 0,
        cached: false,
    };
    if let Some(e) = &sent.error {
        outcome.verdict = Verdict::NotPublished(e.clone());
        return outcome;
    }
    let Some(seen) = seen else { return outcome };
    let result = match seen.result {
        Ok(r) => r,
        Err(e) => {
            outcome.verdict = Verdict::Failed {
                code: "undecodable".into(),
                message: e.to_string(),
            };
            return outcome;
        }
    };
    outcome.completed_ms = Some(result.completed_at_ms);
    outcome.server_ms = Some(result.timings.total_ms);
    outcome.polled_ms = Some(
        seen.seen_at
            .saturating_duration_since(sent.published_at)
            .as_secs_f64()
            * 1000.0,
    );
    outcome.batch_size = result.timings.batch_size;
    outcome.cached = result.cached;
    outcome.verdict = match result.status {
        Status::Ok => match compare(expected, &result.outputs, tol.atol, tol.rtol) {
            Ok(()) => Verdict::Correct,
            Err(why) => Verdict::Wrong(why.to_string()),
        },
        Status::Error | Status::Expired => {
            let code = result
                .error_code()
                .map_or(result.status.as_str(), |c| c.as_str())
                .to_string();
            let message = result.error.map(|e| e.message).unwrap_or_default();
            Verdict::Failed { code, message }
        }
    };
    outcome
}

/// Up to five examples of each kind of failure, as `  <id> (<priority>): <what>` lines.
pub fn failure_examples(plan: &[PlannedJob], outcomes: &[Outcome]) -> Vec<String> {
    const SHOW: usize = 5;
    let mut shown = [0usize; 4];
    let mut lines = Vec::new();
    for (planned, o) in plan.iter().zip(outcomes) {
        let (kind, text) = match &o.verdict {
            Verdict::Correct => continue,
            Verdict::Wrong(why) => (0, format!("wrong: {why}")),
            Verdict::Failed { code, message } => (1, format!("{code}: {message}")),
            Verdict::NotPublished(e) => (2, format!("not published: {e}")),
            Verdict::Missing => (3, "no result".to_string()),
        };
        if shown[kind] < SHOW {
            shown[kind] += 1;
            lines.push(format!("  {} ({}): {text}", planned.id, planned.priority));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_schemas::JobResult;
    use std::time::Instant;

    fn sent(error: Option<&str>) -> Sent {
        Sent {
            published_ms: 1,
            published_at: Instant::now(),
            error: error.map(str::to_string),
        }
    }

    const TOL: Tolerance = Tolerance {
        atol: 1e-4,
        rtol: 1e-3,
    };

    #[test]
    fn judge_tells_correct_wrong_missing_and_refused_apart() {
        let expected = vec![Tensor::from_f32(vec![2], &[1.0, 2.0])];
        let seen = |v: &[f32]| Seen {
            result: Ok(JobResult::ok(
                "j",
                "m",
                "1",
                vec![Tensor::from_f32(vec![2], v)],
            )),
            seen_at: Instant::now(),
        };
        let p = Priority::P1;
        let ok = judge(&expected, p, &sent(None), Some(seen(&[1.0, 2.0])), TOL);
        assert_eq!(ok.verdict, Verdict::Correct);
        let wrong = judge(&expected, p, &sent(None), Some(seen(&[1.0, 3.0])), TOL);
        assert!(matches!(wrong.verdict, Verdict::Wrong(_)));
        let missing = judge(&expected, p, &sent(None), None, TOL);
        assert_eq!(missing.verdict, Verdict::Missing);
        let refused = judge(&expected, p, &sent(Some("full")), None, TOL);
        assert_eq!(refused.verdict, Verdict::NotPublished("full".into()));
        let plan: Vec<PlannedJob> = (0..8)
            .map(|n| PlannedJob {
                id: format!("j{n}"),
                priority: p,
                model: 0,
                sample: 0,
            })
            .collect();
        let outcomes = vec![missing; 8];
        let lines = failure_examples(&plan, &outcomes);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "  j0 (p1): no result");
    }
}
