//! Which job the demo sends when: priorities interleaved in the requested mix, models in
//! turn, and each model's golden samples in a shuffled cycle (so the dynamic-length sets
//! of a model arrive mixed, as real traffic would).

use jetinfer_schemas::Priority;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// One job to publish: its id, class, and which golden sample it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedJob {
    pub id: String,
    pub priority: Priority,
    /// Index into the golden models.
    pub model: usize,
    /// Index into that model's samples.
    pub sample: usize,
}

/// Plans `jobs` jobs with ids `demo-<run>-<n>`; `samples[m]` is model m's sample count
/// (each at least 1).
pub fn plan(
    run: &str,
    jobs: usize,
    mix: [u32; 3],
    samples: &[usize],
    seed: u64,
) -> Vec<PlannedJob> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let orders: Vec<Vec<usize>> = samples
        .iter()
        .map(|&n| {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            order
        })
        .collect();
    let mut used = vec![0usize; samples.len()];
    let priorities = interleave(jobs, mix);
    (0..jobs)
        .map(|n| {
            let model = n % samples.len();
            let sample = orders[model][used[model] % orders[model].len()];
            used[model] += 1;
            PlannedJob {
                id: format!("demo-{run}-{n}"),
                priority: priorities[n],
                model,
                sample,
            }
        })
        .collect()
}

/// Spreads priorities so that every prefix of the sequence is as close to the mix as
/// possible (largest deficit first), rather than sending all P0 jobs first.
pub fn interleave(jobs: usize, mix: [u32; 3]) -> Vec<Priority> {
    let total: i128 = mix.iter().map(|&w| w as i128).sum::<i128>().max(1);
    let mut given = [0i128; 3];
    (0..jobs)
        .map(|n| {
            // deficit_p * total = mix_p * (n + 1) - given_p * total, compared in integers.
            let deficit = |p: usize| mix[p] as i128 * (n as i128 + 1) - given[p] * total;
            let p =
                (0..3)
                    .filter(|&p| mix[p] > 0)
                    .fold(None, |best: Option<usize>, p| match best {
                        Some(b) if deficit(b) >= deficit(p) => Some(b),
                        _ => Some(p),
                    });
            let p = p.unwrap_or(1);
            given[p] += 1;
            Priority::ALL[p]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(ps: &[Priority]) -> [usize; 3] {
        let mut c = [0; 3];
        for p in ps {
            c[p.rank()] += 1;
        }
        c
    }

    #[test]
    fn interleave_follows_the_mix_in_every_prefix() {
        let ps = interleave(1200, [20, 30, 50]);
        assert_eq!(counts(&ps), [240, 360, 600]);
        for n in [10, 50, 333] {
            let c = counts(&ps[..n]);
            for (p, w) in [20, 30, 50].iter().enumerate() {
                let want = n as f64 * *w as f64 / 100.0;
                assert!((c[p] as f64 - want).abs() <= 1.0, "prefix {n}: {c:?}");
            }
        }
        assert_eq!(counts(&interleave(7, [0, 0, 1])), [0, 0, 7]);
        assert_eq!(
            counts(&interleave(3, [0, 0, 0])),
            [0, 3, 0],
            "no weights: all P1"
        );
    }

    #[test]
    fn plan_cycles_models_and_every_sample() {
        let jobs = plan("r", 40, [1, 1, 1], &[4, 16], 7);
        assert_eq!(jobs[0].id, "demo-r-0");
        assert_eq!(jobs.iter().filter(|j| j.model == 0).count(), 20);
        let mut seen: Vec<usize> = jobs
            .iter()
            .filter(|j| j.model == 1)
            .map(|j| j.sample)
            .take(16)
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..16).collect::<Vec<_>>(),
            "every sample once per cycle"
        );
        assert_eq!(
            jobs,
            plan("r", 40, [1, 1, 1], &[4, 16], 7),
            "deterministic for a seed"
        );
    }
}
