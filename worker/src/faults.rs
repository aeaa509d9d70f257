//! Fault injection for the fault suite: makes the real executor path raise the errors
//! libtorch raises (CUDA out of memory, a sticky CUDA error) or hang, on demand.
//!
//! Off by default; enabled with `--inject-faults` (env `JETINFER_INJECT_FAULTS`), a comma
//! list of:
//! - `oom_above=N`: a forward over more than N jobs fails with libtorch's CUDA OOM message;
//! - `sticky_on=V`: a forward over a batch holding a job whose first input value is V fails
//!   with a sticky CUDA error (illegal memory access);
//! - `hang_on=V`: such a forward never returns (for the watchdog);
//! - `exit_after_store=K`: the process aborts right after its K-th result write, before it
//!   replies to the dispatcher (a crash between "stored" and "acked");
//! - `slow_ms=N`: every forward takes N ms longer (batches that are surely still running
//!   when a test unloads their model; warm-up batches are not slowed).
//!
//! The errors go through the same mapping as real libtorch errors, so what the suite sees is
//! what a real OOM or device fault produces.

use jetinfer_schemas::Tensor;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub oom_above: Option<usize>,
    pub sticky_on: Option<f32>,
    pub hang_on: Option<f32>,
    pub exit_after_store: Option<u64>,
    pub slow_ms: Option<u64>,
}

/// What an injected fault does to a forward.
#[derive(Debug)]
pub(crate) enum Injected {
    Error(tch::TchError),
    Hang,
}

/// libtorch's own wording, so message-based classification treats injected and real
/// errors alike.
const OOM_MESSAGE: &str = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.06 GiB is free. (injected by jetinfer --inject-faults)";
const STICKY_MESSAGE: &str =
    "CUDA error: an illegal memory access was encountered (injected by jetinfer --inject-faults)";

/// A `--inject-faults` spec that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    #[error("fault {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("fault {key}: not a whole number")]
    Count {
        key: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("fault {key}: not a number")]
    Value {
        key: String,
        #[source]
        source: std::num::ParseFloatError,
    },
    #[error("unknown fault {0:?} (oom_above, sticky_on, hang_on, exit_after_store, slow_ms)")]
    Unknown(String),
}

impl Faults {
    pub fn parse(spec: &str) -> Result<Faults, FaultsError> {
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| FaultsError::NotKeyValue(item.to_string()))?;
            let count = |v: &str| {
                v.parse::<u64>().map_err(|source| FaultsError::Count {
                    key: key.to_string(),
                    source,
                })
            };
            let float = |v: &str| {
                v.parse::<f32>().map_err(|source| FaultsError::Value {
                    key: key.to_string(),
                    source,
                })
            };
            match key {
                "oom_above" => f.oom_above = Some(count(value)? as usize),
                "sticky_on" => f.sticky_on = Some(float(value)?),
                "hang_on" => f.hang_on = Some(float(value)?),
                "exit_after_store" => f.exit_after_store = Some(count(value)?),
                "slow_ms" => f.slow_ms = Some(count(value)?),
                other => return Err(FaultsError::Unknown(other.to_string())),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }

    /// The fault this batch triggers, if any.
    pub(crate) fn check(&self, batch: &[Vec<Tensor<'_>>]) -> Option<Injected> {
        if let Some(ms) = self.slow_ms {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let holds =
            |v: Option<f32>| v.is_some_and(|v| batch.iter().any(|job| first_value(job) == Some(v)));
        if holds(self.hang_on) {
            return Some(Injected::Hang);
        }
        if holds(self.sticky_on) {
            return Some(Injected::Error(tch::TchError::Torch(STICKY_MESSAGE.into())));
        }
        if self.oom_above.is_some_and(|n| batch.len() > n) {
            return Some(Injected::Error(tch::TchError::Torch(OOM_MESSAGE.into())));
        }
        None
    }
}

fn first_value(job: &[Tensor<'_>]) -> Option<f32> {
    job.first().and_then(|t| t.to_f32_vec().first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_triggers() {
        let f = Faults::parse("oom_above=4, sticky_on=-777").unwrap();
        assert_eq!(f.oom_above, Some(4));
        let job = |v: f32| vec![Tensor::from_f32(vec![2], &[v, 0.0])];
        assert!(f.check(&vec![job(1.0); 4]).is_none());
        assert!(matches!(
            f.check(&vec![job(1.0); 5]),
            Some(Injected::Error(_))
        ));
        assert!(
            matches!(f.check(&[job(1.0), job(-777.0)]), Some(Injected::Error(e)) if e.to_string().contains("illegal memory"))
        );
        assert!(matches!(Faults::parse("nope=1"), Err(FaultsError::Unknown(k)) if k == "nope"));
        assert!(matches!(
            Faults::parse("oom_above=x"),
            Err(FaultsError::Count { .. })
        ));
        assert!(Faults::parse("").unwrap().is_empty());
        assert_eq!(Faults::parse("slow_ms=5").unwrap().slow_ms, Some(5));
    }
}
