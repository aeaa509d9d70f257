//! What a fault produced: its window and the checks particular to its scenario.

/// A check particular to one scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
}

/// A check named `what` that passed when `ok`.
pub(crate) fn check(what: impl Into<String>, ok: bool) -> Check {
    Check {
        what: what.into(),
        ok,
    }
}

/// When the fault began and ended (Unix ms), and the scenario's own checks.
pub(crate) struct Fault {
    pub start_ms: u64,
    pub end_ms: u64,
    pub checks: Vec<Check>,
}
