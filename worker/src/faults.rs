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
//!   replies to the dispatcher (a crash between "stored" and "acked").
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

impl Faults {
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("fault {item:?} is not key=value"))?;
            let bad = |e: String| format!("fault {key}: {e}");
            match key {
                "oom_above" => {
                    f.oom_above = Some(
                        value
                            .parse()
                            .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                    )
                }
                "sticky_on" => {
                    f.sticky_on = Some(
                        value
                            .parse()
                            .map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
                    )
                }
                "hang_on" => {
                    f.hang_on = Some(
                        value
                            .parse()
                            .map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
                    )
                }
                "exit_after_store" => {
                    f.exit_after_store = Some(
                        value
                            .parse()
                            .map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                    )
                }
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (oom_above, sticky_on, hang_on, exit_after_store)"
                    ))
                }
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }

    /// The fault this batch triggers, if any.
    pub(crate) fn check(&self, batch: &[Vec<Tensor<'_>>]) -> Option<Injected> {
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
        assert!(Faults::parse("nope=1").is_err());
        assert!(Faults::parse("").unwrap().is_empty());
    }
}
