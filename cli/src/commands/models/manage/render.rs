//! How `jetinfer models` shows the registry: declarations and revisions as JSON, and the
//! text tables of `list`, `history` and a seed's outcome.

use jetinfer_registry::seed::Outcome;
use jetinfer_registry::{Revision, Stored};
use serde_json::{json, Value};

/// A declaration as JSON, weights as decimals (`0.9`), with its revision.
pub(super) fn stored_json(s: &Stored) -> Value {
    let mut v = serde_json::to_value(&s.decl).expect("a declaration is plain data");
    v["weights"] = s
        .decl
        .weights
        .iter()
        .map(|(k, w)| (k.clone(), json!(f64::from(*w) / 100.0)))
        .collect();
    v["revision"] = json!(s.revision);
    v
}

pub(super) fn revision_json(r: &Revision) -> Value {
    match &r.decl {
        Some(d) => json!({
            "revision": r.revision,
            "by": d.audit.by,
            "at_ms": d.audit.at_ms,
            "change": d.audit.change,
            "versions": d.version_names(),
            "default_version": d.default_version,
            "weights": jetinfer_schemas::registry::format_weights(&d.weights),
        }),
        None => json!({ "revision": r.revision, "deleted": true }),
    }
}

pub(super) fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Created(v) => format!("declared with version(s) {}", v.join(", ")),
        Outcome::Added(v) => format!("added version(s) {}", v.join(", ")),
        Outcome::Unchanged => "unchanged".into(),
    }
}

pub(super) fn list_text(stored: &[Stored]) -> String {
    let mut out = format!("{} model(s) declared\n", stored.len());
    out.push_str(&format!(
        "{:<16} {:>5} {:<12} {:<8} {:<20} {}\n",
        "model", "rev", "versions", "default", "weights", "last change"
    ));
    for s in stored {
        let d = &s.decl;
        out.push_str(&format!(
            "{:<16} {:>5} {:<12} {:<8} {:<20} {} by {}\n",
            d.name,
            s.revision,
            version_list(d),
            d.default_version,
            jetinfer_schemas::registry::format_weights(&d.weights),
            d.audit.change,
            d.audit.by
        ));
    }
    out
}

/// The declared versions, in order, marking those the workers are asked to unload.
fn version_list(d: &jetinfer_registry::ModelDecl) -> String {
    d.versions
        .iter()
        .map(|v| {
            if v.loaded {
                v.version.clone()
            } else {
                format!("{}(unloaded)", v.version)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn history_text(history: &[Revision]) -> String {
    let mut out = String::new();
    for r in history {
        match &r.decl {
            Some(d) => out.push_str(&format!(
                "{:>5}  {}  {:<20} {}\n",
                r.revision, d.audit.at_ms, d.audit.by, d.audit.change
            )),
            None => out.push_str(&format!("{:>5}  deleted\n", r.revision)),
        }
    }
    out
}
