//! The offered load of a run: open loop (jobs per second per priority, fixed or Poisson
//! arrivals) or closed loop (a number of jobs in flight), and how the command-line choices
//! map to one.

/// How arrivals are spaced in an open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    Fixed,
    Poisson,
}

/// The offered load.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Jobs per second per priority (P0, P1, P2), independent of completions.
    Open { rates: [f64; 3], arrival: Arrival },
    /// `concurrency` jobs in flight at all times; priority drawn by `mix` weights.
    Closed { concurrency: usize, mix: [u32; 3] },
}

/// The load as asked for: a total rate split by `mix`, rates per priority, or a number in
/// flight; none of them means a closed loop of 4 × the model's largest batch.
#[derive(Debug, Clone, Copy)]
pub struct LoadChoice {
    pub rate: Option<f64>,
    pub rates: Option<[f64; 3]>,
    pub concurrency: Option<usize>,
    pub arrival: Arrival,
    /// Priority weights P0, P1, P2 (for `rate` and the closed loop).
    pub mix: [u32; 3],
}

impl LoadChoice {
    /// The load for a model whose largest batch is `max_batch_size`.
    pub fn resolve(&self, max_batch_size: u32) -> Load {
        match (self.rate, self.rates, self.concurrency) {
            (Some(rate), _, _) => {
                let total: f64 = self.mix.iter().map(|&w| w as f64).sum::<f64>().max(1.0);
                Load::Open {
                    rates: self.mix.map(|w| rate * w as f64 / total),
                    arrival: self.arrival,
                }
            }
            (_, Some(rates), _) => Load::Open {
                rates,
                arrival: self.arrival,
            },
            (_, _, c) => Load::Closed {
                concurrency: c.unwrap_or(4 * max_batch_size as usize),
                mix: self.mix,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice() -> LoadChoice {
        LoadChoice {
            rate: None,
            rates: None,
            concurrency: None,
            arrival: Arrival::Fixed,
            mix: [1, 3, 0],
        }
    }

    #[test]
    fn a_total_rate_is_split_by_the_mix() {
        let c = LoadChoice {
            rate: Some(100.0),
            ..choice()
        };
        let Load::Open { rates, arrival } = c.resolve(8) else {
            panic!("open loop expected")
        };
        assert_eq!(rates, [25.0, 75.0, 0.0]);
        assert_eq!(arrival, Arrival::Fixed);
    }

    #[test]
    fn rates_per_priority_are_taken_as_given() {
        let c = LoadChoice {
            rates: Some([1.0, 2.0, 3.0]),
            ..choice()
        };
        assert!(matches!(
            c.resolve(8),
            Load::Open {
                rates: [1.0, 2.0, 3.0],
                ..
            }
        ));
    }

    #[test]
    fn the_default_is_a_closed_loop_of_four_batches() {
        assert!(matches!(
            choice().resolve(8),
            Load::Closed {
                concurrency: 32,
                mix: [1, 3, 0]
            }
        ));
        let c = LoadChoice {
            concurrency: Some(5),
            ..choice()
        };
        assert!(matches!(c.resolve(8), Load::Closed { concurrency: 5, .. }));
    }
}
